//! Operations config (SPEC §12): fault injection on a route, the
//! supervisor's dependencies and deploy rollback, and the rollback of
//! breakwater's own config after a bad reload.
//!
//! Everything here can also be steered at runtime (faults and maintenance
//! from the admin port); the config holds what a team wants written down.

use std::time::Duration;

use serde_json::{json, Value as Json};

use super::checks::{
    above_zero, at_least, at_most, between, non_empty, ratio, statuses, url_path, Check,
};
use super::decode::{Cx, Keys};
use super::policy::GrpcCode;
use super::yaml::Node;

/// Longest time a fault may stay on: an experiment someone forgot ends
/// by itself within the hour.
pub const MAX_FAULT_TTL: Duration = Duration::from_secs(3600);

/// How long a fault stays on when its `ttl` is not given.
pub const DEFAULT_FAULT_TTL: Duration = Duration::from_secs(300);

// === fault ===

section! {
    /// `routes[].fault:` (SPEC §12) — chaos for the callers: delay or abort
    /// a share of the route's requests. Injected replies carry
    /// `x-breakwater-fault: delay|abort`, are counted in
    /// `breakwater_faults_injected_total`, and never count against the
    /// upstream (breaker, outlier detection, retries, error rates). A
    /// fault always ends: after `ttl` from when the config brought it (a
    /// reload that keeps the same fault keeps its clock), or at `DELETE
    /// /faults/{route}`. Never triggered by request headers.
    pub struct FaultInjection {
        /// Hold a share of requests for a while before they go on.
        delay: Option<FaultDelay> = None,
        /// Answer a share of requests at once with a status.
        abort: Option<FaultAbort> = None,
        /// How long the fault stays on; at most 1h.
        #[check(between(Duration::from_secs(1), MAX_FAULT_TTL))]
        ttl: Duration = DEFAULT_FAULT_TTL,
    }
    validate: check_fault,
}

fn check_fault(fault: &mut FaultInjection, keys: &Keys<'_>, cx: &mut Cx) {
    if fault.delay.is_none() && fault.abort.is_none() {
        keys.error(cx, "", "give delay, abort or both");
    }
}

section! {
    /// `routes[].fault.delay:`
    pub struct FaultDelay {
        /// Share of requests delayed, in percent.
        #[check(between(0.0, 100.0))]
        percent: f64,
        /// How long each is held.
        #[check(above_zero(), at_most(Duration::from_secs(300)))]
        duration: Duration,
    }
}

section! {
    /// `routes[].fault.abort:` — the reply is breakwater's own, with
    /// `x-breakwater-reason: fault-injected`.
    pub struct FaultAbort {
        /// Share of requests aborted, in percent.
        #[check(between(0.0, 100.0))]
        percent: f64,
        /// The status they get.
        #[check(between(200u16, 599u16))]
        status: u16 = 503,
        /// The `grpc-status` a gRPC call gets (a trailers-only reply);
        /// without it, gRPC's mapping of `status` (503 → `unavailable`).
        grpc_status: Option<GrpcCode> = None,
    }
}

// === dependencies ===

/// `supervisor.dependencies[]:` — something the supervised process needs
/// and a restart cannot fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// A name for events and `/status`.
    pub name: String,
    /// How it is checked.
    pub check: DependencyCheck,
    /// Whether the child waits for it (and recovery holds while it is down).
    pub required: bool,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Failed checks in a row that mark it down.
    pub unhealthy_threshold: u32,
}

/// How a dependency is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum DependencyCheck {
    /// A TCP connect to `address` must succeed.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A GET of `path` at `address` must answer one of `expect_status`.
    Http {
        /// `host:port`.
        address: String,
        /// The path, with its query if any.
        path: String,
        /// Statuses that pass.
        expect_status: Vec<u16>,
    },
    /// A command that must exit 0.
    Exec(Vec<String>),
    /// The standard gRPC health check at `address` must answer `SERVING`.
    Grpc {
        /// `host:port`, spoken to as HTTP/2 (h2c).
        address: String,
        /// The service asked about; `""` is the whole server.
        service: String,
    },
}

impl DependencyCheck {
    /// `tcp`, `http`, `grpc` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self {
            DependencyCheck::Tcp { .. } => "tcp",
            DependencyCheck::Http { .. } => "http",
            DependencyCheck::Exec(_) => "exec",
            DependencyCheck::Grpc { .. } => "grpc",
        }
    }
}

