//! The admin port (SPEC §6): operators look at and steer breakwater here.
//!
//! | method & path                      | does                                              |
//! |------------------------------------|---------------------------------------------------|
//! | GET `/`                            | the live dashboard: one self-contained HTML page  |
//! |                                    | (`dashboard.rs`) that polls `/status` and         |
//! |                                    | `/metrics`, follows `/events/stream` and steers   |
//! |                                    | with the calls below, sending the pasted token    |
//! | GET `/healthz`                     | 200 while the process is up                       |
//! | GET `/readyz`                      | 200 when serving, 503 with the reason otherwise   |
//! | GET `/metrics`                     | Prometheus text format                            |
//! | GET `/events?since=&limit=`        | recent events from the ring (oldest first)        |
//! | GET `/events/stream`               | live events as Server-Sent Events                 |
//! | GET `/status`                      | listeners, routes and their policies, upstreams,  |
//! |                                    | endpoints (health, ejections), config version     |
//! | POST `/config/reload`              | reload the config (like SIGHUP); errors returned  |
//! | POST `/breakers/{route}/open`      | force the route's breaker open until reset        |
//! | POST `/breakers/{route}/close`     | force it closed (nothing counted) until reset     |
//! | POST `/breakers/{route}/reset`     | back to closed, window and backoff cleared        |
//! | POST `/breakers/reset`             | reset every breaker                               |
//! | POST `/upstreams/{name}/failover`  | send the upstream's traffic to its backups        |
//! | POST `/upstreams/{name}/failback`  | back to the primaries                             |
//! | POST `/upstreams/{name}/restart`   | restart the supervised process now                |
//! | PUT `/degradation`                 | `{"level": "moderate"}` sets the degradation      |
//! |                                    | level; `{"level": "auto"}` hands control back     |
//! | PUT `/faults/{route}`              | inject a fault (delay, abort) for its ttl         |
//! | DELETE `/faults/{route}`           | end the route's fault now                         |
//! | POST `/upstreams/{name}/drill`     | `{"action": "kill"\|"hang"}`: a recovery drill     |
//! | PUT `/maintenance`                 | `{"upstream", "on", "reason", "ttl"}`             |
//!
//! The operations calls (faults, drills, maintenance) are in `ops.rs`.
//!
//! Every answer is JSON except `/metrics` and the dashboard. Mutating
//! paths take their one method (POST, PUT for `/degradation`, `/faults`
//! and `/maintenance`, DELETE to end a fault; a GET is 405 and changes
//! nothing), need `authorization: Bearer <token>` when a token is
//! configured (compared in constant time), and refuse a request whose
//! `origin` is another site. The admin server runs on the
//! same runtime as the data plane but the data plane never waits on it.

mod ops;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

mod dashboard;

use crate::events::Severity;
use crate::policy::breaker::Force;
use crate::policy::degradation::Level as DegradationLevel;
use crate::proxy::body::{Body, BoxError};
use crate::proxy::gate::Readiness;
use crate::proxy::snapshot::Snapshot;
use crate::proxy::DataPlane;
use crate::reload::Reloader;
use crate::supervisor::Supervisors;

/// What the admin port reads and steers.
pub struct Admin {
    /// The data plane: snapshot, gates, counters.
    pub plane: Arc<DataPlane>,
    /// Reloads the config.
    pub reloader: Arc<Reloader>,
    /// The supervised process, if any.
    pub supervisors: Arc<Supervisors>,
}

/// Serves the admin API on `listener` until shutdown completes.
pub fn serve(state: Arc<Admin>, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Admin accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(state.clone(), request));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "Admin connection ended with an error.");
                }
            });
        }
    });
}

/// How an admin path may be called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Mutate,
}

/// Every admin response body: JSON and text, or the live event stream.
type AdminBody = UnsyncBoxBody<Bytes, BoxError>;

async fn handle(
    state: Arc<Admin>,
    request: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    if request.uri().path() == "/events/stream" && request.method() == Method::GET {
        return Ok(event_stream(&state, &request));
    }
    let response = respond(state, request).await;
    Ok(response.map(|body| body.boxed_unsync()))
}

