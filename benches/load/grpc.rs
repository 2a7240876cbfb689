//! The gRPC part's wire: one unary method, its message, and the checks the
//! generator makes on every reply.
//!
//! The method is `/bench.Echo/Unary`: the request is one
//! `google.protobuf.StringValue` (prost's built-in `String`, so no
//! protobuf compiler), the reply is the same value back. The generator
//! sends a body framed once ([`request_body`]) and counts a call as a
//! success only when the reply is HTTP 200, ends with `grpc-status: 0`, and
//! carries exactly one uncompressed message that decodes to the text sent
//! ([`check_reply`]). The upstream that answers it is in `upstream.rs`.

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;

/// The one method called: `/package.Service/Method`.
pub const METHOD: &str = "/bench.Echo/Unary";

/// The text of every request, echoed back by the upstream (a small
/// message, like a typical unary call's: 23 bytes encoded, 28 framed).
pub const TEXT: &str = "breakwater bench ping";

/// The length-prefixed message header: compressed flag and 4-byte length.
const PREFIX: usize = 5;

/// `TEXT` as one gRPC message: flag 0 (uncompressed), big-endian length,
/// the encoded `StringValue`.
pub fn request_body() -> Bytes {
    let message = TEXT.to_owned().encode_to_vec();
    let mut body = BytesMut::with_capacity(PREFIX + message.len());
    body.put_u8(0);
    // A 21-byte string: its encoding is far below u32::MAX.
    body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    body.put_slice(&message);
    body.freeze()
}

/// The call's `grpc-status`: from the trailers, or from the headers of a
/// trailers-only reply. `None` when neither has one (not a gRPC reply).
pub fn status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    trailers
        .and_then(|trailers| trailers.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Checks a reply body of a call that ended OK: exactly one uncompressed
/// message, and it is the echo of [`TEXT`].
pub fn check_reply(body: &[u8]) -> Result<()> {
    if body.len() < PREFIX {
        bail!("reply of {} bytes: no complete message", body.len());
    }
    if body[0] != 0 {
        bail!("reply message compressed (flag {}): not asked for", body[0]);
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != PREFIX + length {
        bail!(
            "reply of {} bytes for one message of {length}",
            body.len() - PREFIX
        );
    }
    let text = String::decode(&body[PREFIX..]).context("decoding the reply message")?;
    if text != TEXT {
        bail!("reply {text:?} is not the echo of {TEXT:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_passes_as_its_own_echo() {
        let body = request_body();
        assert_eq!(body.len(), PREFIX + 2 + TEXT.len());
        assert!(check_reply(&body).is_ok());
    }

    #[test]
    fn a_wrong_reply_fails() {
        let body = request_body();
        assert!(check_reply(&body[..body.len() - 1]).is_err());
        assert!(check_reply(&[]).is_err());
        let mut other = body.to_vec();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert!(check_reply(&other).is_err());
        other = body.to_vec();
        other[0] = 1;
        assert!(check_reply(&other).is_err());
    }

    /// The generator against the bench's own gRPC upstream: the echo
    /// counts as OK, a method the upstream lacks as a failed call.
    #[tokio::test]
    async fn the_generator_counts_only_ok_echoes_as_successes() {
        use std::time::Duration;

        use crate::gen::{self, Answer, Endpoint, Proto};

        let upstream = crate::upstream::start_grpc().await.unwrap();
        let authority = upstream.to_string();
        let echo = Endpoint::new(upstream, &authority, METHOD).unwrap();
        let missing = Endpoint::new(upstream, &authority, "/bench.Echo/Missing").unwrap();
        assert_eq!(
            gen::probe(&echo, Proto::Grpc).await.unwrap(),
            Answer::Grpc(0)
        );
        // UNIMPLEMENTED, trailers-only.
        assert_eq!(
            gen::probe(&missing, Proto::Grpc).await.unwrap(),
            Answer::Grpc(12)
        );
        let window = Duration::from_millis(200);
        let ok = gen::closed_loop(&echo, Proto::Grpc, 1, 4, Duration::ZERO, window)
            .await
            .unwrap();
        assert!(ok.requests > 0);
        assert_eq!((ok.errors, ok.non_2xx, ok.grpc_not_ok), (0, 0, 0));
        let failing = gen::closed_loop(&missing, Proto::Grpc, 1, 4, Duration::ZERO, window)
            .await
            .unwrap();
        assert!(failing.requests > 0);
        assert_eq!(failing.grpc_not_ok, failing.requests);
    }

    #[test]
    fn status_comes_from_trailers_or_a_trailers_only_reply() {
        let mut headers = HeaderMap::new();
        let mut trailers = HeaderMap::new();
        assert_eq!(status(&headers, Some(&trailers)), None);
        trailers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(status(&headers, Some(&trailers)), Some(0));
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(status(&headers, None), Some(14));
    }
}
