//! Header hygiene at the proxy boundary (SPEC §2, §11): pure functions over
//! a `HeaderMap`, no I/O, so they are unit-tested and fuzzed directly.
//!
//! Both ways: hop-by-hop headers and every header named in `connection:`
//! are removed, since they describe one connection, not the message.
//! Towards the upstream additionally: `x-breakwater-*` from downstream is
//! dropped (clients never steer the proxy), `x-forwarded-for` gets the peer
//! appended, and `x-forwarded-proto`/`-host` are overwritten unless the
//! listener trusts them.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop (RFC 9110 §7.6.1, plus the legacy ones).
/// `trailer` is not one: it names the fields the trailers will carry, end
/// to end, and hyper sends HTTP/1.1 trailers only for the names it lists.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `x-request-id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Longest `x-request-id` accepted from a client; a longer or non-printable
/// one is replaced by a fresh UUID.
const MAX_REQUEST_ID: usize = 128;

/// What the proxy knows about the downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// Peer address of the client connection.
    pub peer: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The request's `Host` (or `:authority`) as sent, if any.
    pub host: Option<&'a HeaderValue>,
    /// Keep client-supplied `x-forwarded-proto`/`-host`.
    pub trust_forwarded: bool,
}

/// Whether the request asks for a protocol upgrade (e.g. WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| tokens(value).any(|token| token.eq_ignore_ascii_case(b"upgrade")))
}

/// Whether an HTTP/1 request leaves its connection open after the
/// response: HTTP/1.1 unless `connection: close`; HTTP/1.0 only with
/// `connection: keep-alive` (RFC 9112 §9.3).
pub fn keeps_alive(version: http::Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in tokens(value) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version >= http::Version::HTTP_11 || keep_alive)
}

/// The comma-separated tokens of a header value, as bytes. Never via
/// `to_str`, which fails on any byte ≥ 0x80: a value like
/// `upgrade, \xa8` must read the same here as in the framing guard, or
/// the two disagree about what the connection is (found by fuzzing).
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(|token| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// Removes hop-by-hop headers and those named in `connection:`. When
/// `keep_upgrade` is set (an upgrade request or a 101 response), `upgrade`
/// survives and `connection: upgrade` is restored.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in tokens(value) {
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    let upgrade = if keep_upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    for name in &named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // `te` is hop-by-hop too, but `te: trailers` must reach a gRPC upstream:
    // every value goes, and `trailers` alone comes back if it was asked for.
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|value| tokens(value).any(|token| token.eq_ignore_ascii_case(b"trailers")));
    if headers.remove(header::TE).is_some() && wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Prepares downstream request headers for the upstream.