/// `GET /events/stream`: Server-Sent Events, replaying from `?since=` or
/// `Last-Event-ID` when given, then live.
fn event_stream(state: &Admin, request: &Request<Incoming>) -> Response<AdminBody> {
    let since = query_u64(request, "since").or_else(|| {
        request
            .headers()
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|id| id.parse().ok())
    });
    let body = crate::events::sse_body(&state.plane.events, since)
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// A numeric query parameter.
fn query_u64(request: &Request<Incoming>, name: &str) -> Option<u64> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

async fn respond(state: Arc<Admin>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let (access, allowed) = match path.as_str() {
        "/" | "/healthz" | "/readyz" | "/metrics" | "/status" | "/events" | "/events/stream" => {
            (Access::Read, Method::GET)
        }
        "/config/reload" | "/breakers/reset" => (Access::Mutate, Method::POST),
        "/degradation" | "/maintenance" => (Access::Mutate, Method::PUT),
        _ if path.starts_with("/faults/") && path.len() > "/faults/".len() => {
            let allowed = if request.method() == Method::DELETE {
                Method::DELETE
            } else {
                Method::PUT
            };
            (Access::Mutate, allowed)
        }
        _ if drill_target(&path).is_some() => (Access::Mutate, Method::POST),
        _ if breaker_action(&path).is_some() || upstream_action(&path).is_some() => {
            (Access::Mutate, Method::POST)
        }
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found", "path": path}),
            )
        }
    };
    let method_ok =
        request.method() == allowed || (allowed == Method::GET && request.method() == Method::HEAD);
    if !method_ok {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{path} takes {allowed}")}),
        );
        response.headers_mut().insert(
            ALLOW,
            HeaderValue::from_str(allowed.as_str()).unwrap_or(HeaderValue::from_static("GET")),
        );
        return response;
    }
    if access == Access::Mutate {
        if let Some(refusal) = refuse_mutation(&state, &request) {
            return refusal;
        }
    }
    let response = match path.as_str() {
        "/" => dashboard::page(),
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => readyz(&state),
        "/metrics" => {
            refresh_gauges(&state);
            let mut response = Response::new(Body::full(state.plane.metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/status" => json_response(StatusCode::OK, &status(&state)),
        "/events" => {
            let limit = query_u64(&request, "limit").map_or(100, |limit| limit.min(1000) as usize);
            let events = state
                .plane
                .events
                .since(query_u64(&request, "since"), limit);
            json_response(
                StatusCode::OK,
                &json!({"latest_id": state.plane.events.latest_id(), "events": events}),
            )
        }
        "/config/reload" => match state.reloader.reload("admin").await {
            Ok(reloaded) => json_response(
                StatusCode::OK,
                &json!({"result": "ok", "config_version": reloaded.version, "changed": reloaded.changed}),
            ),
            Err(error) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({
                    "result": "error",
                    "config_version": state.plane.snapshot().version,
                    "message": "config refused; the previous config keeps serving",
                    "errors": error.issues,
                }),
            ),
        },
        "/degradation" => set_degradation(&state, request).await,
        "/maintenance" => ops::maintenance(&state, request).await,
        _ if path.starts_with("/faults/") => {
            ops::faults(&state, &path["/faults/".len()..], request).await
        }
        _ if drill_target(&path).is_some() => {
            let name = drill_target(&path).unwrap_or_default().to_owned();
            ops::drill(&state, &name, request).await
        }
        "/breakers/reset" => {
            let snapshot = state.plane.snapshot();
            let mut reset = Vec::new();
            for route in snapshot.routes() {
                if let Some(breaker) = &route.breaker {
                    if let Some(transition) = breaker.force(Force::Reset, Instant::now()) {
                        route.report.transition(transition);
                    }
                    reset.push(route.name.to_string());
                }
            }
            json_response(StatusCode::OK, &json!({"result": "ok", "reset": reset}))
        }
        _ => match (breaker_action(&path), upstream_action(&path)) {
            (Some((route, action)), _) => force_breaker(&state, route, action),
            (None, Some((upstream, action))) => act_on_upstream(&state, upstream, action),
            (None, None) => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        },
    };
    response
}

/// Largest request body an admin call reads.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// `PUT /degradation {"level": "normal" | … | "emergency" | "auto"}`.
async fn set_degradation(state: &Admin, request: Request<Incoming>) -> Response<Body> {
    let body = match http_body_util::Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "the body could not be read (at most 16KiB)"}),
            )
        }
    };
    let word = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| value.get("level")?.as_str().map(str::to_owned));
    let words = "normal, minimal, moderate, severe, emergency or auto";
    let Some(word) = word else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("expected {{\"level\": …}} with one of {words}")}),
        );
    };
    let level = match word.as_str() {
        "auto" => None,
        other => match DegradationLevel::from_word(other) {
            Some(level) => Some(level),
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("unknown level {other:?}; expected one of {words}")}),
                )
            }
        },
    };
    let degradation = &state.plane.degradation;
    let before = degradation.level();
    degradation.set_operator(level);
    let (source, now) = degradation.source_and_level();
    state.plane.metrics.degradation_level.set(now as i64);
    if now != before || level.is_none() {
        state.plane.events.emit(
            "degradation",
            now.as_str(),
            if now > before {
                Severity::Warning
            } else {
                Severity::Info
            },
            &match level {
                Some(_) => format!(
                    "level {} -> {} by an operator",
                    before.as_str(),
                    now.as_str()
                ),
                None => format!(
                    "an operator handed control back ({source}); level {} -> {}",
                    before.as_str(),
                    now.as_str()
                ),
            },
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"result": "ok", "level": now.as_str(), "source": source}),
    )
}

