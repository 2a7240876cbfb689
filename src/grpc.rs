//! The gRPC vocabulary breakwater speaks (SPEC §2): status codes, the
//! `grpc-timeout` header, message framing and the standard health check's
//! messages — pure functions over bytes and headers, no I/O.
//!
//! breakwater never decodes a service's messages. It reads what the gRPC
//! protocol puts in HTTP/2 headers and trailers (`content-type`,
//! `grpc-status`, `grpc-timeout`), so that a call's outcome, its deadline
//! and breakwater's own replies are gRPC's, not HTTP's: a breaker counts
//! `grpc-status: 14` inside an HTTP 200 as the failure it is, and a client
//! refused by breakwater sees `UNAVAILABLE`, not `UNKNOWN`. The one
//! protobuf it encodes by hand is `grpc.health.v1` (two fields), so no code
//! generator or protobuf runtime comes into the binary.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A gRPC status code: one of the 17 codes of the gRPC spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u8);

/// Names of the codes, by number, as the config spells them.
const NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// The codes as metric label values, by number.
const LABELS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl Code {
    /// `OK`.
    pub const OK: Code = Code(0);
    /// `CANCELLED`.
    pub const CANCELLED: Code = Code(1);
    /// `UNKNOWN`.
    pub const UNKNOWN: Code = Code(2);
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// `UNIMPLEMENTED`.
    pub const UNIMPLEMENTED: Code = Code(12);
    /// `INTERNAL`.
    pub const INTERNAL: Code = Code(13);
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: Code = Code(14);

    /// Every code, in order.
    pub fn all() -> impl Iterator<Item = Code> {
        (0..17).map(Code)
    }

    /// The code numbered `number`, if there is one.
    pub fn new(number: u32) -> Option<Code> {
        u8::try_from(number)
            .ok()
            .filter(|&n| usize::from(n) < NAMES.len())
            .map(Code)
    }

    /// The code named `name` (`unavailable`, case-insensitive, `-` or `_`).
    pub fn from_name(name: &str) -> Option<Code> {
        let name = name.to_ascii_lowercase().replace('-', "_");
        NAMES
            .iter()
            .position(|known| *known == name)
            .and_then(|n| u8::try_from(n).ok())
            .map(Code)
    }

    /// The code's number.
    pub fn number(self) -> u8 {
        self.0
    }

    /// The code's name as the config spells it (`unavailable`).
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// The code's number as a metric label value (`"14"`).
    pub fn label(self) -> &'static str {
        LABELS[usize::from(self.0)]
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name().to_ascii_uppercase(), self.0)
    }
}

/// A set of codes, copied by value (a route's `grpc_failure_statuses`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeSet(u32);

impl CodeSet {
    /// Whether `code` is in the set.
    pub fn contains(self, code: Code) -> bool {
        self.0 & (1 << code.0) != 0
    }
}

impl FromIterator<Code> for CodeSet {
    fn from_iter<I: IntoIterator<Item = Code>>(codes: I) -> Self {
        CodeSet(codes.into_iter().fold(0, |set, code| set | 1 << code.0))
    }
}

/// Whether a message's `content-type` is gRPC's: `application/grpc`,
/// alone or with a `+format` or `;parameters` suffix.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        let prefix = b"application/grpc";
        value.len() >= prefix.len()
            && value[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(value.get(prefix.len()), None | Some(b'+' | b';'))
    })
}

/// The `grpc-status` in `headers` (trailers, or the headers of a
/// trailers-only response). A value that is not a known code reads as
/// `UNKNOWN`, as gRPC clients read it.
pub fn status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(&GRPC_STATUS)?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .and_then(Code::new)
            .unwrap_or(Code::UNKNOWN),
    )
}

/// The code a gRPC client reads from an HTTP `status` that carries no
/// `grpc-status` (gRPC's "HTTP to gRPC status code mapping").
pub fn from_http_status(status: u16) -> Code {
    match status {
        400 => Code::INTERNAL,
        401 => Code(16),
        403 => Code(7),
        404 => Code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => Code::UNAVAILABLE,
        _ => Code::UNKNOWN,
    }
}

/// Longest value `grpc-timeout` allows: eight digits.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// The duration of a `grpc-timeout` value (1 to 8 digits and a unit: `H`
/// hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds,
/// `n` nanoseconds); `None` when it is malformed.
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let number: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(number * 3600),
        b'M' => Duration::from_secs(number * 60),
        b'S' => Duration::from_secs(number),
        b'm' => Duration::from_millis(number),
        b'u' => Duration::from_micros(number),
        b'n' => Duration::from_nanos(number),
        _ => return None,
    })
}

