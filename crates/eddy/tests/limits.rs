//! Every limit of the request path: exceeded, answered with its exact status and an
//! `eddy-error` header naming it, and harmless to the node and to other functions.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Node, assert_unharmed, guest_bytes, held_connection};
use serde_json::json;

async fn node_with_guests(config: &str, mis: serde_json::Value) -> Node {
    let node = Node::start_with_config(config);
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    node.deploy_ok("mis", "misbehave", mis).await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_cpu_loops_and_waits_with_504() {
    let node = node_with_guests("", json!({"timeout_ms": 300})).await;
    for path in ["/mis/loop", "/mis/sleep?ms=5000"] {
        let started = std::time::Instant::now();
        let reply = node.get(path).await;
        reply.assert_refused(504, "timeout_ms");
        assert!(reply.body.contains("timeout_ms"), "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path} was not stopped near its deadline"
        );
        assert_unharmed(&node).await;
    }
    let reply = node.get("/mis/sleep?ms=50").await;
    assert_eq!(
        reply.status, 200,
        "a wait within the limit must succeed: {reply:?}"
    );
    let entries = node.wait_logs("mis", 3).await;
    assert_eq!(entries[0]["outcome"], "timeout");
    assert_eq!(entries[0]["status"], 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_traps_the_guest_with_500() {
    let node = node_with_guests("", json!({"memory_bytes_max": 16 * 1024 * 1024})).await;
    let reply = node.get("/mis/alloc").await;
    reply.assert_refused(500, "memory_bytes_max");
    assert!(reply.body.contains("memory_bytes_max"), "{reply:?}");
    assert_unharmed(&node).await;
    let entries = node.wait_logs("mis", 1).await;
    assert_eq!(entries[0]["outcome"], "memory_limit");

    let (status, body) = node
        .deploy(
            "greedy",
            guest_bytes("hello-rust"),
            json!({"memory_bytes_max": 1u64 << 40}),
        )
        .await;
    common::assert_api_error(status, &body, 422, "memory_bytes_max");
    let (status, body) = node
        .deploy(
            "slow",
            guest_bytes("hello-rust"),
            json!({"timeout_ms": 3_600_000}),
        )
        .await;
    common::assert_api_error(status, &body, 422, "timeout_ms_max");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_panics_are_500_and_recorded() {
    let node = node_with_guests("", json!({})).await;
    for path in ["/mis/trap", "/mis/panic"] {
        let reply = node.get(path).await;
        reply.assert_refused(500, "trap");
        assert_unharmed(&node).await;
    }
    let entries = node.wait_logs("mis", 2).await;
    assert_eq!(entries[0]["outcome"], "trap");
    assert!(
        entries[1]["log"]
            .as_str()
            .unwrap()
            .contains("guest panicked on purpose"),
        "{:?}",
        entries[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413_declared_or_streamed() {
    let node = node_with_guests("[limits]\nrequest_body_bytes_max = 1000\n", json!({})).await;
    let echo = || node.http.post(node.url("/mis/echo"));
    let reply = node.send(echo().body(vec![b'a'; 1001])).await;
    reply.assert_refused(413, "request_body_bytes_max");

    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'b'; 100]))),
    );
    let reply = node
        .send(echo().body(reqwest::Body::wrap_stream(chunks)))
        .await;
    reply.assert_refused(413, "request_body_bytes_max");

    let reply = node.send(echo().body(vec![b'c'; 1000])).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("body-bytes: 1000"), "{reply:?}");
    assert_unharmed(&node).await;
    let entries = node.wait_logs("mis", 3).await;
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| e["outcome"] == "request_body_too_large")
        .collect();
    assert_eq!(refused.len(), 2, "{entries:?}");
    assert!(
        refused.iter().all(|e| e["status"] == 413),
        "records keep the status the caller got: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_over_the_limit_are_refused_or_cut_off() {
    let node = node_with_guests("[limits]\nresponse_body_bytes_max = 100000\n", json!({})).await;
    let reply = node.get("/mis/big-declared?bytes=200000").await;
    reply.assert_refused(502, "response_body_bytes_max");

    // Streamed without a length: the head is already sent, so the body is cut off.
    let response = node
        .http
        .get(node.url("/mis/big?bytes=400000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await;
    assert!(
        body.map(|b| b.len() <= 100_000).unwrap_or(true),
        "the body must not run past the limit"
    );

    let fits = node.get("/mis/big?bytes=90000").await;
    assert_eq!((fits.status, fits.body.len()), (200, 90000));
    assert_unharmed(&node).await;
    let entries = node.wait_logs("mis", 3).await;
    // Records land when each guest finishes, so their order is not the request order.
    let mut outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort();
    let declared = entries
        .iter()
        .find(|e| e["path"] == "/mis/big-declared?bytes=200000")
        .unwrap();
    assert_eq!(
        declared["status"], 502,
        "the record keeps the status the caller got"
    );
    assert_eq!(
        outcomes,
        ["ok", "response_body_too_large", "response_body_too_large"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let node = node_with_guests("[limits]\nheader_bytes_max = 2048\n", json!({})).await;
    let reply = node
        .send(
            node.http
                .get(node.url("/hello"))
                .header("x-big", "h".repeat(4000)),
        )
        .await;
    reply.assert_refused(431, "header_bytes_max");
    let response = node
        .http
        .get(node.url("/hello"))
        .header("x-small", "h".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_unharmed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_and_the_held_ones_still_work() {
    let node = node_with_guests("[limits]\nconnections_max = 2\n", json!({})).await;
    // Each held connection has been answered once, so the node has taken both in and the
    // third is the one over the limit.
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let stream = held_connection(node.public, "/_eddy/healthz").await;
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        held.push(stream);
    }
    let mut extra = TcpStream::connect(node.public).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    extra
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("eddy-error: connections_max"), "{answer}");

    let first = &mut held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    first
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("Hello from eddy!\n"),
        "{answer}"
    );
    drop(held);
    node.wait_public_connection_slot("connections_max").await;
    assert_unharmed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_over_the_limit_get_503() {
    let node = node_with_guests("[limits]\ninstances_max = 2\n", json!({})).await;
    let slow: Vec<_> = (0..2)
        .map(|_| node.http.get(node.url("/mis/sleep?ms=1500")).send())
        .collect();
    let slow = tokio::spawn(futures::future::join_all(slow));
    node.stats_when("mis", "both slow requests holding an instance", |s| {
        s["in_flight"] == 2 && s["instances_live"] == 2
    })
    .await;
    let reply = node.get("/hello").await;
    reply.assert_refused(503, "instances_max");
    for response in slow.await.unwrap() {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_unharmed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_captured_bounded_and_kept_within_retention() {
    let node = node_with_guests(
        "[limits]\nlog_bytes_per_invocation_max = 16\ninvocations_kept_per_function = 3\n",
        json!({}),
    )
    .await;
    let reply = node.get("/mis/log").await;
    assert_eq!(reply.status, 200);
    let entries = node.wait_logs("mis", 1).await;
    let log = entries[0]["log"].as_str().unwrap();
    assert!(log.starts_with("hello stdout\nhel"), "{log}");
    assert!(
        log.contains("more bytes of output dropped: log_bytes_per_invocation_max is 16"),
        "{log}"
    );

    for _ in 0..5 {
        assert_eq!(node.get("/mis/env").await.status, 200);
    }
    // Records are written in batches and trimmed in the same transaction, so poll the
    // newest records until the five new ones have landed.
    let kept = common::wait_for("the five new records", common::PROMPTLY, async || {
        let (_, body) = node.api_get("/functions/mis/logs?tail=100").await;
        let kept = body["entries"].as_array().unwrap().clone();
        if kept.iter().all(|e| e["path"] == "/mis/env") {
            Ok(kept)
        } else {
            Err(serde_json::Value::from(kept))
        }
    })
    .await;
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.iter().all(|e| e["path"] == "/mis/env"),
        "the oldest records go first: {kept:?}"
    );

    let out = common::stdout_ok(&node.cli(&["logs", "mis", "--tail", "2"]));
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("GET /mis/env 200 ok"))
            .count(),
        2,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_http_is_refused_with_a_clear_error() {
    let node = node_with_guests("", json!({})).await;
    let reply = node.get("/mis/outgoing").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "outgoing refused: ErrorCode::HttpRequestDenied");
    let entries = node.wait_logs("mis", 1).await;
    assert!(
        entries[0]["log"]
            .as_str()
            .unwrap()
            .contains("outgoing request to http://example.com/ denied: not in this function's outbound allowlist; deploy with --allow-outbound http://example.com"),
        "{:?}",
        entries[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_fails_mid_body_does_not_look_successful() {
    let node = node_with_guests("", json!({})).await;
    // Depending on how much was flushed before the trap, the client sees the connection
    // end before the head or after part of the body; never a clean, complete response.
    match node.http.get(node.url("/mis/half?bytes=1000")).send().await {
        Err(error) => assert!(error.is_request(), "{error:?}"),
        Ok(response) => {
            assert_eq!(response.status(), 200);
            let body = response.bytes().await;
            assert!(
                body.is_err(),
                "a body cut short by a trap must end in an error: {body:?}"
            );
        }
    }
    let entries = node.wait_logs("mis", 1).await;
    assert_eq!(
        (&entries[0]["outcome"], &entries[0]["status"]),
        (&json!("trap"), &json!(200))
    );
    assert_unharmed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_say_why_and_guests_cannot_forge_the_nodes_error_header() {
    let node = node_with_guests("", json!({})).await;
    let reply = node.get("/mis/trap").await;
    reply.assert_refused(500, "trap");
    assert!(
        reply.body.contains("unreachable"),
        "the caller should learn the trap's reason: {reply:?}"
    );
    let reply = node.get("/mis/fake-error").await;
    assert_eq!(
        (
            reply.status,
            reply.header("eddy-error"),
            reply.body.as_str()
        ),
        (200, None, "fine")
    );
}