/// The token and cross-site rules for mutating calls; `Some` is the refusal.
fn refuse_mutation(state: &Admin, request: &Request<Incoming>) -> Option<Response<Body>> {
    if cross_site(request) {
        return Some(json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "cross-site request refused"}),
        ));
    }
    let snapshot = state.plane.snapshot();
    let token = snapshot.config.admin.token.as_ref()?;
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    if constant_time_eq(presented, token.0.as_bytes()) {
        return None;
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "a valid bearer token is required"}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"breakwater\""),
    );
    Some(response)
}

/// A browser sends `origin` on cross-origin POSTs; an admin call from a
/// page on another site (CSRF) is refused. Tools like curl send none.
fn cross_site(request: &Request<Incoming>) -> bool {
    let Some(origin) = request
        .headers()
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let origin_host = origin.split("://").nth(1).unwrap_or("");
    let host = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

/// `/breakers/{route}/{open|close|reset}` → (route, action).
fn breaker_action(path: &str) -> Option<(&str, Force)> {
    let rest = path.strip_prefix("/breakers/")?;
    let (route, action) = rest.split_once('/')?;
    let action = match action {
        "open" => Force::Open,
        "close" => Force::Closed,
        "reset" => Force::Reset,
        _ => return None,
    };
    (!route.is_empty()).then_some((route, action))
}

/// `/upstreams/{name}/drill` → name.
fn drill_target(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/upstreams/")?.strip_suffix("/drill")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// `/upstreams/{name}/{failover|failback|restart}` → (name, action).
fn upstream_action(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/upstreams/")?;
    let (name, action) = rest.split_once('/')?;
    (!name.is_empty() && matches!(action, "failover" | "failback" | "restart"))
        .then_some((name, action))
}

fn act_on_upstream(state: &Admin, name: &str, action: &str) -> Response<Body> {
    let snapshot = state.plane.snapshot();
    let Some(pool) = snapshot.upstream(name) else {
        let known: Vec<&str> = snapshot
            .upstreams
            .iter()
            .map(|pool| pool.config.name.as_str())
            .collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no upstream named '{name}'"), "upstreams": known}),
        );
    };
    let events = &state.plane.events;
    match action {
        "failover" if pool.backup().is_empty() => json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("upstream '{name}' has no backup endpoints")}),
        ),
        "failover" | "failback" => {
            let failed_over = action == "failover";
            if pool.gate().set_failed_over(failed_over) {
                events.emit(
                    if failed_over { "failover" } else { "failback" },
                    name,
                    Severity::Warning,
                    "by an operator",
                );
            }
            json_response(
                StatusCode::OK,
                &json!({"result": "ok", "upstream": name, "failed_over": failed_over}),
            )
        }
        _ => match state.supervisors.of_upstream(name) {
            Some(supervisor) => {
                supervisor.restart();
                json_response(
                    StatusCode::ACCEPTED,
                    &json!({"result": "restarting", "upstream": name}),
                )
            }
            None => json_response(
                StatusCode::CONFLICT,
                &json!({"error": format!("no supervised process serves '{name}'")}),
            ),
        },
    }
}

