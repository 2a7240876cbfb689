//! The checks behind breakwater's fuzz targets, as plain functions of bytes.
//!
//! Each `fuzz/fuzz_targets/<name>.rs` calls the function of the same name
//! here, and `tests/fuzz_corpus.rs` runs every file of `fuzz/corpus/<name>/`
//! and `fuzz/regressions/<name>/` through it on stable, so CI replays what
//! the fuzzer learnt. A check returns for an acceptable input and panics
//! (`assert!`) on a bug: libFuzzer records the panic as a crash, the test as
//! a failure.
//!
//! A check does more than "must not panic": each states the property of
//! SPEC §11 that the function under test exists for, and asserts it:
//!
//! - [`config_loader`]: loading never panics, is deterministic, an error
//!   names at least one issue, and a config it accepts only holds route
//!   values the route matcher can compile.
//! - [`route_matcher`]: the compiled matcher agrees with a direct reading of
//!   the `match:` block, and the host breakwater routes on is the one the
//!   request names.
//! - [`header_sanitiser`]: after sanitising, no hop-by-hop header, no header
//!   named in `connection:` and no `x-breakwater-*` header is left,
//!   `x-forwarded-*` follow the rules, every other header is untouched, and
//!   the proxy and the framing guard agree on what is an upgrade.
//! - [`framing`]: the verdict on a byte stream does not depend on how TCP
//!   cut it into reads.
//!
//! This file uses only `breakwater`, `http` and `std`, so it compiles both
//! in the fuzz crate (nightly, libFuzzer) and in the main crate's tests
//! (stable). Input formats are line-based so that seeds can be written by
//! hand; each function documents its own.

use std::net::{IpAddr, Ipv4Addr};

