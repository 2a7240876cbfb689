//! Active health checks (the upstream's `health_check:`): HTTP, TCP, an
//! exec command or the standard gRPC health check, per endpoint, every
//! `interval`.
//!
//! Each endpoint gets one task. It probes, feeds the result to a
//! `policy::health::HealthTracker` (thresholds, no I/O), and on a change
//! flips the endpoint's health, which [`UpstreamPool::pick`] reads.
//! Tasks hold only a `Weak` reference to their pool: when a reload
//! replaces the pool, its checks stop by themselves.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::process::Command;

use http::uri::Authority;
use http::{Request, Response};

use super::balance::UpstreamPool;
use crate::config::policy::{HealthCheck, Probe};
use crate::events::{EventBus, Severity};
use crate::grpc;
use crate::policy::health::{HealthChange, HealthTracker};
use crate::proxy::body::Body;

/// Starts the checks of `pool`, if it has a `health_check` and a runtime
/// is running.
pub fn spawn(pool: &Arc<UpstreamPool>, events: &Arc<EventBus>) {
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for (index, _) in pool.all_endpoints() {
        runtime.spawn(check_endpoint(
            Arc::downgrade(pool),
            index,
            check.clone(),
            events.clone(),
        ));
    }
}

async fn check_endpoint(
    pool: Weak<UpstreamPool>,
    index: usize,
    check: HealthCheck,
    events: Arc<EventBus>,
) {
    let mut tracker = HealthTracker::new(check.unhealthy_threshold, check.healthy_threshold);
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let passed = probe(&pool, index, &check).await;
        let Some(endpoint) = pool.endpoint(index) else {
            return;
        };
        if let Some(change) = tracker.record(passed) {
            let healthy = change == HealthChange::BecameHealthy;
            endpoint.set_healthy(healthy);
            events.emit(
                "health",
                endpoint.authority.as_str(),
                if healthy {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                &format!(
                    "upstream {}: {}",
                    pool.config.name,
                    if healthy { "healthy" } else { "unhealthy" }
                ),
            );
        }
    }
}

/// One probe within `check.timeout`; true when it passed.
async fn probe(pool: &UpstreamPool, index: usize, check: &HealthCheck) -> bool {
    let Some(endpoint) = pool.endpoint(index) else {
        return false;
    };
    let within = |future| tokio::time::timeout(check.timeout, future);
    match &check.probe {
        Probe::Http {
            path,
            expect_status,
        } => match within_http(check.timeout, pool.probe(index, path)).await {
            Some(status) => expect_status.contains(&status),
            None => false,
        },
        Probe::Tcp {} => {
            matches!(
                within(tokio::net::TcpStream::connect(endpoint.authority.as_str())).await,
                Ok(Ok(_))
            )
        }
        Probe::Exec(command) => {
            let Some((program, args)) = command.split_first() else {
                return false;
            };
            let args = args
                .iter()
                .map(|arg| arg.replace("{endpoint}", endpoint.authority.as_str()));
            let mut child = Command::new(program);
            child
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true);
            matches!(tokio::time::timeout(check.timeout, child.status()).await, Ok(Ok(status)) if status.success())
        }
        Probe::Grpc { service } => {
            tokio::time::timeout(check.timeout, grpc_probe(pool, index, service))
                .await
                .unwrap_or(false)
        }
    }
}

/// Largest health check answer read: the message is a few bytes.
const MAX_GRPC_PROBE_BYTES: usize = 4096;

/// `grpc.health.v1.Health/Check` for `service` at endpoint `index`.
async fn grpc_probe(pool: &UpstreamPool, index: usize, service: &str) -> bool {
    let Some(endpoint) = pool.endpoint(index) else {
        return false;
    };
    let request = grpc_health_request(service, &endpoint.authority);
    match pool.send(index, request).await {
        Ok(response) => grpc_health_serving(response).await,
        Err(_) => false,
    }
}

/// The standard gRPC health check of `service` (`""`: the whole server)
/// at `authority`, as an HTTP/2 request.
pub fn grpc_health_request(service: &str, authority: &Authority) -> Request<Body> {
    use http::header::{HeaderValue, CONTENT_TYPE, HOST, TE};

    let mut request = Request::new(Body::full(grpc::health_check_request(service)));
    *request.method_mut() = http::Method::POST;
    let uri = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(grpc::HEALTH_CHECK_PATH)
        .build();
    if let Ok(uri) = uri {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(HOST, host);
    }
    request
}

/// Whether the answer to [`grpc_health_request`] says `SERVING`, with
/// `grpc-status: 0`; anything else — an error status, a trailers-only
/// reply, a body too large or broken — does not.
pub async fn grpc_health_serving(response: Response<Body>) -> bool {
    use http_body_util::{BodyExt, Limited};

    if response.status() != http::StatusCode::OK || !grpc::is_grpc(response.headers()) {
        return false;
    }
    if grpc::status(response.headers()).is_some() {
        // Trailers-only: an error, or an OK without the message.
        return false;
    }
    let Ok(collected) = Limited::new(response.into_body(), MAX_GRPC_PROBE_BYTES)
        .collect()
        .await
    else {
        return false;
    };
    let status = collected.trailers().and_then(grpc::status);
    status == Some(grpc::Code::OK) && grpc::health_check_serving(&collected.to_bytes())
}

async fn within_http(
    limit: Duration,
    sent: impl std::future::Future<
        Output = Result<http::Response<crate::proxy::body::Body>, crate::proxy::outcome::CallError>,
    >,
) -> Option<u16> {
    match tokio::time::timeout(limit, sent).await {
        Ok(Ok(response)) => Some(response.status().as_u16()),
        _ => None,
    }
}