fn force_breaker(state: &Admin, route_name: &str, action: Force) -> Response<Body> {
    let snapshot = state.plane.snapshot();
    let Some(route) = snapshot.route(route_name) else {
        let known: Vec<&str> = snapshot.routes().map(|route| &*route.name).collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no route named '{route_name}'"), "routes": known}),
        );
    };
    let Some(breaker) = &route.breaker else {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("route '{route_name}' has circuit_breaker: false")}),
        );
    };
    let now = Instant::now();
    if let Some(transition) = breaker.force(action, now) {
        route.report.transition(transition);
    }
    json_response(
        StatusCode::OK,
        &json!({"result": "ok", "route": route_name, "breaker": breaker.snapshot(now)}),
    )
}

/// Sets the gauges that mirror policy state, just before a scrape, so the
/// request path never touches them.
fn refresh_gauges(state: &Admin) {
    let snapshot = state.plane.snapshot();
    let now = Instant::now();
    let metrics = &state.plane.metrics;
    for route in snapshot.routes() {
        if let Some(breaker) = &route.breaker {
            let _ = breaker
                .advance(now)
                .map(|transition| route.report.transition(transition));
            metrics
                .breaker_state
                .with_label_values(&[&*route.name])
                .set(breaker.state().gauge());
        }
        if let Some(bulkhead) = &route.bulkhead {
            metrics
                .bulkhead_in_flight
                .with_label_values(&[&*route.name])
                .set(bulkhead.in_flight() as i64);
            metrics
                .bulkhead_queued
                .with_label_values(&[&*route.name])
                .set(bulkhead.queued() as i64);
            metrics
                .bulkhead_limit
                .with_label_values(&[&*route.name])
                .set(bulkhead.limit() as i64);
        }
    }
    let dropped = state.plane.events.webhook_dropped();
    let counted = metrics.webhook_dropped.get();
    if dropped > counted {
        metrics.webhook_dropped.inc_by(dropped - counted);
    }
    for pool in &snapshot.upstreams {
        let name = pool.config.name.as_str();
        let (mut idle, mut active, mut connecting, mut pending) = (0, 0, 0, 0);
        for (_, endpoint) in pool.all_endpoints() {
            let stats = endpoint.connections();
            idle += stats.idle;
            connecting += stats.connecting;
            active += stats.open.saturating_sub(stats.idle + stats.connecting);
            pending += stats.pending;
        }
        for (state, count) in [
            ("idle", idle),
            ("active", active),
            ("connecting", connecting),
        ] {
            metrics
                .upstream_connections
                .with_label_values(&[name, state])
                .set(count as i64);
        }
        metrics
            .upstream_pending
            .with_label_values(&[name])
            .set(pending as i64);
        for (index, endpoint) in pool.endpoints().iter().enumerate() {
            let up = i64::from(pool.is_available(index, now));
            metrics
                .endpoint_healthy
                .with_label_values(&[&pool.config.name, endpoint.authority.as_str()])
                .set(up);
        }
    }
}