use breakwater::config::{self, Overrides, RouteMatch};
use breakwater::proxy::framing::{check_head, Framer, HeadLimits, Phase, Violation};
use breakwater::proxy::headers::{self, Downstream};
use breakwater::proxy::route::{self, Matcher, RequestFacts};
use http::header::{self as names, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

/// A check: returns for an acceptable input, panics on a bug.
pub type Check = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/`) and check.
pub const TARGETS: [(&str, Check); 4] = [
    ("config_loader", config_loader),
    ("route_matcher", route_matcher),
    ("header_sanitiser", header_sanitiser),
    ("framing", framing),
];

/// Splits an input into `\n`-separated lines (a `\r` stays in the line).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&byte| byte == b'\n')
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `name: value` as an HTTP/1 parser would read it, or `None` if the name
/// or value is not one `http` accepts (such a header never reaches
/// breakwater's handlers).
fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(trim_ows(&line[colon + 1..])).ok()?;
    Some((name, value))
}

// === config_loader ===

/// The config loader on arbitrary text (bytes converted lossily to UTF-8).
///
/// It may refuse the text, but never panics; the same text gives the same
/// verdict; a refusal names at least one issue and renders; an accepted
/// config's `match:` blocks hold only methods and headers that
/// [`Matcher::new`] can compile (it silently skips anything else, trusting
/// the loader to have refused it).
pub fn config_loader(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = config::load_str(&text, "fuzz", &Overrides::default());
    let second = config::load_str(&text, "fuzz", &Overrides::default());
    match (&first, &second) {
        (Ok(first), Ok(second)) => assert_eq!(first, second, "loading is not deterministic"),
        (Err(first), Err(second)) => {
            assert!(!first.issues.is_empty(), "a refusal without an issue");
            assert_eq!(
                first.to_string(),
                second.to_string(),
                "loading is not deterministic"
            );
        }
        _ => panic!("the same text was accepted once and refused once"),
    }
    let Ok(config) = first else {
        return;
    };
    for listener in &config.listeners {
        for route in &listener.routes {
            let matcher = &route.matcher;
            for method in &matcher.methods {
                assert!(
                    Method::from_bytes(method.as_bytes()).is_ok(),
                    "the loader accepted method {method:?} the matcher cannot compile"
                );
            }
            for (name, value) in &matcher.headers {
                assert!(
                    HeaderName::from_bytes(name.as_bytes()).is_ok()
                        && HeaderValue::from_str(value).is_ok(),
                    "the loader accepted header {name:?}: {value:?} the matcher cannot compile"
                );
            }
            let _ = Matcher::new(matcher);
        }
    }
}

// === route_matcher ===

/// A `match:` block and a request, one field per line:
///
/// ```text
/// host            `~` for none
/// path_prefix     `~` for none
/// path_exact      `~` for none
/// methods         separated by spaces
/// headers         name=value pairs separated by `&`
/// request method
/// request target  origin- or absolute-form
/// name: value     request headers, one per line, to the end
/// ```
///
/// The matcher is always compiled; matching runs when the method and
/// target parse (a request hyper would not parse never reaches routing).
/// The matcher's answer must equal a direct reading of the block (SPEC §2:
/// every condition given must hold), and [`route::request_host`] must
/// return the target's host, else the `Host` header without its port.
pub fn route_matcher(data: &[u8]) {
    let mut fields = lines(data);
    let mut optional = || {
        let line = fields.next().unwrap_or(&b"~"[..]);
        (line != b"~").then(|| String::from_utf8_lossy(line).into_owned())
    };
    let host = optional();
    let path_prefix = optional();
    let path_exact = optional();
    let methods = fields
        .next()
        .unwrap_or_default()
        .split(|&byte| byte == b' ')
        .filter(|method| !method.is_empty())
        .map(|method| String::from_utf8_lossy(method).into_owned())
        .collect();
    let match_headers = fields
        .next()
        .unwrap_or_default()
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                Some(equals) => (&pair[..equals], &pair[equals + 1..]),
                None => (pair, &b""[..]),
            };
            (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect();
    let block = RouteMatch {
        host,
        path_prefix,
        path_exact,
        methods,
        headers: match_headers,
        port: None,
    };
    let matcher = Matcher::new(&block);

    let (Some(method), Some(target)) = (fields.next(), fields.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else {
        return;
    };
    let mut request_headers = HeaderMap::new();
    for (name, value) in fields.filter_map(header_line) {
        request_headers.append(name, value);
    }

    check_request_host(&uri, &request_headers);
    let facts = RequestFacts::new(&method, &uri, &request_headers);
    let matched = matcher.matches(&facts);
    assert_eq!(
        matched,
        expected_match(&block, &facts),
        "matcher disagrees with the match block {block:?} on {method} {uri} {request_headers:?}"
    );
    assert!(
        Matcher::new(&RouteMatch::default()).matches(&facts),
        "an empty match block must match every request"
    );
    assert_eq!(
        route::select([&matcher], &facts),
        matched.then_some(0),
        "select disagrees with matches"
    );
}

/// SPEC §2 read directly: every condition given must hold. Methods and
/// headers that are not valid HTTP are left out, as the compiled matcher
/// does (the loader refuses them, see [`config_loader`]).
fn expected_match(block: &RouteMatch, request: &RequestFacts<'_>) -> bool {
    let path_ok = match (&block.path_exact, &block.path_prefix) {
        (Some(exact), _) => request.path == exact,
        // `/` is every path, including `*` of `OPTIONS *`.
        (None, Some(prefix)) => prefix == "/" || request.path.starts_with(prefix.as_str()),
        (None, None) => true,
    };
    let methods: Vec<Method> = block
        .methods
        .iter()
        .filter_map(|method| Method::from_bytes(method.as_bytes()).ok())
        .collect();
    let method_ok = methods.is_empty() || methods.contains(request.method);
    let host_ok = match (&block.host, request.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(pattern), Some(host)) => match pattern.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => {
                host.len() > suffix.len()
                    && host
                        .to_ascii_lowercase()
                        .ends_with(&suffix.to_ascii_lowercase())
            }
            _ => host.eq_ignore_ascii_case(pattern),
        },
    };
    let headers_ok = block.headers.iter().all(|(name, value)| {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return true;
        };
        request
            .headers
            .get_all(&name)
            .iter()
            .any(|candidate| candidate.as_bytes() == value.as_bytes())
    });
    let port_ok = block.port.is_none_or(|port| request.port == Some(port));
    path_ok && method_ok && host_ok && headers_ok && port_ok
}

