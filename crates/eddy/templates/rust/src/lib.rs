//! The eddy function {{name}}: answers every request with a greeting.
//!
//! It is a `wasi:http/proxy` component: eddy calls `handle` once per request, with a fresh
//! instance each time unless the function is deployed with `reuse = true`.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Function;

impl Guest for Function {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        // Set with `env` in eddy.toml (or `eddy deploy --env GREETING=Hi`).
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
        let path = request.path_with_query().unwrap_or_default();
        let body = format!("{greeting} from {{name}}! You asked for {path}\n");

        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).expect("a valid status");
        let outgoing = response.body().expect("the body, taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let mut stream = outgoing.write().expect("the stream, taken once");
        // The client may have gone away; there is nobody left to tell, so errors are ignored.
        if stream.write_all(body.as_bytes()).is_ok() {
            let _ = stream.blocking_flush();
        }
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasi::http::proxy::export!(Function);