section! {
    /// `supervisor.dependencies[]:` (SPEC §12) — something the process
    /// needs: give exactly one of `tcp`, `http`, `grpc` or `exec`. The child
    /// starts only once every required dependency is up; while one is
    /// down the recovery ladder holds (a restart cannot fix it), and
    /// `dependency_down` / `dependency_up` events say so.
    pub(crate) struct DependencyKeys {
        /// A name for events and `/status`.
        #[check(non_empty("a name"))]
        name: String,
        /// A TCP connect that must succeed.
        tcp: Option<TcpDependency> = None,
        /// A GET that must answer one of the statuses.
        http: Option<HttpDependency> = None,
        /// A command and its arguments that must exit 0.
        #[check(non_empty("a command"))]
        exec: Option<Vec<String>> = None,
        /// The standard gRPC health check, which must answer `SERVING`.
        grpc: Option<GrpcDependency> = None,
        /// Whether the child waits for it; an optional one is only logged.
        required: bool = true,
        /// Time between checks.
        #[check(above_zero())]
        interval: Duration = Duration::from_secs(2),
        /// Time a check may take; at most `interval`.
        #[check(above_zero())]
        timeout: Duration = Duration::from_secs(1),
        /// Failed checks in a row that mark it down.
        #[check(at_least(1))]
        unhealthy_threshold: u32 = 2,
    }
    validate: check_dependency,
}

section! {
    /// `supervisor.dependencies[].tcp:`
    pub(crate) struct TcpDependency {
        /// `host:port` to connect to.
        #[check(host_port())]
        address: String,
    }
}

section! {
    /// `supervisor.dependencies[].grpc:` — `grpc.health.v1.Health/Check`
    /// over HTTP/2 (h2c).
    pub(crate) struct GrpcDependency {
        /// `host:port` of the gRPC server.
        #[check(host_port())]
        address: String,
        /// The service asked about; `""` asks about the whole server.
        service: String = String::new(),
    }
}

section! {
    /// `supervisor.dependencies[].http:` — give `url`, or `address` and
    /// `path`.
    pub(crate) struct HttpDependency {
        /// `http://host:port/path`.
        url: Option<String> = None,
        /// `host:port`, with `path`.
        #[check(host_port())]
        address: Option<String> = None,
        /// Path to GET at `address`.
        #[check(url_path())]
        path: String = "/healthz".to_owned(),
        /// Statuses that pass.
        #[check(statuses())]
        expect_status: Vec<u16> = vec![200],
    }
}

/// One `host:port` with a non-zero port.
fn host_port<V: super::checks::Checked<Item = String>>() -> Check<V> {
    Check::new(
        "host:port",
        json!({"pattern": super::docs::pattern("[^@/\\s]+:[0-9]{1,5}")}),
        |value: &V| {
            let Some(address) = value.item() else {
                return Ok(());
            };
            if valid_host_port(address) {
                Ok(())
            } else {
                Err(format!("expected host:port like 127.0.0.1:5432, found {address:?}").into())
            }
        },
    )
}

fn valid_host_port(address: &str) -> bool {
    address
        .parse::<http::uri::Authority>()
        .ok()
        .is_some_and(|authority| {
            authority.port_u16().is_some_and(|port| port != 0) && !address.contains('@')
        })
}

/// `http://host:port/path` → (`host:port`, `/path`); the port defaults to 80.
pub fn split_http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let parsed = authority.parse::<http::uri::Authority>().ok()?;
    if authority.contains('@') || parsed.host().is_empty() {
        return None;
    }
    let address = match parsed.port_u16() {
        Some(0) => return None,
        Some(_) => authority.to_owned(),
        None => format!("{authority}:80"),
    };
    Some((address, path.to_owned()))
}

fn check_dependency(dependency: &mut DependencyKeys, keys: &Keys<'_>, cx: &mut Cx) {
    let kinds = ["tcp", "http", "grpc", "exec"]
        .iter()
        .filter(|key| keys.has(key))
        .count();
    if kinds != 1 {
        keys.error(cx, "", "give exactly one of tcp, http, grpc or exec");
    }
    if dependency.timeout > dependency.interval {
        keys.error(cx, "timeout", "must be at most interval");
    }
    if let Some(http) = &dependency.http {
        match (&http.url, &http.address) {
            (Some(_), Some(_)) | (None, None) => {
                keys.error(cx, "http", "give url, or address and path");
            }
            (Some(url), None) if split_http_url(url).is_none() => {
                keys.error(
                    cx,
                    "http",
                    format!("url: expected http://host:port/path, found {url:?}"),
                );
            }
            _ => {}
        }
    }
}