pub fn sanitize_request(headers: &mut HeaderMap, upgrade: bool, downstream: Downstream<'_>) {
    // One pass over the names first: most requests carry no hop-by-hop or
    // x-breakwater-* header, and then the removals by name (a hash and a
    // probe each) are skipped.
    let (hop_by_hop, ours) = headers.keys().fold((false, false), |(hop, ours), name| {
        (
            hop || name == header::TE || HOP_BY_HOP.contains(name),
            ours || name.as_str().starts_with("x-breakwater-"),
        )
    });
    if hop_by_hop {
        strip_hop_by_hop(headers, upgrade);
    }
    if ours {
        drop_breakwater_headers(headers);
    }
    // Room for the x-forwarded-* trio: the map grows once, not per insert.
    headers.reserve(3);

    // The peer's address, formatted on the stack.
    let mut text = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let _ = write!(cursor, "{}", downstream.peer);
    let written = usize::try_from(cursor.position()).unwrap_or(0);
    let peer = &text[..written];
    let forwarded_for = match headers
        .get(&X_FORWARDED_FOR)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
    {
        Some(existing) if !existing.is_empty() => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + peer.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer);
            HeaderValue::from_bytes(&joined)
        }
        _ => HeaderValue::from_bytes(peer),
    };
    match forwarded_for {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        Err(_) => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }

    if !downstream.trust_forwarded || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(downstream.proto),
        );
    }
    if !downstream.trust_forwarded || !headers.contains_key(&X_FORWARDED_HOST) {
        match downstream.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Removes every `x-breakwater-*` header: a client must never be able to
/// look like breakwater to the upstream, or steer breakwater itself.
pub fn drop_breakwater_headers(headers: &mut HeaderMap) {
    let present = headers
        .keys()
        .any(|name| name.as_str().starts_with("x-breakwater-"));
    if !present {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-breakwater-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// The client's `x-request-id` if it is usable, else `None`.
pub fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&REQUEST_ID).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let usable = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes.iter().all(|b| b.is_ascii_graphic());
    usable.then(|| value.clone())
}

/// A fresh UUID v4 request id.
pub fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_follows_version_and_connection_tokens() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONNECTION, HeaderValue::from_static(value));
            headers
        };
        let none = HeaderMap::new();
        assert!(keeps_alive(http::Version::HTTP_11, &none));
        assert!(!keeps_alive(http::Version::HTTP_11, &with("Close")));
        assert!(!keeps_alive(
            http::Version::HTTP_11,
            &with("keep-alive, close")
        ));
        assert!(!keeps_alive(http::Version::HTTP_10, &none));
        assert!(keeps_alive(http::Version::HTTP_10, &with("Keep-Alive")));
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    static HOST: HeaderValue = HeaderValue::from_static("shop.example");

    fn downstream() -> Downstream<'static> {
        Downstream {
            peer: "10.1.2.3".parse().unwrap(),
            proto: "http",
            host: Some(&HOST),
            trust_forwarded: false,
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut headers = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers() {
        let mut headers = map(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-breakwater-reason", "breaker-open"),
            ("X-Breakwater-Anything", "x"),
        ]);
        sanitize_request(&mut headers, false, downstream());
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example");
        assert!(!headers
            .keys()
            .any(|name| name.as_str().starts_with("x-breakwater-")));

        let mut trusted = map(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "front.example"),
        ]);
        sanitize_request(
            &mut trusted,
            false,
            Downstream {
                trust_forwarded: true,
                ..downstream()
            },
        );
        assert_eq!(trusted["x-forwarded-proto"], "https");
        assert_eq!(trusted["x-forwarded-host"], "front.example");
        assert_eq!(trusted["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn request_ids() {
        assert_eq!(
            client_request_id(&map(&[("x-request-id", "abc-123")])).unwrap(),
            "abc-123"
        );
        assert!(client_request_id(&map(&[("x-request-id", "has space")])).is_none());
        assert!(client_request_id(&map(&[("x-request-id", &"a".repeat(200))])).is_none());
        assert!(client_request_id(&map(&[("x-request-id", "a"), ("x-request-id", "b")])).is_none());
        let fresh = new_request_id();
        assert_eq!(fresh.len(), 36);
        assert_ne!(fresh, new_request_id());
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn obs_text_in_connection_does_not_hide_an_upgrade() {
        let headers = map(&[("upgrade", b"websocket"), ("connection", b"upgrade, \xa8")]);
        assert!(is_upgrade(&headers));
    }

    #[test]
    fn obs_text_in_connection_does_not_save_named_headers() {
        let mut headers = map(&[("connection", b"\xa6,et"), ("et", b"x")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("et").is_none());
    }

    #[test]
    fn every_te_value_is_considered() {
        let mut headers = map(&[("te", b"trailers"), ("te", b"gzip")]);
        strip_hop_by_hop(&mut headers, false);
        let values: Vec<&HeaderValue> = headers.get_all(header::TE).iter().collect();
        assert_eq!(values, [&HeaderValue::from_static("trailers")]);
        let mut only_gzip = map(&[("te", b"gzip")]);
        strip_hop_by_hop(&mut only_gzip, false);
        assert!(only_gzip.get(header::TE).is_none());
    }
}
