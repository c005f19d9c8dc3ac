//! Hello-world eddy function: answers every request with a plain-text greeting.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
        let body = format!("{greeting} from eddy!\n");

        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).expect("valid status");
        let outgoing = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let mut stream = outgoing.write().expect("stream taken once");
        // The client may have gone away; there is nobody left to tell, so ignore errors.
        if stream.write_all(body.as_bytes()).is_ok() {
            let _ = stream.blocking_flush();
        }
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasi::http::proxy::export!(Hello);
