//! TLS on both listeners: the operator's certificate, reloaded when its files change; a
//! self-signed one for a first try; HTTP/2 through ALPN with its own limits; the CLI over
//! https:// with --ca-cert.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Node, guest, stderr_err, stdout_ok, wait_for};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and a certificate it signed for `127.0.0.1` and `localhost`: (CA PEM, leaf PEM,
/// leaf key PEM).
fn issue() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Through a temporary file and a rename, as a certificate manager replaces files.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn cli(node: &Node, ca: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut command = common::eddy_in(Path::new("."));
    command
        .args(args)
        .env(
            "EDDY_SERVER",
            format!("https://127.0.0.1:{}", node.admin.port()),
        )
        .env("EDDY_STATE_DIR", node.state_dir())
        .env_remove("EDDY_TOKEN")
        .env_remove("EDDY_CA_CERT");
    if let Some(ca) = ca {
        command.arg("--ca-cert").arg(ca);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn both_listeners_speak_tls_with_the_operators_certificate_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = issue();
    let ca1_file = write(dir.path(), "ca1.pem", &ca1);
    let cert = write(dir.path(), "cert.pem", &cert1);
    let key = write(dir.path(), "key.pem", &key1);
    let node = Node::start_with_config(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    assert!(
        node.ready["public_url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    // The CLI over https://, trusting the CA it is given, and refusing without it.
    let hello = guest("hello-rust");
    stdout_ok(&cli(
        &node,
        Some(&ca1_file),
        &["deploy", "hello", hello.to_str().unwrap()],
    ));
    let err = stderr_err(&cli(&node, None, &["ls"]));
    assert!(err.contains("--ca-cert"), "{err}");
    // The public listener: HTTP/2 by ALPN; the control API: HTTP/1.1.
    let public = format!("https://127.0.0.1:{}/hello", node.public.port());
    let response = client(&ca1).get(&public).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert!(response.text().await.unwrap().contains("from eddy"));
    let health = format!("https://127.0.0.1:{}/healthz", node.admin.port());
    let response = client(&ca1).get(&health).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    // Over TLS the console's session cookie is `Secure`: a browser never sends it in clear.
    let response = client(&ca1)
        .post(format!(
            "https://127.0.0.1:{}/v1/session",
            node.admin.port()
        ))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.ends_with("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP to a TLS listener gets no answer it could mistake for one.
    assert!(
        reqwest::get(format!("http://{}/hello", node.public))
            .await
            .is_err()
    );

    // A new certificate from another CA replaces the files: served without a restart.
    let (ca2, cert2, key2) = issue();
    write(dir.path(), "key.pem", &key2);
    write(dir.path(), "cert.pem", &cert2);
    wait_for(
        "the new certificate to be served",
        Duration::from_secs(10),
        async || client(&ca2).get(&public).send().await.map(|r| r.status()),
    )
    .await;
    assert!(client(&ca1).get(&public).send().await.is_err());
    assert!(client(&ca2).get(&health).send().await.is_ok());
    // Files that do not load are logged, and the certificate serving stays.
    write(dir.path(), "cert.pem", "not a certificate");
    wait_for(
        "the bad files to be noticed",
        Duration::from_secs(10),
        async || match node.output().contains("do not load") {
            true => Ok(()),
            false => Err("not yet"),
        },
    )
    .await;
    assert_eq!(
        client(&ca2).get(&public).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_made_once_and_its_fingerprint_logged() {
    let state = Arc::new(tempfile::tempdir().unwrap());
    let mut node = Node::start_in(state.clone(), "[tls]\nself_signed = true\n");
    let fingerprint = node.ready["tls_fingerprint"].as_str().unwrap().to_owned();
    let cert_file = PathBuf::from(node.ready["tls_self_signed"].as_str().unwrap());
    let pem = std::fs::read(&cert_file).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(der.as_ref())
    };
    let expected: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(fingerprint, format!("SHA256:{}", expected.join(":")));
    let listed = stdout_ok(&cli(&node, Some(&cert_file), &["ls"]));
    assert!(
        listed.contains("NAME") || listed.contains("no functions"),
        "{listed}"
    );
    assert!(node.terminate());
    let node = Node::start_in(state, "[tls]\nself_signed = true\n");
    assert_eq!(node.ready["tls_fingerprint"], fingerprint.as_str());
}

/// An HTTP/2 connection to the public listener over TLS: the request sender and the
/// connection's task.
async fn h2_connect(
    node: &Node,
    ca: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.public).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(connection))
}

/// Opens `count` streams and cancels each at once; the sender, unless the connection ended.
async fn reset_streams(
    mut send: h2::client::SendRequest<bytes::Bytes>,
    count: usize,
) -> h2::client::SendRequest<bytes::Bytes> {
    for _ in 0..count {
        send = match send.clone().ready().await {
            Ok(send) => send,
            Err(_) => break,
        };
        let Ok((_, mut stream)) = send.send_request(get("/_eddy/healthz"), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
    }
    send
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://127.0.0.1{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn http2_streams_headers_and_rapid_resets_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = issue();
    let cert = write(dir.path(), "cert.pem", &cert);
    let key = write(dir.path(), "key.pem", &key);
    let node = Node::start_with_config(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [limits]\nhttp2_streams_per_connection_max = 7\nhttp2_pending_reset_streams_max = 5\nheader_bytes_max = 4096\n\
         header_read_timeout_ms = 1000\n",
        cert.display(),
        key.display()
    ));
    // The stream limit is what the node advertises, and what the client may open.
    let (send, _connection) = h2_connect(&node, &ca).await;
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(get("/_eddy/healthz"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(send.current_max_send_streams(), 7);
    // A header list past header_bytes_max is refused, the connection kept.
    let big = http::Request::get("https://127.0.0.1/_eddy/healthz")
        .header("x-big", "x".repeat(8 * 1024))
        .body(())
        .unwrap();
    let mut send = send.ready().await.unwrap();
    let refused = match send.send_request(big, true) {
        Ok((response, _)) => match response.await {
            Ok(response) => response.status() == 431,
            Err(e) => e.is_reset() || e.is_go_away(),
        },
        Err(_) => true,
    };
    assert!(refused, "a header list over header_bytes_max was served");
    // A few resets are a client changing its mind: the connection serves on.
    let (send, connection) = h2_connect(&node, &ca).await;
    let send = reset_streams(send, 3).await;
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(get("/_eddy/healthz"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert!(!connection.is_finished());
    // Rapid reset: streams opened and cancelled at once, past the limit, close the
    // connection (with GOAWAY ENHANCE_YOUR_CALM, which the client may not get to read
    // before its writes fail).
    let (send, connection) = h2_connect(&node, &ca).await;
    let _send = reset_streams(send, 200).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the node kept a connection that reset 200 streams at once")
        .unwrap();
    let error = ended.expect_err("the connection ended cleanly");
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "{error:?}"
    );
    // The node serves on.
    let response = client(&ca)
        .get(format!(
            "https://127.0.0.1:{}/_eddy/healthz",
            node.public.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A request that runs longer than header_read_timeout_ms keeps its connection open:
    // the next request goes over the same connection.
    let ca_file = write(dir.path(), "ca.pem", &ca);
    let wasm = guest("misbehave");
    stdout_ok(&cli(
        &node,
        Some(&ca_file),
        &["deploy", "mis", wasm.to_str().unwrap()],
    ));
    let (send, busy) = h2_connect(&node, &ca).await;
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(get("/mis/sleep?ms=2500"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(get("/_eddy/healthz"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert!(!busy.is_finished());
    // An HTTP/2 connection that sends no request for header_read_timeout_ms is closed
    // (GOAWAY), as an idle HTTP/1.1 one is.
    let (idle_send, idle) = h2_connect(&node, &ca).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("an idle HTTP/2 connection stayed open")
        .unwrap();
    // Closed by the node: cleanly after its GOAWAY, or under a write of the client's.
    if let Err(e) = ended {
        assert!(e.is_go_away() || e.is_io(), "{e:?}");
    }
    drop(idle_send);
}