/// The host routing uses is the target's host if it has one, else the
/// first `Host` header with at most a `:port` (digits) taken off.
fn check_request_host(uri: &Uri, headers: &HeaderMap) {
    let host = route::request_host(uri, headers);
    if let Some(authority_host) = uri.host() {
        assert_eq!(host, Some(authority_host), "the target's host must win");
        return;
    }
    let Some(header) = headers
        .get(names::HOST)
        .and_then(|value| value.to_str().ok())
    else {
        assert_eq!(host, None, "a host out of nowhere");
        return;
    };
    let Some(host) = host else {
        panic!("Host {header:?} ignored");
    };
    let rest = header
        .strip_prefix(host)
        .unwrap_or_else(|| panic!("{host:?} is not a prefix of Host {header:?}"));
    let bracketed = host.starts_with('[') && host.ends_with(']');
    let port = rest.strip_prefix(':');
    assert!(
        rest.is_empty()
            || port.is_some_and(|port| port.bytes().all(|byte| byte.is_ascii_digit()))
            || bracketed,
        "Host {header:?} routed as {host:?}"
    );
}

// === header_sanitiser ===

/// Downstream request headers and how they arrived:
///
/// ```text
/// upgrade trust peer=<ip> host=<value>   options, any subset, any order
/// name: value                            headers, one per line, to the end
/// ```
///
/// `upgrade` is the flag passed to [`headers::sanitize_request`] and
/// [`headers::strip_hop_by_hop`]; `trust` is `trust_forwarded`; the peer
/// defaults to 10.1.2.3.
pub fn header_sanitiser(data: &[u8]) {
    let mut fields = lines(data);
    let mut upgrade = false;
    let mut trust_forwarded = false;
    let mut peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let mut host = None;
    for option in fields
        .next()
        .unwrap_or_default()
        .split(|&byte| byte == b' ')
    {
        match option {
            b"upgrade" => upgrade = true,
            b"trust" => trust_forwarded = true,
            _ => {
                if let Some(address) = option.strip_prefix(b"peer=") {
                    if let Some(address) = std::str::from_utf8(address)
                        .ok()
                        .and_then(|text| text.parse().ok())
                    {
                        peer = address;
                    }
                } else if let Some(value) = option.strip_prefix(b"host=") {
                    host = HeaderValue::from_bytes(value).ok();
                }
            }
        }
    }
    let mut original = HeaderMap::new();
    for (name, value) in fields.filter_map(header_line) {
        original.append(name, value);
    }

    check_upgrade_agreement(&original);
    check_request_id(&original);

    let mut stripped = original.clone();
    headers::strip_hop_by_hop(&mut stripped, upgrade);
    check_hop_by_hop_gone(&original, &stripped, upgrade);
    let mut twice = stripped.clone();
    headers::strip_hop_by_hop(&mut twice, upgrade);
    assert_eq!(twice, stripped, "strip_hop_by_hop is not idempotent");

    let mut sanitised = original.clone();
    let downstream = Downstream {
        peer,
        proto: "http",
        host: host.as_ref(),
        trust_forwarded,
    };
    headers::sanitize_request(&mut sanitised, upgrade, downstream);
    check_hop_by_hop_gone(&original, &sanitised, upgrade);
    check_sanitised(&original, &sanitised, downstream);
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never cross the proxy, except
/// `upgrade`/`connection` when an upgrade is forwarded.
/// `trailer` is not one (RFC 9110 §6.6.2): it names the trailer fields end
/// to end, and HTTP/1.1 trailers only pass when it does.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// The headers named in `connection:`: its comma-separated tokens, read
/// byte-wise (RFC 9110 §7.6.1), that are header names.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(names::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|token| HeaderName::from_bytes(trim_ows(token)).ok())
        .collect()
}

