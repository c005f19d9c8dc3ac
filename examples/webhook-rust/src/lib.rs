//! A queue consumer: every message of the queue `webhooks-rust` is POSTed to `WEBHOOK_URL`.
//!
//! eddy delivers each message as a CloudEvent in binary mode: the message is the body, its
//! id and attempt number are `ce-*` headers. Answering 2xx acknowledges the message; any
//! other answer makes eddy retry it later with backoff, and dead-letter it after the
//! consumer's `max_attempts`. So the function's only job is to say whether the webhook took
//! it: the retrying, the backoff and the bookkeeping are eddy's.

use serde_json::json;
use wstd::http::{Body, Client, HeaderMap, Method, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(mut request: Request<Body>) -> wstd::http::Result<Response<Body>> {
    let headers = request.headers();
    // Only the node sets eddy-* request headers (it removes them from public requests), so
    // eddy-queue marks a real delivery: nobody else can make this function post.
    let delivery = header(headers, "eddy-queue").is_some() && request.method() == Method::POST;
    let (Some(id), true) = (header(headers, "ce-id"), delivery) else {
        return Ok(reply(StatusCode::BAD_REQUEST, "not a queue delivery"));
    };
    let (id, attempt) = (
        id.to_owned(),
        header(headers, "ce-eddyattempt").unwrap_or("1").to_owned(),
    );
    let content_type = header(headers, "content-type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    let url = match std::env::var("WEBHOOK_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            return Ok(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "WEBHOOK_URL is not set",
            ));
        }
    };
    let message = request.body_mut().bytes_contents().await?;

    // The receiver deduplicates on webhook-id: a retry carries the same id.
    let post = Request::post(url)
        .header("content-type", content_type)
        .header("webhook-id", &id)
        .header("webhook-attempt", &attempt)
        .header("user-agent", "eddy-example-webhook")
        .body(Body::from(message))?;
    Ok(match Client::new().send(post).await {
        Ok(answer) if answer.status().is_success() => {
            println!(
                "delivered {id} (attempt {attempt}): {}",
                answer.status().as_u16()
            );
            let mut acknowledged = Response::new(Body::empty());
            *acknowledged.status_mut() = StatusCode::NO_CONTENT;
            acknowledged
        }
        Ok(answer) => {
            let status = answer.status().as_u16();
            println!("webhook answered {status} for {id} (attempt {attempt}); eddy will retry");
            reply(
                StatusCode::BAD_GATEWAY,
                &format!("webhook answered {status}"),
            )
        }
        Err(err) => {
            println!(
                "cannot reach the webhook for {id} (attempt {attempt}): {err:#}; eddy will retry"
            );
            reply(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach the webhook: {err:#}"),
            )
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn reply(status: StatusCode, error: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
