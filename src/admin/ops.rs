//! The admin port's operations calls (SPEC §12): faults, drills and
//! maintenance. Each is a mutation (token and same-site rules apply) with
//! a JSON body of at most 16KiB.
//!
//! - `PUT /faults/{route}` `{"delay": {"percent", "duration"}, "abort":
//!   {"percent", "status"}, "ttl"}` — read with the config's own rules for
//!   `routes[].fault` (ttl default 5m, at most 1h); replaces the route's
//!   fault. `DELETE /faults/{route}` ends it at once.
//! - `POST /upstreams/{name}/drill` `{"action": "kill" | "hang"}` — 202
//!   with the pid signalled; 409 when there is nothing to drill.
//! - `PUT /maintenance` `{"upstream", "on", "reason", "ttl"}` — ttl
//!   default 30m, at most 24h; `"on": false` ends it.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{json_response, Admin, MAX_ADMIN_BODY};
use crate::config::FaultInjection;
use crate::events::Severity;
use crate::proxy::body::Body;
use crate::supervisor::drill::DrillAction;

/// How long maintenance lasts when the call does not say.
const DEFAULT_MAINTENANCE_TTL: Duration = Duration::from_secs(30 * 60);

/// Longest maintenance window one call may open.
const MAX_MAINTENANCE_TTL: Duration = Duration::from_secs(24 * 3600);

async fn read_body(request: Request<Incoming>) -> Result<bytes::Bytes, Response<Body>> {
    match http_body_util::Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "the body could not be read (at most 16KiB)"}),
        )),
    }
}

fn bad_request(error: impl Into<Value>) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": error.into()}))
}

/// `PUT` or `DELETE /faults/{route}`.
pub(super) async fn faults(
    state: &Admin,
    route: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let snapshot = state.plane.snapshot();
    if snapshot.route(route).is_none() {
        let known: Vec<&str> = snapshot.routes().map(|route| &*route.name).collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no route named {route:?}"), "routes": known}),
        );
    }
    let faults = &state.plane.faults;
    let events = &state.plane.events;
    if request.method() == Method::DELETE {
        let ended = faults.clear(route, None);
        if ended.is_some() {
            events.emit("fault", route, Severity::Info, "ended by an operator");
        }
        return json_response(
            StatusCode::OK,
            &json!({"result": "ok", "route": route, "ended": ended.is_some()}),
        );
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let text = String::from_utf8_lossy(&body);
    let spec = match crate::config::decode_section::<FaultInjection>(&text) {
        Ok(spec) => spec,
        Err(problems) => {
            return bad_request(json!(problems));
        }
    };
    let fault = faults.set(route, spec, "admin", events);
    json_response(
        StatusCode::OK,
        &json!({"result": "ok", "route": route, "fault": fault.status(Instant::now())}),
    )
}

/// `POST /upstreams/{name}/drill`.
pub(super) async fn drill(state: &Admin, name: &str, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let action = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| DrillAction::from_word(value.get("action")?.as_str()?));
    let Some(action) = action else {
        return bad_request("expected {\"action\": \"kill\"} or {\"action\": \"hang\"}");
    };
    let Some(supervisor) = state.supervisors.of_upstream(name) else {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("no supervised process serves {name:?}")}),
        );
    };
    match supervisor.drill(action).await {
        Ok(pid) => json_response(
            StatusCode::ACCEPTED,
            &json!({"result": "started", "upstream": name, "action": action, "pid": pid}),
        ),
        Err(why) => json_response(StatusCode::CONFLICT, &json!({"error": why})),
    }
}

/// `PUT /maintenance`.
pub(super) async fn maintenance(state: &Admin, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(
            "expected {\"upstream\": …, \"on\": true|false, \"reason\": …, \"ttl\": \"30m\"}",
        );
    };
    let (Some(name), Some(on)) = (
        value.get("upstream").and_then(Value::as_str),
        value.get("on").and_then(Value::as_bool),
    ) else {
        return bad_request("\"upstream\" (a name) and \"on\" (true or false) are required");
    };
    let snapshot = state.plane.snapshot();
    let Some(pool) = snapshot.upstream(name) else {
        let known: Vec<&str> = snapshot
            .upstreams
            .iter()
            .map(|pool| pool.config.name.as_str())
            .collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no upstream named {name:?}"), "upstreams": known}),
        );
    };
    let gate = pool.gate().clone();
    let events = state.plane.events.clone();
    if !on {
        let ended = gate.end_maintenance(None);
        if ended.is_some() {
            events.emit("maintenance", name, Severity::Info, "ended by an operator");
        }
        return json_response(
            StatusCode::OK,
            &json!({"result": "ok", "upstream": name, "maintenance": maintenance_status(&gate)}),
        );
    }
    let ttl = match value.get("ttl") {
        None | Some(Value::Null) => DEFAULT_MAINTENANCE_TTL,
        Some(Value::String(text)) => match crate::units::parse_duration(text) {
            Ok(ttl) if ttl > Duration::ZERO && ttl <= MAX_MAINTENANCE_TTL => ttl,
            Ok(_) => return bad_request("ttl: must be above 0 and at most 24h"),
            Err(error) => return bad_request(format!("ttl: {error}")),
        },
        Some(_) => return bad_request("ttl: expected a duration like \"30m\""),
    };
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("maintenance")
        .chars()
        .take(200)
        .collect::<String>();
    let window = gate.start_maintenance(reason.clone(), ttl);
    events.emit(
        "maintenance",
        name,
        Severity::Warning,
        &format!(
            "started by an operator for {}: {reason}",
            crate::units::format_duration(ttl)
        ),
    );
    let upstream = name.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep_until(window.until).await;
        if gate.end_maintenance(Some(window.generation)).is_some() {
            events.emit(
                "maintenance",
                &upstream,
                Severity::Info,
                "ended: its ttl ran out",
            );
        }
    });
    json_response(
        StatusCode::OK,
        &json!({"result": "ok", "upstream": name, "maintenance": maintenance_status(pool.gate())}),
    )
}

/// One upstream's maintenance for `/status`: on, reason, until.
pub(super) fn maintenance_status(gate: &crate::proxy::gate::UpstreamGate) -> Value {
    match gate.maintenance() {
        Some(window) => json!({
            "on": true,
            "reason": window.reason,
            "until": crate::events::rfc3339::format(window.until_wall),
            "remaining_seconds": window.until.saturating_duration_since(Instant::now()).as_secs_f64(),
        }),
        None => json!({"on": false}),
    }
}