fn check_hop_by_hop_gone(original: &HeaderMap, after: &HeaderMap, upgrade: bool) {
    let kept_upgrade = upgrade && original.contains_key(names::UPGRADE);
    for name in HOP_BY_HOP {
        let kept = kept_upgrade && (name == "upgrade" || name == "connection");
        assert!(
            kept || !after.contains_key(name),
            "hop-by-hop {name:?} survived (upgrade flag {upgrade}): {after:?}"
        );
    }
    if kept_upgrade {
        let connection: Vec<&HeaderValue> = after.get_all(names::CONNECTION).iter().collect();
        assert_eq!(
            connection,
            ["upgrade"],
            "an upgrade keeps only `connection: upgrade`"
        );
        let upgrade_values: Vec<&HeaderValue> = after.get_all(names::UPGRADE).iter().collect();
        assert_eq!(
            upgrade_values,
            original.get(names::UPGRADE).into_iter().collect::<Vec<_>>(),
            "an upgrade keeps the client's first `upgrade` value"
        );
    }
    for value in after.get_all(names::TE) {
        assert!(
            value.as_bytes().eq_ignore_ascii_case(b"trailers"),
            "hop-by-hop `te: {value:?}` survived; only `te: trailers` may: {after:?}"
        );
    }
    for name in connection_named(original) {
        let restored = name.as_str().starts_with("x-forwarded-")
            || (kept_upgrade && (name == names::UPGRADE || name == names::CONNECTION));
        assert!(
            restored || !after.contains_key(&name),
            "{name:?} is named in `connection:` but survived: {original:?} -> {after:?}"
        );
    }
}

fn check_sanitised(original: &HeaderMap, after: &HeaderMap, downstream: Downstream<'_>) {
    for name in after.keys() {
        assert!(
            !name.as_str().starts_with("x-breakwater-"),
            "{name:?} from downstream reached the upstream"
        );
    }
    let forwarded_for: Vec<&HeaderValue> = after.get_all("x-forwarded-for").iter().collect();
    assert_eq!(forwarded_for.len(), 1, "one x-forwarded-for: {after:?}");
    assert!(
        forwarded_for[0]
            .as_bytes()
            .ends_with(downstream.peer.to_string().as_bytes()),
        "x-forwarded-for {:?} does not end with the peer {}",
        forwarded_for[0],
        downstream.peer
    );
    if !downstream.trust_forwarded {
        let proto: Vec<&HeaderValue> = after.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(
            proto,
            [downstream.proto],
            "x-forwarded-proto not overwritten"
        );
        let forwarded_host: Vec<&HeaderValue> = after.get_all("x-forwarded-host").iter().collect();
        assert_eq!(
            forwarded_host,
            downstream.host.into_iter().collect::<Vec<_>>(),
            "x-forwarded-host not overwritten"
        );
    } else {
        assert!(after.contains_key("x-forwarded-proto"));
    }
    // Nothing else is touched.
    let named = connection_named(original);
    for name in original.keys() {
        let managed = HOP_BY_HOP.contains(&name.as_str())
            || name == names::TE
            || name.as_str().starts_with("x-breakwater-")
            || name.as_str().starts_with("x-forwarded-")
            || named.contains(name);
        if !managed {
            assert!(
                original.get_all(name).iter().eq(after.get_all(name).iter()),
                "{name:?} changed on the way through"
            );
        }
    }
}

