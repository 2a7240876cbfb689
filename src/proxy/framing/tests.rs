use proptest::prelude::*;

use super::*;

fn limits() -> HeadLimits {
    HeadLimits {
        max_body_bytes: Some(1 << 20),
        ..HeadLimits::default()
    }
}

fn feed_all(bytes: &[u8]) -> Result<Framer, Violation> {
    let mut framer = Framer::new(limits());
    framer.feed(bytes)?;
    Ok(framer)
}

/// Feeds `bytes` split at every position into two reads, and byte by byte;
/// every split must give the same verdict as one read.
fn verdict_is_split_invariant(bytes: &[u8]) -> Result<(u64, Phase), Violation> {
    let whole = feed_all(bytes).map(|framer| (framer.n_heads, framer.phase()));
    for split in 0..=bytes.len() {
        let mut framer = Framer::new(limits());
        let result = framer
            .feed(&bytes[..split])
            .and_then(|()| framer.feed(&bytes[split..]));
        assert_eq!(
            result.map(|()| (framer.n_heads, framer.phase())),
            whole,
            "split at {split} of {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut framer = Framer::new(limits());
    let bytewise = bytes
        .iter()
        .try_for_each(|byte| framer.feed(std::slice::from_ref(byte)));
    assert_eq!(
        bytewise.map(|()| (framer.n_heads, framer.phase())),
        whole,
        "byte by byte"
    );
    whole
}

#[test]
fn plain_requests_pass() {
    assert_eq!(
        verdict_is_split_invariant(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok((1, Phase::Idle))
    );
    assert_eq!(
        verdict_is_split_invariant(b"GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok((1, Phase::Idle))
    );
    assert_eq!(
        verdict_is_split_invariant(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok((1, Phase::Idle))
    );
    assert_eq!(
        verdict_is_split_invariant(b"GET / HTTP/1.0\r\n\r\n"),
        Ok((1, Phase::Idle))
    );
    // Leading blank lines are tolerated.
    assert_eq!(
        verdict_is_split_invariant(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok((1, Phase::Idle))
    );
}

#[test]
fn bodies_are_followed_to_the_next_head() {
    let stream = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n\
GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(verdict_is_split_invariant(stream), Ok((3, Phase::Idle)));
    // A body that looks like a smuggled request is just body bytes.
    let hidden = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(verdict_is_split_invariant(hidden), Ok((1, Phase::Idle)));
    assert_eq!(
        verdict_is_split_invariant(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhal"),
        Ok((1, Phase::Body))
    );
    assert_eq!(
        verdict_is_split_invariant(b"GET / HTTP/1.1\r\nHo"),
        Ok((0, Phase::Head))
    );
}

#[test]
fn smuggling_vectors_are_refused() {
    let cases: &[(&[u8], Violation)] = &[
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::ContentLengthWithTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", Violation::ContentLengthWithTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", Violation::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\n", Violation::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", Violation::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Violation::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Violation::TransferEncodingNotChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Violation::TransferEncodingNotChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::TransferEncodingNotChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Violation::TransferEncodingNotChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xyz, chunked\r\n\r\n", Violation::UnknownTransferCoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Violation::UnknownTransferCoding),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::TransferEncodingInHttp10),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Violation::HeaderWhitespace),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", Violation::ObsFold),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A\x01: 1\r\n\r\n", Violation::InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", Violation::InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", Violation::InvalidHeaderValue),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", Violation::BareLineFeed),
        (b"GET / HTTP/1.1\nHost: a\n\n", Violation::BareLineFeed),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Violation::BareLineFeed),
        (b"GET / HTTP/1.1\r\n\r\n", Violation::BadHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Violation::BadHost),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Violation::ConnectNotSupported),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Violation::UnsupportedVersion),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Violation::UnsupportedVersion),
        (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", Violation::BadRequestLine),
        (b"GET a HTTP/1.1\r\nHost: a\r\n\r\n", Violation::BadRequestLine),
        (b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", Violation::BadRequestLine),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", Violation::BodyTooLarge),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            verdict_is_split_invariant(bytes),
            Err(*expected),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn bad_chunks_are_refused() {
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let cases: &[(&[u8], Violation)] = &[
        (b"x\r\n", Violation::BadChunk),
        (b"3;\x00\r\nabc\r\n0\r\n\r\n", Violation::BadChunk),
        (b"3\nabc\r\n0\r\n\r\n", Violation::BadChunk),
        (b"3\r\nabcX\r\n0\r\n\r\n", Violation::BadChunk),
        (b"1000000000000000\r\n", Violation::BadChunk),
        (b"100001\r\n", Violation::BodyTooLarge),
        (b"0\r\nX: a\n\r\n", Violation::BareLineFeed),
        (b"0\r\n folded\r\n\r\n", Violation::ObsFold),
        // The chunk-size line to RFC 9112's grammar: only `;`-extensions
        // may follow the size (hyper fails on these mid-forward otherwise).
        (b"5 x\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5\tx\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5 \r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5;\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5;a=\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5;a b\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
        (b"5;a=b,c\r\nhello\r\n0\r\n\r\n", Violation::BadChunk),
    ];
    for (body, expected) in cases {
        let mut stream = head.clone();
        stream.extend_from_slice(body);
        assert_eq!(
            verdict_is_split_invariant(&stream),
            Err(*expected),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn chunk_extensions_follow_the_grammar() {
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let lines: &[&[u8]] = &[
        b"5;a",
        b"5;a=b",
        b"5 ; a = b",
        b"5;a=\"x y;\\\"z\"",
        b"5;a=b;c;d=\"\"",
        b"5\t;a\t=\tb ",
    ];
    for line in lines {
        let mut stream = head.clone();
        stream.extend_from_slice(line);
        stream.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            verdict_is_split_invariant(&stream),
            Ok((1, Phase::Idle)),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn sizes_are_bounded() {
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(
        feed_all(long_line.as_bytes()).err(),
        Some(Violation::RequestLineTooLong)
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        feed_all(many.as_bytes()).err(),
        Some(Violation::TooManyHeaders)
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(61 * 1024)
    );
    assert_eq!(
        feed_all(big.as_bytes()).err(),
        Some(Violation::HeaderTooLarge)
    );
    // The verdict comes as soon as the limit is crossed, not at the end.
    let mut framer = Framer::new(limits());
    assert_eq!(
        framer.feed(format!("GET /{}", "a".repeat(8200)).as_bytes()),
        Err(Violation::RequestLineTooLong)
    );
}

#[test]
fn h2c_preface_and_upgrades_leave_http1_framing() {
    let mut framer = Framer::new(limits());
    framer.feed(b"PRI * HTTP/2.0\r\n").unwrap();
    framer.feed(b"\r\nSM\r\n\r\n\x00\x00garbage").unwrap();
    assert_eq!(framer.phase(), Phase::Passthrough);
    // A preface that is not one is framed (and refused) as HTTP/1.
    assert_eq!(
        feed_all(b"PRI * HTTP/2.0\r\nHost: a\r\n\r\n").err(),
        Some(Violation::UnsupportedVersion)
    );
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85binary";
    assert_eq!(
        verdict_is_split_invariant(upgrade),
        Ok((1, Phase::Passthrough))
    );
}

#[test]
fn every_violation_has_a_status_and_reason() {
    for violation in Violation::ALL {
        assert!(matches!(
            violation.status(),
            400 | 413 | 414 | 431 | 501 | 505
        ));
        assert!(violation
            .reason()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
    }
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let body = proptest::collection::vec(any::<u8>(), 0..64);
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        "[a-z/]{0,12}",
        body,
        any::<bool>(),
    )
        .prop_map(|(method, path, body, chunked)| {
            let mut out = format!("{method} /{path} HTTP/1.1\r\nHost: h\r\n").into_bytes();
            if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for part in body.chunks(7) {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            out
        })
}

proptest! {
    /// Any sequence of well-formed requests, cut into reads anywhere, is
    /// followed exactly: every head counted, ending between requests.
    #[test]
    fn well_formed_streams_are_followed_exactly(requests in proptest::collection::vec(request(), 1..5), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let stream: Vec<u8> = requests.concat();
        let mut positions: Vec<usize> = cuts.into_iter().map(|cut| cut % (stream.len() + 1)).collect();
        positions.sort_unstable();
        let mut framer = Framer::new(limits());
        let mut from = 0;
        for position in positions.into_iter().chain([stream.len()]) {
            framer.feed(&stream[from..position]).unwrap();
            from = position;
        }
        prop_assert_eq!(framer.n_heads, requests.len() as u64);
        prop_assert_eq!(framer.phase(), Phase::Idle);
    }

    /// Arbitrary bytes never panic the framer.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framer = Framer::new(limits());
        let _ = framer.feed(&bytes);
        let _ = check_head(&bytes, &limits());
    }
}
