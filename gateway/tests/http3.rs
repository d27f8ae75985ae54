//! HTTP/3 through the real binary, with the h3 crate's client over quinn: an
//! AI route (the OpenAI API on the built-in mock provider) and a proxy route
//! whose request and response bodies stream through, on a listener that
//! shares its certificate (and port number) with an `https` listener, which
//! advertises it with `Alt-Svc`.

use std::net::{SocketAddr, TcpListener as StdTcp, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A port free for both TCP and UDP.
fn free_port() -> u16 {
    loop {
        let tcp = StdTcp::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Loom(Child);

impl Drop for Loom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 service: answers `<method> <path> <body length>`.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let (parts, body) = req.into_parts();
                        let n = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        let text = format!("{} {} {n}", parts.method, parts.uri.path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    addr
}

fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        // An end entity (webpki refuses a CA certificate as one).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

async fn ready(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("loom did not become ready");
}

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn client(port: u16, cert: &str) -> (quinn::Endpoint, Sender) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("pem") {
        roots.add(c.expect("cert")).expect("root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(SocketAddr::from(([127, 0, 0, 1], port)), "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3");
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (endpoint, send)
}

/// Sends one request; the status, headers and whole body of the answer.
async fn send(
    sender: &mut Sender,
    req: http::Request<()>,
    body: Option<Bytes>,
) -> (http::response::Parts, Bytes) {
    let mut stream = sender.send_request(req).await.expect("request sent");
    if let Some(b) = body {
        // In pieces, so the body streams.
        for chunk in b.chunks(16 * 1024) {
            stream
                .send_data(Bytes::copy_from_slice(chunk))
                .await
                .expect("body sent");
        }
    }
    if let Err(e) = stream.finish().await {
        // A server that has its answer may stop reading the request
        // (RFC 9114 §4.1.2), with H3_NO_ERROR; anything else is a failure.
        assert!(e.is_h3_no_error(), "finish: {e:?}");
    }
    let resp = stream.recv_response().await.expect("response");
    let mut out = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("body") {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (resp.into_parts().0, out.freeze())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_ai_and_proxy_routes() {
    let dir = std::env::temp_dir().join(format!("loom-h3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = certificate(&dir);
    let backend = backend().await;
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        r#"
listeners:
  - {{name: tls, address: "127.0.0.1:{port}", protocol: https, tls: {{cert_file: {cert}, key_file: {key}}}}}
  - {{name: quic, address: "127.0.0.1:{port}", protocol: http3, tls: {{cert_file: {cert}, key_file: {key}}}}}
admin: {{address: "127.0.0.1:{admin}"}}
upstreams:
  - {{name: svc, endpoints: ["http://{backend}"]}}
routes:
  - {{id: ai, path: /v1/*, ai_gateway: true}}
  - {{id: app, path: /app/*, upstream: svc}}
ai_gateway:
  enabled: true
  providers:
    - {{name: mock, type: mock, models: [gpt-4o]}}
"#
    );
    let path = dir.join("loom.yaml");
    std::fs::write(&path, config).expect("config");
    let _loom = Loom(
        Command::new(env!("CARGO_BIN_EXE_loom"))
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loom starts"),
    );
    ready(admin).await;
    let (_endpoint, mut h3) = client(port, &cert).await;

    // The OpenAI API over HTTP/3.
    let req = http::Request::get(format!("https://localhost:{port}/v1/models"))
        .body(())
        .expect("req");
    let (head, body) = send(&mut h3, req, None).await;
    assert_eq!(head.status, 200);
    let models: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(models["data"][0]["id"], "gpt-4o");

    let chat = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello over QUIC"}]});
    let req = http::Request::post(format!("https://localhost:{port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(())
        .expect("req");
    let (head, body) = send(&mut h3, req, Some(Bytes::from(chat.to_string()))).await;
    assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .contains("Hello over QUIC")
    );
    assert!(head.headers.contains_key("x-request-id"));

    // A streamed completion: server-sent events over HTTP/3.
    let streamed = serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Stream it"}]});
    let req = http::Request::post(format!("https://localhost:{port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(())
        .expect("req");
    let (head, body) = send(&mut h3, req, Some(Bytes::from(streamed.to_string()))).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&body);
    assert!(text.matches("data: {").count() >= 2, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A proxy route: a 1 MiB upload reaches the service whole, on the same
    // connection as the requests before it.
    let req = http::Request::post(format!("https://localhost:{port}/app/upload"))
        .body(())
        .expect("req");
    let (head, body) = send(&mut h3, req, Some(Bytes::from(vec![7u8; 1 << 20]))).await;
    assert_eq!(head.status, 200);
    assert_eq!(body, format!("POST /app/upload {}", 1 << 20));

    // Unknown paths get the gateway's answer, as on any listener.
    let req = http::Request::get(format!("https://localhost:{port}/nowhere"))
        .body(())
        .expect("req");
    let (head, _) = send(&mut h3, req, None).await;
    assert_eq!(head.status, 404);

    // The TCP listener on the same port tells clients about HTTP/3.
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-"])
        .arg(format!("https://localhost:{port}/v1/models"))
        .output()
        .expect("curl runs");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains(&format!("alt-svc: h3=\":{port}\"; ma=86400")),
        "{head}"
    );
    std::fs::remove_dir_all(dir).ok();
}
