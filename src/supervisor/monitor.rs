//! Checks the supervisor's dependencies (`supervisor.dependencies`): the
//! I/O half of [`super::depends`].
//!
//! One task per dependency checks it every `interval` within `timeout`
//! (a TCP connect, an HTTP GET written by hand — one request line, read
//! the status line — or a command's exit status), records the result on
//! the shared [`Board`], emits `dependency_down` / `dependency_up` on a
//! change and wakes the supervisor. The tasks end when the [`Monitor`] is
//! dropped (a reload that changes the dependencies makes a new one).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::depends::{Board, Change, Verdict};
use crate::config::{Dependency, DependencyCheck};
use crate::events::{EventBus, Severity};
use crate::proxy::body::Body;
use crate::proxy::upstream::health;

/// The running checks and what they found.
pub struct Monitor {
    view: MonitorView,
    changed: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the checks found, shared with `/status`.
#[derive(Clone)]
pub struct MonitorView {
    dependencies: Vec<Dependency>,
    board: Arc<Mutex<Board>>,
}

impl Monitor {
    /// Starts checking `dependencies`; `upstream` names them in events.
    pub fn start(dependencies: &[Dependency], upstream: &str, events: &Arc<EventBus>) -> Monitor {
        let board = Arc::new(Mutex::new(Board::new(
            dependencies.iter().map(|dependency| {
                (
                    dependency.name.clone(),
                    dependency.required,
                    dependency.unhealthy_threshold,
                )
            }),
            Instant::now(),
        )));
        let (notify, changed) = watch::channel(0u64);
        let notify = Arc::new(notify);
        let tasks = dependencies
            .iter()
            .enumerate()
            .map(|(index, dependency)| {
                tokio::spawn(check_loop(
                    index,
                    dependency.clone(),
                    upstream.to_owned(),
                    board.clone(),
                    notify.clone(),
                    events.clone(),
                ))
            })
            .collect();
        Monitor {
            view: MonitorView {
                dependencies: dependencies.to_vec(),
                board,
            },
            changed,
            tasks,
        }
    }

    /// The dependencies it checks.
    pub fn dependencies(&self) -> &[Dependency] {
        &self.view.dependencies
    }

    /// What the supervisor may do now.
    pub fn verdict(&self) -> Verdict {
        self.view.lock().verdict()
    }

    /// A handle on the findings, for `/status`.
    pub fn view(&self) -> MonitorView {
        self.view.clone()
    }

    /// Waits until some dependency changes.
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            // No checks (no dependencies): nothing will ever change.
            std::future::pending::<()>().await;
        }
    }
}

