//! WebSockets held by the node: the function answers connect, each message and the close as
//! HTTP requests; replies, sends, channels and broadcasts go back over the held socket; and
//! every bound (message size, slow readers, idle time, connection counts) closes or refuses
//! with its code.

mod common;

use std::time::Duration;

use common::{Node, WsClient as Client, ws_next as next};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn connect(node: &Node, query: &str) -> Client {
    let url = format!("ws://{}/chat/ws{query}", node.public);
    let (client, response) = connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(response.headers().contains_key("eddy-connection-id"));
    client
}

fn close_code(message: &Message) -> u16 {
    match message {
        Message::Close(Some(frame)) => u16::from(frame.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The value of the `/metrics` series `name` (up to its labels) of the function `chat`.
fn chat_metric(metrics: &str, name: &str) -> Option<f64> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains("function=\"chat\""))?;
    Some(line.rsplit(' ').next().unwrap().parse().unwrap())
}

async fn chat(config: &str) -> Node {
    let node = Node::start_with_config(config);
    node.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_echoed_and_a_refused_connect_gets_the_functions_status() {
    let node = chat("").await;
    let mut client = connect(&node, "").await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("hello"));
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut client).await, Message::binary(vec![1u8, 2, 3]));
    // The events were ordinary invocations of the function: connect and two messages.
    let logs = node.wait_logs("chat", 3).await;
    assert!(logs.iter().any(|l| l["method"] == "GET"), "{logs:?}");
    client.close(None).await.unwrap();

    let refused = connect_async(format!("ws://{}/chat/ws?refuse=403", node.public)).await;
    match refused {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_each_of_100_connections_exactly_once() {
    let node = chat("").await;
    let mut members = Vec::new();
    for _ in 0..100 {
        members.push(connect(&node, "?channels=room").await);
    }
    let mut sender = connect(&node, "").await;
    sender
        .send(Message::text("broadcast:room:hi all"))
        .await
        .unwrap();
    let reply = next(&mut sender).await.into_text().unwrap().to_string();
    assert!(reply.contains(r#"sent\":100"#), "{reply}");
    for member in &mut members {
        assert_eq!(next(member).await, Message::text("hi all"));
    }
    // Exactly once: nothing more arrives.
    for member in &mut members {
        let more = tokio::time::timeout(Duration::from_millis(20), member.next()).await;
        assert!(more.is_err(), "a second message: {more:?}");
    }
    // Joining later works too; connections are listed with their channels.
    sender.send(Message::text("join:room")).await.unwrap();
    next(&mut sender).await;
    let (status, listed) = node.api_get("/functions/chat/websockets").await;
    assert_eq!(status, 200, "{listed}");
    let connections = listed["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 101);
    assert!(
        connections.iter().all(|c| c["channels"] == json!(["room"])),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_heard_101_is_already_in_its_channels() {
    let node = chat("").await;
    let mut sender = connect(&node, "").await;
    // A broadcast sent the moment the handshake completes must reach the new connection: it
    // joins its channels before the 101 goes out (it once joined after, and missed such
    // broadcasts).
    for round in 0..20 {
        let channel = format!("fresh-{round}");
        let mut client = connect(&node, &format!("?channels={channel}")).await;
        sender
            .send(Message::text(format!("broadcast:{channel}:round {round}")))
            .await
            .unwrap();
        let reply = next(&mut sender).await.into_text().unwrap().to_string();
        assert!(reply.contains(r#"sent\":1"#), "round {round}: {reply}");
        assert_eq!(
            next(&mut client).await,
            Message::text(format!("round {round}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_closes_and_oversized_messages_close_with_1009() {
    let node = chat("[limits]\nwebsocket_message_bytes_max = 1024\n").await;
    let mut client = connect(&node, "").await;
    client.send(Message::text("close")).await.unwrap();
    let closed = next(&mut client).await;
    assert_eq!(close_code(&closed), 4000);
    assert!(matches!(&closed, Message::Close(Some(f)) if f.reason == "bye"));

    let mut client = connect(&node, "").await;
    client.send(Message::text("x".repeat(2000))).await.unwrap();
    let closed = next(&mut client).await;
    assert_eq!(close_code(&closed), 1009, "{closed:?}");
    // The node is fine and the function still answers.
    let mut client = connect(&node, "").await;
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_without_the_node_growing() {
    let node = chat("").await;
    let mut reader = connect(&node, "").await;
    let before = node.rss_bytes();
    // 400 messages of 64 KiB (25 MiB) to a client that reads nothing meanwhile.
    reader.send(Message::text("flood:400")).await.unwrap();
    // The node cuts the reader off; the function's close event says how.
    let logs = node.wait_logs("chat", 3).await;
    let after = node.rss_bytes();
    let close = logs
        .iter()
        .find(|l| l["log"].as_str().unwrap_or("").starts_with("closed "))
        .unwrap_or_else(|| panic!("no close event: {logs:?}"));
    assert_eq!(close["log"], "closed 1013\n", "{logs:?}");
    assert!(
        after < before + 16 * 1024 * 1024,
        "the node grew from {before} to {after} bytes for one slow reader"
    );
    // What reached the socket before the cut, then the close frame or the end.
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(Ok(Message::Binary(_)))) => received += 1,
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1013);
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the cut-off connection stayed open"),
        }
    }
    assert!(received < 400, "every message was buffered: {received}");
    let (_, listed) = node.api_get("/functions/chat/websockets").await;
    assert_eq!(listed["connections"], json!([]), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_idle_timeouts_and_metering() {
    let node = chat(
        "[limits]\nwebsocket_connections_per_function_max = 2\nwebsocket_idle_timeout_ms = 700\nwebsocket_ping_interval_ms = 60000\n",
    )
    .await;
    let mut a = connect(&node, "").await;
    let _b = connect(&node, "").await;
    match connect_async(format!("ws://{}/chat/ws", node.public)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(
                response.headers()["eddy-error"],
                "websocket_connections_per_function_max"
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Silent connections are closed with 1001 after the idle timeout.
    let closed = next(&mut a).await;
    assert_eq!(close_code(&closed), 1001, "{closed:?}");
    // The other one too; the node counts a connection's seconds as it forgets it.
    common::wait_for("both connections closed", common::PROMPTLY, async || {
        let metrics = node.metrics().await;
        match chat_metric(&metrics, "eddy_websocket_connections{") {
            Some(0.0) => Ok(()),
            _ => Err(metrics),
        }
    })
    .await;
    // Read again: the open-connection gauge drops just before the seconds are added.
    let metrics = node.metrics().await;
    let value = |name: &str| -> f64 {
        chat_metric(&metrics, name).unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
    };
    assert_eq!(value("eddy_websocket_connections{"), 0.0);
    assert!(
        value("eddy_websocket_connection_seconds_total{") >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_connections_and_broadcasts() {
    let node = chat("").await;
    let mut member = connect(&node, "?channels=lobby").await;
    let sent = common::stdout_ok(&node.cli(&["ws", "send", "chat", "lobby", "from the cli"]));
    assert!(sent.contains("sent to 1 connection"), "{sent}");
    assert_eq!(next(&mut member).await, Message::text("from the cli"));
    let listed = common::stdout_ok(&node.cli(&["ws", "ls", "chat"]));
    assert!(listed.contains("lobby"), "{listed}");
    let err = common::stderr_err(&node.cli(&["ws", "send", "chat", "no/such", "x"]));
    assert!(err.contains("channel name"), "{err}");
    let err = common::stderr_err(&node.cli(&["ws", "send", "nobody", "lobby", "x"]));
    assert!(err.contains("no function `nobody`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_quiet_client_open_and_the_node_caps_connections() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = chat(
        "[limits]\nwebsocket_connections_max = 2\nwebsocket_idle_timeout_ms = 800\nwebsocket_ping_interval_ms = 200\n",
    )
    .await;
    // The function picks the subprotocol the client offered.
    let mut request = format!("ws://{}/chat/ws?protocol=chat.v1", node.public)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (mut quiet, response) = connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    // Silent for more than twice the idle timeout, but answering the node's pings (the
    // client pongs while it reads): still open, and only pings arrived.
    let deadline = std::time::Instant::now() + Duration::from_millis(2000);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(100), quiet.next()).await
        {
            assert!(matches!(message, Ok(Message::Ping(_))), "{message:?}");
        }
    }
    quiet.send(Message::text("still open")).await.unwrap();
    assert_eq!(next(&mut quiet).await, Message::text("still open"));
    // Node-wide cap: a second function's connection counts too.
    node.deploy_ok("other", "misbehave", json!({"websocket": true}))
        .await;
    let (_second, _) = connect_async(format!("ws://{}/other/ws", node.public))
        .await
        .unwrap();
    match connect_async(format!("ws://{}/chat/ws", node.public)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(
                response.headers()["eddy-error"],
                "websocket_connections_max"
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_held_connections_with_1001() {
    let mut node = chat("").await;
    let mut client = connect(&node, "?channels=room").await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("hello"));
    // The node closes what it holds instead of waiting for clients that will not leave; the
    // close event's record is written before it exits (nothing waits out the grace period).
    assert!(node.terminate(), "{}", node.output());
    assert_eq!(close_code(&next(&mut client).await), 1001);
    assert!(
        !node.output().contains("not written before shutdown"),
        "{}",
        node.output()
    );
}

/// The id a connection's 101 answer named.
async fn connect_with_id(node: &Node, route: &str, query: &str) -> (Client, String) {
    let url = format!("ws://{}{route}/ws{query}", node.public);
    let (client, response) = connect_async(&url).await.unwrap();
    let id = response.headers()["eddy-connection-id"]
        .to_str()
        .unwrap()
        .to_string();
    (client, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_has_its_own_channels_and_reaches_only_its_own_connections() {
    let node = chat("").await;
    node.deploy_ok(
        "other",
        "misbehave",
        json!({"websocket": true, "route": "/other"}),
    )
    .await;
    let (mut mine, my_id) = connect_with_id(&node, "/chat", "?channels=room").await;
    let (mut theirs, _) = connect_with_id(&node, "/other", "?channels=room").await;
    // `other` broadcasts into "room": its own room, not chat's.
    let (mut sender, _) = connect_with_id(&node, "/other", "").await;
    sender
        .send(Message::text("broadcast:room:from other"))
        .await
        .unwrap();
    let reply = next(&mut sender).await.into_text().unwrap().to_string();
    assert!(reply.contains(r#"sent\":1"#), "{reply}");
    assert_eq!(next(&mut theirs).await, Message::text("from other"));
    let more = tokio::time::timeout(Duration::from_millis(200), mine.next()).await;
    assert!(
        more.is_err(),
        "chat's member heard other's broadcast: {more:?}"
    );
    // Another function's connection id answers as an unknown one does: 404.
    sender
        .send(Message::text(format!("send:{my_id}:psst")))
        .await
        .unwrap();
    let reply = next(&mut sender).await.into_text().unwrap().to_string();
    let unknown = "send:ffffffffffffffff:psst";
    sender.send(Message::text(unknown)).await.unwrap();
    let unknown_reply = next(&mut sender).await.into_text().unwrap().to_string();
    assert!(reply.contains("Ok((404"), "{reply}");
    assert_eq!(
        reply.replace(&my_id, "ID"),
        unknown_reply.replace("ffffffffffffffff", "ID"),
        "a foreign id must look unknown"
    );
    // Channel names are checked on join; close reasons must fit a close frame.
    sender.send(Message::text("join:no~way!")).await.unwrap();
    let reply = next(&mut sender).await.into_text().unwrap().to_string();
    assert!(
        reply.contains("Ok((400") && reply.contains("channel name"),
        "{reply}"
    );
    sender
        .send(Message::text(format!("close:{}", "r".repeat(124))))
        .await
        .unwrap();
    let reply = next(&mut sender).await.into_text().unwrap().to_string();
    assert!(
        reply.contains("Ok((400") && reply.contains("at most 123 bytes"),
        "{reply}"
    );
    // The control API's broadcast names the function.
    let response = node
        .http
        .post(node.api_url("/functions/chat/websockets/channels/room/messages"))
        .bearer_auth(&node.token)
        .body("from the operator")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(next(&mut mine).await, Message::text("from the operator"));
    let more = tokio::time::timeout(Duration::from_millis(200), theirs.next()).await;
    assert!(
        more.is_err(),
        "other's member heard chat's broadcast: {more:?}"
    );
    // A client's close without a code is answered without one: 1005 ("no code") is never
    // sent on the wire (the client would see it as a protocol violation, 1002).
    mine.send(Message::Close(None)).await.unwrap();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), mine.next()).await {
        match frame {
            Ok(Message::Close(frame)) => assert!(frame.is_none(), "{frame:?}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_refusals_are_bounded_and_the_guest_cannot_speak_for_the_node() {
    let node = chat("[limits]\nwebsocket_message_bytes_max = 1024\n").await;
    // A reply within the limit comes back; one over it is not sent and closes with 1009.
    let mut client = connect(&node, "").await;
    client.send(Message::text("big:1000")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("b".repeat(1000)));
    client.send(Message::text("big:5000")).await.unwrap();
    let closed = next(&mut client).await;
    assert_eq!(close_code(&closed), 1009, "{closed:?}");
    assert!(
        matches!(&closed, Message::Close(Some(f)) if f.reason.contains("websocket_message_bytes_max")),
        "{closed:?}"
    );
    // A refusal passes through without the guest's own `eddy-error`; an oversized one is
    // the node's 502.
    for (query, status, error) in [
        ("?refuse=403&forge=1", 403, None),
        (
            "?refuse=403&bytes=5000",
            502,
            Some("websocket_message_bytes_max"),
        ),
    ] {
        match connect_async(format!("ws://{}/chat/ws{query}", node.public)).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{query}");
                let header = response
                    .headers()
                    .get("eddy-error")
                    .map(|v| v.to_str().unwrap());
                assert_eq!(header, error, "{query}");
            }
            other => panic!("{query}: expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_sends_what_was_queued_before_it() {
    let node = chat("").await;
    let mut client = connect(&node, "").await;
    client.send(Message::text("bye:last words")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("last words"));
    assert_eq!(close_code(&next(&mut client).await), 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_function_leaves_nothing_to_its_successor() {
    let node = chat("").await;
    let api = |method: reqwest::Method, path: &str| {
        node.http
            .request(method, node.api_url(path))
            .bearer_auth(&node.token)
    };
    let response = api(reqwest::Method::POST, "/queues")
        .json(&json!({"name": "jobs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = api(reqwest::Method::PUT, "/queues/jobs/consumer")
        .json(&json!({"function": "chat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let mut client = connect(&node, "").await;
    let response = api(reqwest::Method::DELETE, "/functions/chat")
        .send()
        .await
        .unwrap();
    let removed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(removed["websocket_connections_closed"], 1, "{removed}");
    assert_eq!(removed["queues_unbound"], json!(["jobs"]), "{removed}");
    assert_eq!(close_code(&next(&mut client).await), 1001);
    // A new function of the name has no consumer binding.
    node.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    let (status, queue) = node.api_get("/queues/jobs").await;
    assert_eq!(status, 200, "{queue}");
    assert!(queue["consumer"].is_null(), "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddy_local_decodes_what_it_is_sent() {
    let node = chat("").await;
    let mut client = connect(&node, "").await;
    client
        .send(Message::text("close:good%20bye%21"))
        .await
        .unwrap();
    let closed = next(&mut client).await;
    assert!(
        matches!(&closed, Message::Close(Some(f)) if f.reason == "good bye!"),
        "{closed:?}"
    );
}