fn dependency_from_keys(_: &mut Cx, _: &Node, keys: DependencyKeys) -> Option<Dependency> {
    let check = match (keys.tcp, keys.http, keys.exec, keys.grpc) {
        (Some(tcp), ..) => DependencyCheck::Tcp {
            address: tcp.address,
        },
        (None, Some(http), ..) => {
            let (address, path) = match (http.url, http.address) {
                (Some(url), _) => split_http_url(&url)?,
                (None, Some(address)) => (address, http.path),
                (None, None) => return None,
            };
            DependencyCheck::Http {
                address,
                path,
                expect_status: http.expect_status,
            }
        }
        (None, None, Some(command), _) => DependencyCheck::Exec(command),
        (None, None, None, Some(grpc)) => DependencyCheck::Grpc {
            address: grpc.address,
            service: grpc.service,
        },
        (None, None, None, None) => return None,
    };
    Some(Dependency {
        name: keys.name,
        check,
        required: keys.required,
        interval: keys.interval,
        timeout: keys.timeout,
        unhealthy_threshold: keys.unhealthy_threshold,
    })
}

fn dependency_to_keys(dependency: &Dependency) -> DependencyKeys {
    let (mut tcp, mut http, mut exec, mut grpc) = (None, None, None, None);
    match &dependency.check {
        DependencyCheck::Tcp { address } => {
            tcp = Some(TcpDependency {
                address: address.clone(),
            });
        }
        DependencyCheck::Http {
            address,
            path,
            expect_status,
        } => {
            http = Some(HttpDependency {
                url: None,
                address: Some(address.clone()),
                path: path.clone(),
                expect_status: expect_status.clone(),
            });
        }
        DependencyCheck::Exec(command) => exec = Some(command.clone()),
        DependencyCheck::Grpc { address, service } => {
            grpc = Some(GrpcDependency {
                address: address.clone(),
                service: service.clone(),
            });
        }
    }
    DependencyKeys {
        name: dependency.name.clone(),
        tcp,
        http,
        exec,
        grpc,
        required: dependency.required,
        interval: dependency.interval,
        timeout: dependency.timeout,
        unhealthy_threshold: dependency.unhealthy_threshold,
    }
}

/// Exactly one check kind.
fn one_kind(schema: &mut Json) {
    schema["oneOf"] = json!([
        {"required": ["tcp"]},
        {"required": ["grpc"]},
        {"required": ["http"]},
        {"required": ["exec"]},
    ]);
}

via_keys!(Dependency => DependencyKeys,
    decode: dependency_from_keys,
    encode: dependency_to_keys,
    schema: one_kind,
);

// === rollback ===

section! {
    /// `supervisor.rollback:` (SPEC §12) — deploy auto-rollback; off
    /// unless set (`rollback: {}` turns it on with the defaults). When a
    /// reload changes the process spec (command, args, env, cwd) and the
    /// new spec fails its start (exits before it is ready or within
    /// `process.backoff.reset_after` of it, misses `startup_timeout`,
    /// fails its health check) or its error rate reaches `error_rate`
    /// within `window`, the last spec that ran ready for `stable_for` is
    /// restored, a `rollback` event says why, and the bad spec is not
    /// tried again until the config changes it again.
    pub struct Rollback {
        /// How long after a new spec starts its failures roll it back.
        #[check(above_zero())]
        window: Duration = Duration::from_secs(120),
        /// Failed tries / tries since the new spec started at or above
        /// this rolls it back; only start failures do when unset.
        #[check(ratio())]
        error_rate: Option<f64> = None,
        /// Not before this many tries.
        #[check(at_least(1))]
        min_requests: u64 = 20,
        /// A spec that ran ready this long is the one a rollback restores.
        #[check(above_zero())]
        stable_for: Duration = Duration::from_secs(30),
    }
}

section! {
    /// `config_rollback:` (SPEC §12) — after a reload of breakwater's own
    /// config, if the share of 5xx replies (injected faults excepted)
    /// reaches `error_rate` within `window`, the previous config is
    /// restored, a `rollback` event says why, and the same config is
    /// refused until the file changes again. Off unless set.
    pub struct ConfigRollback {
        /// How long after a reload its errors roll it back.
        #[check(above_zero())]
        window: Duration = Duration::from_secs(120),
        /// 5xx replies / replies since the reload at or above this rolls
        /// it back.
        #[check(ratio())]
        error_rate: f64,
        /// Not before this many replies.
        #[check(at_least(1))]
        min_requests: u64 = 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_split_into_address_and_path() {
        assert_eq!(
            split_http_url("http://db.local:5432/health?deep=1"),
            Some(("db.local:5432".to_owned(), "/health?deep=1".to_owned()))
        );
        assert_eq!(
            split_http_url("http://127.0.0.1"),
            Some(("127.0.0.1:80".to_owned(), "/".to_owned()))
        );
        assert_eq!(split_http_url("https://x:1/"), None);
        assert_eq!(split_http_url("http://u@x:1/"), None);
        assert_eq!(split_http_url("http://x:0/"), None);
    }
}