impl MonitorView {
    /// Each dependency for `/status`: name, kind, required, up, since.
    pub fn status(&self) -> Vec<DependencyStatus> {
        let now = Instant::now();
        self.lock()
            .standings()
            .iter()
            .zip(&self.dependencies)
            .map(|(standing, dependency)| DependencyStatus {
                name: standing.name.clone(),
                kind: dependency.check.kind(),
                required: standing.required,
                up: standing.up,
                for_seconds: now.saturating_duration_since(standing.since).as_secs_f64(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One dependency as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DependencyStatus {
    /// Its name.
    pub name: String,
    /// `tcp`, `http` or `exec`.
    pub kind: &'static str,
    /// Whether the child waits for it.
    pub required: bool,
    /// `null` until checked.
    pub up: Option<bool>,
    /// How long it has been so.
    pub for_seconds: f64,
}

async fn check_loop(
    index: usize,
    dependency: Dependency,
    upstream: String,
    board: Arc<Mutex<Board>>,
    notify: Arc<watch::Sender<u64>>,
    events: Arc<EventBus>,
) {
    let mut ticks = tokio::time::interval(dependency.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let passed = check(&dependency.check, dependency.timeout).await;
        let change = board.lock().unwrap_or_else(PoisonError::into_inner).record(
            index,
            passed,
            Instant::now(),
        );
        let Some(change) = change else { continue };
        let required = if dependency.required {
            "required"
        } else {
            "optional"
        };
        match change {
            Change::Down => events.emit(
                "dependency_down",
                &upstream,
                if dependency.required {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                &format!(
                    "{} ({required}, {}) is down",
                    dependency.name,
                    dependency.check.kind()
                ),
            ),
            Change::Up => events.emit(
                "dependency_up",
                &upstream,
                Severity::Info,
                &format!(
                    "{} ({required}, {}) is up",
                    dependency.name,
                    dependency.check.kind()
                ),
            ),
        };
        notify.send_modify(|version| *version += 1);
    }
}

/// One check within `timeout`; true when it passed.
async fn check(check: &DependencyCheck, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            DependencyCheck::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .is_ok(),
            DependencyCheck::Http {
                address,
                path,
                expect_status,
            } => http_status(address, path)
                .await
                .is_some_and(|status| expect_status.contains(&status)),
            DependencyCheck::Grpc { address, service } => grpc_serving(address, service).await,
            DependencyCheck::Exec(command) => {
                let Some((program, args)) = command.split_first() else {
                    return false;
                };
                let mut child = tokio::process::Command::new(program);
                child
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                child.status().await.is_ok_and(|status| status.success())
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

/// The standard gRPC health check of `service` at `address`, over a
/// fresh HTTP/2 connection: whether it answered `SERVING`.
async fn grpc_serving(address: &str, service: &str) -> bool {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let Ok(authority) = address.parse::<http::uri::Authority>() else {
        return false;
    };
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Body>(TokioIo::new(stream))
        .await;
    let Ok((mut sender, connection)) = handshake else {
        return false;
    };
    // Ends when `sender` is dropped, with this check.
    tokio::spawn(connection);
    let request = health::grpc_health_request(service, &authority);
    match sender.send_request(request).await {
        Ok(response) => health::grpc_health_serving(response.map(Body::incoming)).await,
        Err(_) => false,
    }
}

/// `GET path` at `address` over a fresh connection; the status answered.
async fn http_status(address: &str, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let host = address;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: breakwater-dependency-check\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    // "HTTP/1.1 200" is 12 bytes; read until there.
    while read < 12 {
        let n = stream.read(&mut head[read..]).await.ok()?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = std::str::from_utf8(&head[..read]).ok()?;
    let status = line.strip_prefix("HTTP/1.")?.get(2..5)?;
    status.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_pass_and_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let second = Duration::from_secs(1);
        let tcp = DependencyCheck::Tcp {
            address: address.clone(),
        };
        assert!(check(&tcp, second).await);
        let http = |expect: u16| DependencyCheck::Http {
            address: address.clone(),
            path: "/health".into(),
            expect_status: vec![expect],
        };
        assert!(check(&http(204), second).await);
        assert!(!check(&http(200), second).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(!check(&DependencyCheck::Tcp { address: gone }, second).await);
        assert!(check(&DependencyCheck::Exec(vec!["true".into()]), second).await);
        assert!(!check(&DependencyCheck::Exec(vec!["false".into()]), second).await);
    }

    #[tokio::test]
    async fn a_grpc_dependency_is_up_while_it_says_serving() {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use tonic_health::ServingStatus;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service.clone();
                let service = hyper::service::service_fn(move |request| {
                    let mut service = service.clone();
                    async move { tower::Service::call(&mut service, request).await }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let second = Duration::from_secs(1);
        let grpc = |service: &str| DependencyCheck::Grpc {
            address: address.clone(),
            service: service.to_owned(),
        };
        assert!(check(&grpc(""), second).await);
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        assert!(!check(&grpc(""), second).await);
        // A service the server does not know: NOT_FOUND, not serving.
        assert!(!check(&grpc("orders.v1.Orders"), second).await);
        reporter
            .set_service_status("orders.v1.Orders", ServingStatus::Serving)
            .await;
        assert!(check(&grpc("orders.v1.Orders"), second).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        let down = DependencyCheck::Grpc {
            address: gone,
            service: String::new(),
        };
        assert!(!check(&down, second).await);
    }
}