/// The framing guard stops framing a connection after an upgrade request
/// and the proxy closes it unless the upgrade happens (`proxy/service.rs`),
/// so the two must agree on which requests are upgrades: a request the
/// guard takes for one and the proxy does not leaves a kept-alive
/// connection nobody frames.
fn check_upgrade_agreement(original: &HeaderMap) {
    if !original.contains_key(names::UPGRADE) && !original.contains_key(names::CONNECTION) {
        return;
    }
    let mut head = b"GET / HTTP/1.1\r\nhost: fuzz\r\n".to_vec();
    for name in [names::UPGRADE, names::CONNECTION] {
        for value in original.get_all(&name) {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    let limits = HeadLimits {
        max_header_bytes: usize::MAX,
        max_headers: usize::MAX,
        ..HeadLimits::default()
    };
    if let Ok(checked) = check_head(&head, &limits) {
        assert_eq!(
            checked.upgrade,
            headers::is_upgrade(original),
            "framing guard and proxy disagree on whether {original:?} is an upgrade"
        );
    }
}

fn check_request_id(original: &HeaderMap) {
    let values: Vec<&HeaderValue> = original.get_all("x-request-id").iter().collect();
    let usable = match values[..] {
        [value] => {
            let bytes = value.as_bytes();
            (1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
        }
        _ => false,
    };
    let id = headers::client_request_id(original);
    assert_eq!(id.is_some(), usable, "request id {values:?} -> {id:?}");
    if let Some(id) = id {
        assert_eq!(&id, values[0]);
    }
}

// === framing ===

/// Tight limits, so that short inputs reach every size check.
const TIGHT: HeadLimits = HeadLimits {
    max_request_line: 64,
    max_header_bytes: 256,
    max_headers: 8,
    max_body_bytes: Some(64),
};

/// What a framer made of a stream.
#[derive(Debug, PartialEq)]
struct Verdict {
    result: Result<(), Violation>,
    n_heads: u64,
    /// Where the stream ended up; `None` after a refusal, when the
    /// connection is closed and the framer is never fed again.
    phase: Option<Phase>,
}

fn frame<'a>(limits: HeadLimits, reads: impl IntoIterator<Item = &'a [u8]>) -> Verdict {
    let mut framer = Framer::new(limits);
    for read in reads {
        if let Err(violation) = framer.feed(read) {
            return Verdict {
                result: Err(violation),
                n_heads: framer.n_heads,
                phase: None,
            };
        }
    }
    Verdict {
        result: Ok(()),
        n_heads: framer.n_heads,
        phase: Some(framer.phase()),
    }
}

/// Cut points derived from the input itself, so the fuzzer steers them
/// without a header that would spoil hand-written seeds.
fn cuts(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    let mut cuts: Vec<usize> = (0..n.min(8))
        .map(|i| (usize::from(data[i]) * 257 + usize::from(data[n - 1 - i]) * 31 + i) % (n + 1))
        .filter(|&cut| cut > 0 && cut < n)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts {
        pieces.push(&data[from..cut]);
        from = cut;
    }
    pieces.push(&data[from..]);
    pieces
}

/// A client's byte stream (pipelined requests, bodies, anything).
///
/// Fed to a [`Framer`] whole, in pieces cut where the input's own bytes
/// say, and one byte at a time, with default and with tight limits: the
/// verdict (accepted or the violation, heads seen, and where the stream
/// ended) must be the same every way. [`check_head`] also runs on the raw
/// input, and must accept a single complete head the framer accepted.
pub fn framing(data: &[u8]) {
    for limits in [HeadLimits::default(), TIGHT] {
        let whole = frame(limits, [data]);
        if let Err(violation) = whole.result {
            assert!([400, 413, 414, 431, 501, 505].contains(&violation.status()));
            assert!(!violation.reason().is_empty());
        }
        let split = frame(limits, pieces(data, &cuts(data)));
        assert_eq!(
            whole,
            split,
            "framing depends on where reads end ({:?})",
            cuts(data)
        );
        if data.len() <= 4096 {
            let bytewise = frame(limits, data.chunks(1));
            assert_eq!(
                whole, bytewise,
                "framing depends on where reads end (byte by byte)"
            );
        }

        let raw = check_head(data, &limits);
        let single_head = !data.starts_with(b"\r")
            && !data.starts_with(b"\n")
            && data.windows(4).position(|window| window == b"\r\n\r\n")
                == data.len().checked_sub(4);
        if single_head && whole.result.is_ok() && whole.n_heads == 1 {
            assert!(
                raw.is_ok(),
                "the framer accepted a head check_head refuses: {raw:?}"
            );
        }
    }
}
