//! TLS (SPEC §2): termination on a listener (ALPN h2 and http/1.1, mTLS),
//! TLS to an upstream (SNI, a private CA), the framing guard inside TLS,
//! https webhooks, and certificates renewed on disk. Every certificate is
//! made here, per test, with rcgen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{eventually, metric_value, proxy, sim, Proxy};

/// A private CA that signs server and client certificates.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "breakwater test CA");
        let ca = params.self_signed(&key).unwrap();
        Pki {
            issuer: rcgen::Issuer::new(params, key),
            ca_pem: ca.pem(),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    crate::support::write_atomically(&path, text);
    path
}

/// Files of one test: the CA bundle, and the listener's cert and key.
struct Files {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn server_files(pki: &Pki) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(&["localhost", "127.0.0.1"]);
    Files {
        ca: write(dir.path(), "ca.pem", &pki.ca_pem),
        cert: write(dir.path(), "cert.pem", &leaf.cert),
        key: write(dir.path(), "key.pem", &leaf.key),
        dir,
    }
}

/// A TLS client trusting `ca`, offering `alpn`, with an optional client
/// certificate.
fn connector(ca: &Path, identity: Option<(&Path, &Path)>, alpn: &[&[u8]]) -> TlsConnector {
    let config = breakwater::tls::client_config(
        breakwater::tls::ClientFiles {
            ca: Some(ca),
            identity,
        },
        alpn,
    )
    .unwrap();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    proxy: &Proxy,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(proxy.listen).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

fn terminating(upstream: &str, files: &Files, client_ca: bool) -> String {
    let client_ca = if client_ca {
        format!(", client_ca: \"{}\"", files.ca.display())
    } else {
        String::new()
    };
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: secure
    listen: \"{{listen}}\"
    tls: {{cert: \"{}\", key: \"{}\"{client_ca}}}
    routes: [{{name: main, upstream: app}}]
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"]}}
",
        files.cert.display(),
        files.key.display()
    )
}

/// One HTTP/2 GET over an established TLS stream.
async fn h2_get(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    path: &str,
) -> hyper::Response<Incoming> {
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn a_tls_listener_serves_h2_chosen_by_alpn_and_http1_too() {
    let pki = Pki::new();
    let files = server_files(&pki);
    let upstream = sim("behind-tls").run().await;
    let proxy = proxy(&terminating(&upstream.address, &files, false))
        .run()
        .await;

    let stream = tls_connect(&proxy, &connector(&files.ca, None, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let response = h2_get(stream, "/over-h2").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["x-sim-name"], "behind-tls");
    let stats = upstream.stats().await;
    assert_eq!(stats["last_request"]["path"], "/over-h2", "{stats}");
    assert_eq!(
        stats["last_request"]["headers"]["x-forwarded-proto"], "https",
        "{stats}"
    );

    // HTTP/1.1 by ALPN on the same listener.
    let mut stream = tls_connect(&proxy, &connector(&files.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /over-h1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_and_serves_one_with() {
    let pki = Pki::new();
    let files = server_files(&pki);
    let client = pki.leaf(&["client.test"]);
    let client_cert = write(files.dir.path(), "client.pem", &client.cert);
    let client_key = write(files.dir.path(), "client-key.pem", &client.key);
    let upstream = sim("mtls").run().await;
    let proxy = proxy(&terminating(&upstream.address, &files, true))
        .run()
        .await;

    // Without a certificate: TLS 1.3 finishes the client's side of the
    // handshake, so the refusal shows on the first read.
    let anonymous = connector(&files.ca, None, &[b"http/1.1"]);
    let refused = async {
        let mut stream = tls_connect(&proxy, &anonymous).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buffer = [0u8; 64];
        match stream.read(&mut buffer).await? {
            0 => Err(std::io::Error::other("closed without an answer")),
            n => Ok(n),
        }
    }
    .await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let signed = connector(&files.ca, Some((&client_cert, &client_key)), &[b"h2"]);
    let response = h2_get(tls_connect(&proxy, &signed).await.unwrap(), "/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.requests().await,
        1,
        "only the signed client got through"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "breakwater_rejected_total{listener=\"secure\",reason=\"tls_handshake\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_smuggling_request_over_tls_is_refused_like_on_plain_tcp() {
    let pki = Pki::new();
    let files = server_files(&pki);
    let upstream = sim("recorder").run().await;
    let proxy = proxy(&terminating(&upstream.address, &files, false))
        .run()
        .await;
    let mut stream = tls_connect(&proxy, &connector(&files.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    stream
        .write_all(b"POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert_eq!(
        crate::support::raw_header(&response, "x-breakwater-reason"),
        Some("content-length-with-transfer-encoding")
    );
    assert_eq!(upstream.requests().await, 0, "nothing reached the upstream");
}

/// A TLS upstream on 127.0.0.1 with `leaf` for its certificate, offering
/// h2 and http/1.1; records the SNI and HTTP version of each request.
async fn tls_upstream(
    leaf: &Leaf,
    dir: &Path,
) -> (String, Arc<Mutex<Vec<(String, http::Version)>>>) {
    let cert = write(dir, "upstream.pem", &leaf.cert);
    let key = write(dir, "upstream-key.pem", &leaf.key);
    let config = breakwater::tls::server_config(&cert, &key, None).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().unwrap_or("").to_owned();
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        record
                            .lock()
                            .unwrap()
                            .push((sni.clone(), request.version()));
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"from the tls upstream"),
                            )))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (address, seen)
}

#[tokio::test]
async fn tls_to_an_upstream_sends_the_sni_and_trusts_only_the_private_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let (address, seen) = tls_upstream(&pki.leaf(&["app.internal"]), dir.path()).await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - {{name: h1, match: {{path_prefix: /h1}}, upstream: app}}
      - {{name: h2, match: {{path_prefix: /h2}}, upstream: app-h2}}
      - {{name: untrusted, upstream: wrong-ca}}
upstreams:
  - {{name: app, endpoints: [\"{address}\"], tls: {{sni: app.internal, ca: \"{ca}\"}}}}
  - {{name: app-h2, protocol: http2, endpoints: [\"{address}\"], tls: {{sni: app.internal, ca: \"{ca}\"}}}}
  - {{name: wrong-ca, endpoints: [\"{address}\"], tls: {{sni: app.internal}}}}
",
        ca = ca.display()
    );
    let proxy = proxy(&config).run().await;
    let response = proxy.get("/h1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "from the tls upstream");
    assert_eq!(proxy.get("/h2").await.status(), 200);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("app.internal".to_owned(), http::Version::HTTP_11),
            ("app.internal".to_owned(), http::Version::HTTP_2),
        ]
    );
    // The system trust store does not know the private CA: no request
    // goes out, and the client gets breakwater's 502.
    let refused = proxy.get("/other").await;
    assert_eq!(refused.status(), 502);
    assert_eq!(
        refused.headers()["x-breakwater-reason"],
        "upstream-unavailable"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_https_webhook_with_a_private_ca_gets_the_event() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let leaf = pki.leaf(&["localhost"]);
    let cert = write(dir.path(), "hook.pem", &leaf.cert);
    let key = write(dir.path(), "hook-key.pem", &leaf.key);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        breakwater::tls::server_config(&cert, &key, None).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = request.into_body().collect().await.map(|b| b.to_bytes());
                            if let Ok(value) = serde_json::from_slice(&body.unwrap_or_default()) {
                                store.lock().unwrap().push(value);
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                Empty::<Bytes>::new(),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let upstream = sim("hooked").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{}\"]}}
alerts:
  webhooks:
    - {{url: \"https://localhost:{port}/hook\", ca: \"{}\", min_severity: info}}
",
        upstream.address,
        ca.display()
    );
    let proxy = proxy(&config).run().await;
    let forced = crate::support::client()
        .post(proxy.admin_url("/breakers/main/open"))
        .send()
        .await
        .unwrap();
    assert!(forced.status().is_success());
    eventually(
        "the breaker event over https",
        Duration::from_secs(20),
        || async {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|event| event["subject"] == "main")
                .then_some(())
        },
    )
    .await;
}

/// The leaf certificate a TLS listener presents now, as DER.
async fn presented(proxy: &Proxy, ca: &Path) -> std::io::Result<Vec<u8>> {
    let stream = tls_connect(proxy, &connector(ca, None, &[b"http/1.1"])).await?;
    let certs = stream.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|cert| cert.to_vec()).unwrap_or_default())
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_served_without_dropping_connections() {
    let old_ca = Pki::new();
    let files = server_files(&old_ca);
    let upstream = sim("renewed").run().await;
    let proxy = proxy(&terminating(&upstream.address, &files, false))
        .run()
        .await;
    let before = presented(&proxy, &files.ca).await.unwrap();
    // A keep-alive connection made with the old certificate.
    let mut open = tls_connect(&proxy, &connector(&files.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    open.write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = open.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200 "));

    // cert-manager style: a new key and certificate from a new CA.
    let new_ca = Pki::new();
    let leaf = new_ca.leaf(&["localhost"]);
    let new_ca_file = write(files.dir.path(), "new-ca.pem", &new_ca.ca_pem);
    write(files.dir.path(), "key.pem", &leaf.key);
    write(files.dir.path(), "cert.pem", &leaf.cert);
    let after = eventually(
        "the new certificate served",
        Duration::from_secs(10),
        || async { presented(&proxy, &new_ca_file).await.ok() },
    )
    .await;
    assert_ne!(before, after);
    assert!(
        presented(&proxy, &files.ca).await.is_err(),
        "the old certificate is no longer served"
    );
    // The connection made before the renewal still serves requests.
    open.write_all(b"GET /second HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = String::new();
    open.read_to_string(&mut rest).await.ok();
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
    assert!(proxy
        .metrics()
        .await
        .contains("breakwater_config_reloads_total{result=\"success\"} 1"));
}
