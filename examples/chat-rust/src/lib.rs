//! A WebSocket chat room: connect to `/chat-rust/ROOM` and every text message is sent to
//! everyone in the room.
//!
//! eddy holds the connections; the function runs only when something happens on one, as an
//! ordinary HTTP request: `eddy-websocket: connect` (answer 2xx to accept), `message` (the
//! message is the body) and `close`. A room is a node channel, `chat.ROOM`: the connect
//! answer joins the connection to it, and a POST to
//! `http://eddy.local/websockets/channels/chat.ROOM/messages` sends to everyone in it. Nothing
//! is kept in the function between events, so an idle room costs no instance at all.

use serde_json::{Value, json};
use wstd::http::{Body, Client, Request, Response, StatusCode};

/// A longer message is answered with an error instead of being relayed.
const MESSAGE_BYTES_MAX: usize = 1000;

#[wstd::http_server]
async fn main(mut request: Request<Body>) -> wstd::http::Result<Response<Body>> {
    let header = |name: &str| {
        let value = request.headers().get(name)?;
        value.to_str().ok().map(str::to_owned)
    };
    let (event, id) = (
        header("eddy-websocket"),
        header("eddy-connection-id").unwrap_or_default(),
    );
    let segments: Vec<&str> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let route = segments.first().copied().unwrap_or("chat-rust").to_owned();
    let room = match segments[..] {
        [_] | [] => Some("lobby".to_owned()),
        [_, room] if valid_room(room) => Some(room.to_owned()),
        _ => None,
    };

    match (event.as_deref(), room) {
        (None, _) => Ok(text(format!("connect a WebSocket to /{route}/ROOM\n"))),
        (Some("connect"), None) => Ok(json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "room names are 1-64 characters of A-Z a-z 0-9 _ -"}),
        )),
        (Some("connect"), Some(room)) => {
            // The connection joins the channel only once this answer is back, so the notice
            // reaches the others, not the newcomer.
            if let Err(err) =
                broadcast(&room, json!({"type": "join", "id": id, "room": room})).await
            {
                return Ok(broadcast_failed(err));
            }
            let mut accept = Response::new(Body::empty());
            accept
                .headers_mut()
                .insert("eddy-websocket-channels", format!("chat.{room}").parse()?);
            Ok(accept)
        }
        (Some("message"), Some(room)) => {
            let message = request.body_mut().bytes_contents().await?;
            if message.len() > MESSAGE_BYTES_MAX {
                // A 2xx body goes back to this connection only.
                return Ok(json_reply(
                    StatusCode::OK,
                    json!({"type": "error", "error": format!("messages are at most {MESSAGE_BYTES_MAX} bytes")}),
                ));
            }
            let text = String::from_utf8_lossy(&message);
            match broadcast(&room, json!({"type": "message", "from": id, "text": text})).await {
                Ok(()) => Ok(no_content()),
                Err(err) => Ok(broadcast_failed(err)),
            }
        }
        (Some("close"), Some(room)) => {
            match broadcast(&room, json!({"type": "leave", "id": id})).await {
                Ok(()) => Ok(no_content()),
                Err(err) => Ok(broadcast_failed(err)),
            }
        }
        (Some(other), _) => Ok(json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("unknown eddy-websocket event {other}")}),
        )),
    }
}

/// Sends `event` as a text message to every connection in the room.
async fn broadcast(room: &str, event: Value) -> wstd::http::Result<()> {
    let post = Request::post(format!(
        "http://eddy.local/websockets/channels/chat.{room}/messages"
    ))
    .header("content-type", "application/json")
    .header("eddy-websocket-kind", "text")
    .body(Body::from(event.to_string()))?;
    let answer = Client::new().send(post).await?;
    if !answer.status().is_success() {
        let status = answer.status().as_u16();
        return Err(wstd::http::Error::msg(format!(
            "the node answered {status}"
        )));
    }
    Ok(())
}

fn valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn broadcast_failed(err: wstd::http::Error) -> Response<Body> {
    json_reply(
        StatusCode::BAD_GATEWAY,
        json!({"error": format!("broadcast failed: {err:#}")}),
    )
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn text(body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    response
}

fn json_reply(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