/// `remaining` as a `grpc-timeout` value, rounded down so the upstream
/// never gets more time than there is: in the finest unit whose count
/// fits in eight digits.
pub fn encode_timeout(remaining: Duration) -> HeaderValue {
    const LIMIT: u128 = 100_000_000;
    let nanos = remaining.as_nanos();
    let (count, unit) = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(scale, unit)| (nanos / scale, unit))
    .find(|(count, _)| *count < LIMIT)
    .unwrap_or((LIMIT - 1, 'H'));
    HeaderValue::from_str(&format!("{count}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian
/// length, the message.
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The standard health check's method path.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest { service }`, framed.
pub fn health_check_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    frame(&message)
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Whether a framed `grpc.health.v1.HealthCheckResponse` says `SERVING`.
/// Anything else — another status, no message, a compressed or malformed
/// one — is not serving.
pub fn health_check_serving(body: &[u8]) -> bool {
    let Some((&0, rest)) = body.split_first() else {
        return false;
    };
    let Some((length, message)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    let Some(message) = message.get(..u32::from_be_bytes(*length) as usize) else {
        return false;
    };
    let mut status = 0; // UNKNOWN when the field is absent
    let mut at = 0;
    while at < message.len() {
        let Some(key) = varint(message, &mut at) else {
            return false;
        };
        let skipped = match key & 7 {
            0 => match varint(message, &mut at) {
                Some(value) if key >> 3 == 1 => {
                    status = value;
                    Some(())
                }
                Some(_) => Some(()),
                None => None,
            },
            1 => skip(message, &mut at, 8),
            2 => varint(message, &mut at).and_then(|n| skip(message, &mut at, n as usize)),
            5 => skip(message, &mut at, 4),
            _ => None,
        };
        if skipped.is_none() {
            return false;
        }
    }
    status == SERVING
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn skip(bytes: &[u8], at: &mut usize, n: usize) -> Option<()> {
    let end = at.checked_add(n).filter(|&end| end <= bytes.len())?;
    *at = end;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(is_grpc(&headers(&[("content-type", grpc)])), "{grpc}");
        }
        for other in [
            "application/grpcx",
            "application/json",
            "application/grpc-web",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", other)])), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn codes_by_number_and_name() {
        assert_eq!(Code::from_name("unavailable"), Some(Code::UNAVAILABLE));
        assert_eq!(
            Code::from_name("DEADLINE-EXCEEDED"),
            Some(Code::DEADLINE_EXCEEDED)
        );
        assert_eq!(Code::from_name("nope"), None);
        assert_eq!(Code::new(16).map(Code::name), Some("unauthenticated"));
        assert_eq!(Code::new(17), None);
        assert_eq!(Code::all().count(), 17);
        assert_eq!(Code::UNAVAILABLE.label(), "14");
        let set: CodeSet = [Code::UNAVAILABLE, Code::INTERNAL].into_iter().collect();
        assert!(set.contains(Code::UNAVAILABLE) && !set.contains(Code::OK));
    }

    #[test]
    fn http_statuses_map_as_grpc_clients_read_them() {
        assert_eq!(from_http_status(503), Code::UNAVAILABLE);
        assert_eq!(from_http_status(429), Code::UNAVAILABLE);
        assert_eq!(from_http_status(404), Code::UNIMPLEMENTED);
        assert_eq!(from_http_status(500), Code::UNKNOWN);
    }

    #[test]
    fn status_reads_unknown_values_as_unknown() {
        assert_eq!(
            status(&headers(&[("grpc-status", "14")])),
            Some(Code::UNAVAILABLE)
        );
        assert_eq!(
            status(&headers(&[("grpc-status", "99")])),
            Some(Code::UNKNOWN)
        );
        assert_eq!(
            status(&headers(&[("grpc-status", "x")])),
            Some(Code::UNKNOWN)
        );
        assert_eq!(status(&HeaderMap::new()), None);
    }

    #[test]
    fn timeouts_in_every_unit() {
        let parse = |text: &str| parse_timeout(&HeaderValue::from_str(text).unwrap());
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "1.5S", "10s", "-1S", " 1S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoded_timeouts_round_down_and_fit_eight_digits() {
        for (remaining, text) in [
            (Duration::from_nanos(5), "5n"),
            (Duration::from_millis(250), "250000u"),
            (Duration::from_micros(99_999_999), "99999999u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(6_000_000_000), "1666666H"),
        ] {
            let encoded = encode_timeout(remaining);
            assert_eq!(encoded, text);
            assert!(parse_timeout(&encoded).unwrap() <= remaining);
        }
        // Rounded down, never up.
        assert_eq!(
            encode_timeout(Duration::from_nanos(99_999_999_999)),
            "99999999u"
        );
        assert_eq!(
            encode_timeout(Duration::from_nanos(100_000_001_999)),
            "100000m"
        );
    }

    #[test]
    fn health_messages() {
        assert_eq!(&health_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("app")[..],
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'p']
        );
        assert!(health_check_serving(&frame(&[0x08, 0x01])));
        assert!(!health_check_serving(&frame(&[0x08, 0x02])));
        assert!(!health_check_serving(&frame(&[])));
        // Unknown fields are skipped.
        assert!(health_check_serving(&frame(&[
            0x12, 0x01, b'x', 0x08, 0x01
        ])));
        // Truncated, compressed or garbage: not serving.
        assert!(!health_check_serving(&[0, 0, 0, 0, 9, 0x08, 0x01]));
        assert!(!health_check_serving(&[1, 0, 0, 0, 2, 0x08, 0x01]));
        assert!(!health_check_serving(&frame(&[0x08])));
        assert!(!health_check_serving(b""));
    }
}