fn readyz(state: &Admin) -> Response<Body> {
    let readiness = state
        .supervisors
        .get()
        .map_or(Readiness::Ready, |supervisor| supervisor.readiness());
    let reason = if state.plane.is_draining() {
        "draining"
    } else {
        readiness.as_str()
    };
    if reason == Readiness::Ready.as_str() {
        json_response(StatusCode::OK, &json!({"ready": true}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": reason}),
        )
    }
}

fn route_status(snapshot: &Snapshot, name: &str, now: Instant) -> Value {
    let Some(route) = snapshot.route(name) else {
        return json!({"name": name});
    };
    let config = &route.config;
    json!({
        "name": config.name,
        "match": config.matcher,
        "upstream": config.upstream,
        // A route to an HTTP/2 upstream carries gRPC: its calls are judged
        // by grpc-status and breakwater answers them in gRPC.
        "protocol": route.upstream.config.protocol,
        "grpc": route.upstream.config.protocol != crate::config::Protocol::Http1,
        "timeouts": config.timeouts,
        "retry": config.retry,
        "breaker": route.breaker.as_ref().map(|breaker| breaker.snapshot(now)),
        "bulkhead": route.bulkhead.as_ref().map(|bulkhead| json!({
            "in_flight": bulkhead.in_flight(),
            "queued": bulkhead.queued(),
            "limit": bulkhead.limit(),
            "max_concurrent": bulkhead.max_concurrent(),
            "max_queue": bulkhead.max_queue(),
            "adaptive": bulkhead.adaptive_limit().map(|adaptive| json!({
                "min_concurrent": adaptive.config().min_limit,
                "baseline_ms": adaptive.baseline().map(|baseline| (baseline.as_secs_f64() * 1e4).round() / 10.0),
                "probing": adaptive.probing(),
            })),
        })),
        "priority": config.priority,
        "degraded": route.report.n_degraded(),
        "fallback": config.fallback.is_some(),
        "stale": route.stale.as_ref().map(|store| {
            let (entries, bytes) = store.usage();
            json!({"entries": entries, "bytes": bytes})
        }),
        "fault": route.fault.active(now).map(|fault| fault.status(now)),
        "rate_limit": route.rate_limiter.as_ref().map(|limiter| json!({
            "rps": limiter.rps(),
            "burst": limiter.burst(),
            "tokens": limiter.available(now),
        })),
    })
}

fn status(state: &Admin) -> Value {
    let snapshot = state.plane.snapshot();
    let now = Instant::now();
    let config = &snapshot.config;
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|listener| {
            let connections = state
                .plane
                .metrics
                .downstream_connections
                .with_label_values(&[&listener.name])
                .get();
            json!({
                "name": listener.name,
                "listen": listener.listen.to_string(),
                "connections": connections,
                "routes": listener.routes.iter().map(|route| route_status(&snapshot, &route.name, now)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let upstreams: Vec<Value> = snapshot
        .upstreams
        .iter()
        .map(|pool| {
            let outlier = pool.health().outlier();
            let endpoints: Vec<Value> = pool
                .all_endpoints()
                .map(|(index, endpoint)| {
                    let primary = index < pool.endpoints().len();
                    json!({
                        "address": endpoint.authority.as_str(),
                        "role": if primary { "primary" } else { "backup" },
                        "available": pool.is_available(index, now),
                        "healthy": endpoint.is_healthy(),
                        "ejected": pool.is_ejected(index, now),
                        "times_ejected": if primary { outlier.map_or(0, |o| o.times_ejected(index)) } else { 0 },
                        "connections": endpoint.connections(),
                    })
                })
                .collect();
            json!({
                "name": pool.config.name,
                "protocol": pool.config.protocol,
                "connect_timeout": crate::units::format_duration(pool.config.connect_timeout),
                "readiness": pool.gate().readiness(),
                "failed_over": pool.gate().is_failed_over(),
                "maintenance": ops::maintenance_status(pool.gate()),
                "endpoints": endpoints,
            })
        })
        .collect();
    let (source, level) = state.plane.degradation.source_and_level();
    let degradation = json!({
        "level": level.as_str(),
        "source": source,
        "auto_level": state.plane.degradation.auto_level().as_str(),
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_version": snapshot.version,
        "uptime_seconds": (state.plane.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "draining": state.plane.is_draining(),
        "in_flight": state.plane.requests_in_flight(),
        "degradation": degradation,
        "listeners": listeners,
        "upstreams": upstreams,
        "supervisor": state.supervisors.get().map(|supervisor| {
            let mut status = json!(supervisor.status());
            if let Value::Object(fields) = &mut status {
                fields.insert("upstream".to_owned(), json!(supervisor.upstream));
            }
            status
        }),
        "config_rollback": state.reloader.last_rollback(),
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"S3cret", b"s3cret"));
    }
}
