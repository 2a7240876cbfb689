//! HTTP/1 framing checks on raw bytes (SPEC §11), before hyper sees them.
//!
//! A sidecar fronts every service in a fleet, so a request that two HTTP
//! parsers frame differently is a fleet-wide smuggling hole. hyper is
//! lenient in places (it has accepted `content-length` with
//! `transfer-encoding`, bare-LF line endings, unknown transfer codings
//! before `chunked`), so breakwater frames every HTTP/1 request itself and
//! only lets through what every parser reads the same way:
//!
//! - lines end in CRLF; no obs-fold; no whitespace before a header colon;
//!   header names are tokens and values have no control characters;
//! - exactly one `Host` in HTTP/1.1; an origin-, absolute- or `*`-form
//!   target; `CONNECT` is refused (breakwater is not a forward proxy);
//! - `content-length` xor `transfer-encoding`; all `content-length` values
//!   equal; `transfer-encoding` exactly `chunked` (another known coding is
//!   400, an unknown one 501); none at all in HTTP/1.0;
//! - sizes: request line, header block, header count, declared body.
//!
//! [`Framer`] follows a connection byte by byte — heads, then each body by
//! its length or its chunks — so it always knows where the next head
//! starts, whatever hyper is doing. It is pure (no I/O, no time): the
//! connection wrapper in [`super::guard`] feeds it and acts on its verdict.
//! [`check_head`] is the per-head check, exposed for fuzzing.

/// Limits applied to each request head and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line → 414.
    pub max_request_line: usize,
    /// Largest head (request line + headers) → 431.
    pub max_header_bytes: usize,
    /// Most header fields → 431.
    pub max_headers: usize,
    /// Largest declared `content-length`, or chunked body, if bounded → 413.
    pub max_body_bytes: Option<u64>,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8 * 1024,
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            max_body_bytes: None,
        }
    }
}

/// Why a request was refused. Each maps to a status and a fixed reason
/// label (metrics, logs and `x-breakwater-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    /// The request line is longer than the limit. 414.
    RequestLineTooLong,
    /// The head is larger than `max_header_bytes`. 431.
    HeaderTooLarge,
    /// More than `max_headers` fields. 431.
    TooManyHeaders,
    /// The request line is not `METHOD SP target SP HTTP/1.x`. 400.
    BadRequestLine,
    /// An HTTP version other than 1.0 or 1.1. 505.
    UnsupportedVersion,
    /// A line ends in a bare LF (or a stray CR). 400.
    BareLineFeed,
    /// Whitespace between a header name and its colon. 400.
    HeaderWhitespace,
    /// A header line continued on the next line (obs-fold). 400.
    ObsFold,
    /// A header name that is not a token, or a line without a colon. 400.
    InvalidHeaderName,
    /// A header value with control characters. 400.
    InvalidHeaderValue,
    /// Both `content-length` and `transfer-encoding`. 400.
    ContentLengthWithTransferEncoding,
    /// `content-length` values that differ, or one that is not a number. 400.
    BadContentLength,
    /// A `transfer-encoding` other than exactly `chunked`. 400.
    TransferEncodingNotChunked,
    /// A transfer coding breakwater does not know. 501.
    UnknownTransferCoding,
    /// `transfer-encoding` in an HTTP/1.0 request. 400.
    TransferEncodingInHttp10,
    /// No `Host`, or more than one, in HTTP/1.1. 400.
    BadHost,
    /// `CONNECT`: breakwater is a reverse proxy. 501.
    ConnectNotSupported,
    /// A declared or chunked body over `max_body_bytes`. 413.
    BodyTooLarge,
    /// Malformed chunked encoding. 400.
    BadChunk,
}

impl Violation {
    /// Every variant, for pre-resolving metric handles.
    pub const ALL: [Violation; 19] = [
        Violation::RequestLineTooLong,
        Violation::HeaderTooLarge,
        Violation::TooManyHeaders,
        Violation::BadRequestLine,
        Violation::UnsupportedVersion,
        Violation::BareLineFeed,
        Violation::HeaderWhitespace,
        Violation::ObsFold,
        Violation::InvalidHeaderName,
        Violation::InvalidHeaderValue,
        Violation::ContentLengthWithTransferEncoding,
        Violation::BadContentLength,
        Violation::TransferEncodingNotChunked,
        Violation::UnknownTransferCoding,
        Violation::TransferEncodingInHttp10,
        Violation::BadHost,
        Violation::ConnectNotSupported,
        Violation::BodyTooLarge,
        Violation::BadChunk,
    ];

    /// HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Violation::RequestLineTooLong => 414,
            Violation::HeaderTooLarge | Violation::TooManyHeaders => 431,
            Violation::UnsupportedVersion => 505,
            Violation::UnknownTransferCoding | Violation::ConnectNotSupported => 501,
            Violation::BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// Fixed label: the `reason` of `breakwater_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::RequestLineTooLong => "request_line_too_long",
            Violation::HeaderTooLarge => "header_too_large",
            Violation::TooManyHeaders => "too_many_headers",
            Violation::BadRequestLine => "bad_request_line",
            Violation::UnsupportedVersion => "unsupported_version",
            Violation::BareLineFeed => "bare_line_feed",
            Violation::HeaderWhitespace => "header_whitespace",
            Violation::ObsFold => "obs_fold",
            Violation::InvalidHeaderName => "invalid_header_name",
            Violation::InvalidHeaderValue => "invalid_header_value",
            Violation::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Violation::BadContentLength => "bad_content_length",
            Violation::TransferEncodingNotChunked => "transfer_encoding_not_chunked",
            Violation::UnknownTransferCoding => "unknown_transfer_coding",
            Violation::TransferEncodingInHttp10 => "transfer_encoding_in_http10",
            Violation::BadHost => "bad_host",
            Violation::ConnectNotSupported => "connect_not_supported",
            Violation::BodyTooLarge => "body_too_large",
            Violation::BadChunk => "bad_chunk",
        }
    }
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// What a head that passed [`check_head`] says about what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Body framing.
    pub body: BodyFraming,
    /// The request asks to switch protocols (`Upgrade` + `Connection: upgrade`).
    pub upgrade: bool,
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_field_value_byte(byte: u8) -> bool {
    byte == b'\t' || byte == b' ' || (0x21..=0x7e).contains(&byte) || byte >= 0x80
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

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|token| !token.is_empty())
}

/// Checks a request line (without its CRLF); returns whether it is
/// HTTP/1.0. Called as soon as the line is complete, so a bad line is
/// refused before any parser can act on a partial head.
pub fn check_request_line(request_line: &[u8], limits: &HeadLimits) -> Result<bool, Violation> {
    if request_line.len() > limits.max_request_line {
        return Err(Violation::RequestLineTooLong);
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Violation::BadRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Violation::BadRequestLine);
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(Violation::BadRequestLine);
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Violation::UnsupportedVersion)
        }
        _ => return Err(Violation::BadRequestLine),
    };
    if method == b"CONNECT" {
        return Err(Violation::ConnectNotSupported);
    }
    let origin_form = target.starts_with(b"/");
    let absolute_form = target.len() > 7
        && (target[..7].eq_ignore_ascii_case(b"http://")
            || (target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://")));
    let asterisk_form = target == b"*" && method == b"OPTIONS";
    if !(origin_form || absolute_form || asterisk_form) {
        return Err(Violation::BadRequestLine);
    }
    Ok(http10)
}

/// Checks one complete head: `head` runs from the request line to the empty
/// line, each line ending in CRLF (as [`Framer`] guarantees).
pub fn check_head(head: &[u8], limits: &HeadLimits) -> Result<Head, Violation> {
    if head.len() > limits.max_header_bytes {
        return Err(Violation::HeaderTooLarge);
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().ok_or(Violation::BadRequestLine)?;
    let http10 = check_request_line(request_line, limits)?;

    let mut n_headers = 0usize;
    let mut n_hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut only_chunked = true;
    let mut n_codings = 0usize;
    let mut unknown_coding = false;
    let mut has_upgrade = false;
    let mut connection_upgrade = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(Violation::ObsFold);
        }
        n_headers += 1;
        if n_headers > limits.max_headers {
            return Err(Violation::TooManyHeaders);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Violation::InvalidHeaderName)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() {
            return Err(Violation::InvalidHeaderName);
        }
        if matches!(name[name.len() - 1], b' ' | b'\t') {
            return Err(Violation::HeaderWhitespace);
        }
        if !name.iter().all(|&b| is_tchar(b)) {
            return Err(Violation::InvalidHeaderName);
        }
        if !value.iter().all(|&b| is_field_value_byte(b)) {
            return Err(Violation::InvalidHeaderValue);
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"host") {
            n_hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
                    return Err(Violation::BadContentLength);
                }
                let length: u64 = std::str::from_utf8(token)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or(Violation::BadContentLength)?;
                match content_length {
                    Some(previous) if previous != length => {
                        return Err(Violation::BadContentLength)
                    }
                    _ => content_length = Some(length),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in tokens(value) {
                n_codings += 1;
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    only_chunked = false;
                    let known = [
                        &b"gzip"[..],
                        b"x-gzip",
                        b"deflate",
                        b"compress",
                        b"x-compress",
                        b"identity",
                    ]
                    .iter()
                    .any(|known| coding.eq_ignore_ascii_case(known));
                    unknown_coding |= !known;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            has_upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= tokens(value).any(|token| token.eq_ignore_ascii_case(b"upgrade"));
        }
    }

    if http10 && n_hosts > 1 || !http10 && n_hosts != 1 {
        return Err(Violation::BadHost);
    }
    let body = if transfer_encoding {
        if http10 {
            return Err(Violation::TransferEncodingInHttp10);
        }
        if content_length.is_some() {
            return Err(Violation::ContentLengthWithTransferEncoding);
        }
        if unknown_coding {
            return Err(Violation::UnknownTransferCoding);
        }
        if !only_chunked || n_codings != 1 {
            return Err(Violation::TransferEncodingNotChunked);
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyFraming::None,
            Some(length) => BodyFraming::Length(length),
        }
    };
    if let (BodyFraming::Length(length), Some(max)) = (body, limits.max_body_bytes) {
        if length > max {
            return Err(Violation::BodyTooLarge);
        }
    }
    Ok(Head {
        body,
        upgrade: has_upgrade && connection_upgrade,
    })
}

/// Where a connection's byte stream is, as seen by [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: no byte of the next head yet.
    Idle,
    /// Part of a head has arrived.
    Head,
    /// Inside a request body.
    Body,
    /// No longer HTTP/1 framing (HTTP/2, or after an upgrade request).
    Passthrough,
}

/// The HTTP/2 connection preface: a connection that starts with it is h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest chunk-size line extension accepted.
const MAX_CHUNK_EXTENSION: usize = 4096;

/// Follows one connection's request byte stream.
#[derive(Debug)]
pub struct Framer {
    limits: HeadLimits,
    state: State,
    /// Bytes of a head split across reads (empty when a head arrives whole).
    partial: Vec<u8>,
    /// How much of the h2c preface matched so far; `None` once decided.
    preface: Option<usize>,
    /// Heads that passed the check on this connection.
    pub n_heads: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a head: `len` head bytes so far, `line_start` where the
    /// current line began, `last_was_cr` whether the last byte was CR.
    Head {
        len: usize,
        line_start: usize,
        last_was_cr: bool,
    },
    /// Inside a body with this many bytes to go.
    Length(u64),
    /// Inside a chunked body; the total of chunk sizes so far.
    Chunked(Chunk, u64),
    /// After an upgrade request's head, or HTTP/2: no more framing.
    Passthrough,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex chunk size.
    Size { digits: u8, size: u64 },
    /// After the size: chunk extensions (RFC 9112 §7.1.1), until CR.
    Extension { size: u64, len: usize, at: Ext },
    /// CR seen after the size line; LF expected.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data(u64),
    /// CR expected after data.
    DataCr,
    /// LF expected after data.
    DataLf,
    /// After the last chunk: trailer lines until an empty line.
    Trailer {
        len: usize,
        line_len: usize,
        last_was_cr: bool,
    },
}

/// Where a chunk-size line's extensions are:
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace before the next `;` (or the line's end, after a value).
    BeforeSemicolon,
    /// After `;`: whitespace, then the name's first byte.
    NameStart,
    /// Inside the name.
    Name,
    /// After the name: whitespace, `=`, `;` or the line's end.
    AfterName,
    /// After `=`: whitespace, then the value's first byte.
    ValueStart,
    /// Inside a token value.
    Token,
    /// Inside a quoted value.
    Quoted,
    /// After a backslash inside a quoted value.
    QuotedEscape,
}

impl Ext {
    /// The next position after `byte`, or `None` if the line is malformed.
    /// CR is handled by the caller (allowed only where the line may end).
    fn next(self, byte: u8) -> Option<Ext> {
        let space = matches!(byte, b' ' | b'\t');
        match self {
            Ext::BeforeSemicolon | Ext::AfterName if byte == b';' => Some(Ext::NameStart),
            Ext::BeforeSemicolon if space => Some(Ext::BeforeSemicolon),
            Ext::NameStart if space => Some(Ext::NameStart),
            Ext::NameStart | Ext::Name if is_tchar(byte) => Some(Ext::Name),
            Ext::Name | Ext::AfterName if space => Some(Ext::AfterName),
            Ext::Name | Ext::AfterName if byte == b'=' => Some(Ext::ValueStart),
            Ext::Name if byte == b';' => Some(Ext::NameStart),
            Ext::ValueStart if space => Some(Ext::ValueStart),
            Ext::ValueStart if byte == b'"' => Some(Ext::Quoted),
            Ext::ValueStart | Ext::Token if is_tchar(byte) => Some(Ext::Token),
            Ext::Token if byte == b';' => Some(Ext::NameStart),
            Ext::Token if space => Some(Ext::BeforeSemicolon),
            Ext::Quoted if byte == b'"' => Some(Ext::BeforeSemicolon),
            Ext::Quoted if byte == b'\\' => Some(Ext::QuotedEscape),
            Ext::Quoted
                if byte == b'\t'
                    || byte == b' '
                    || (0x21..=0x7e).contains(&byte)
                    || byte >= 0x80 =>
            {
                Some(Ext::Quoted)
            }
            Ext::QuotedEscape if byte == b'\t' || (0x20..=0x7e).contains(&byte) || byte >= 0x80 => {
                Some(Ext::Quoted)
            }
            _ => None,
        }
    }

    /// Whether the line may end (CR) here: after a complete name or value.
    fn may_end(self) -> bool {
        matches!(self, Ext::Name | Ext::Token | Ext::BeforeSemicolon)
    }
}

const FRESH_HEAD: State = State::Head {
    len: 0,
    line_start: 0,
    last_was_cr: false,
};

// === impl Framer ===

impl Framer {
    /// A framer for a new connection.
    pub fn new(limits: HeadLimits) -> Self {
        Framer {
            limits,
            state: FRESH_HEAD,
            partial: Vec::new(),
            preface: Some(0),
            n_heads: 0,
        }
    }

    /// Where the stream is now.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head { len: 0, .. } => Phase::Idle,
            State::Head { .. } => Phase::Head,
            State::Length(_) | State::Chunked(..) => Phase::Body,
            State::Passthrough => Phase::Passthrough,
        }
    }

    /// Follows `bytes`, the next bytes the client sent. An error means the
    /// request must be refused and the connection closed; the bytes must
    /// not reach the HTTP parser.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        if let Some(matched) = self.preface {
            let take = bytes.len().min(H2_PREFACE.len() - matched);
            if bytes[..take] == H2_PREFACE[matched..matched + take] {
                let matched = matched + take;
                if matched == H2_PREFACE.len() {
                    self.preface = None;
                    self.state = State::Passthrough;
                    self.partial = Vec::new();
                    return Ok(());
                }
                // Maybe h2c: hold judgement until the preface is complete.
                self.preface = Some(matched);
                self.partial.extend_from_slice(bytes);
                return Ok(());
            }
            // Not h2c: frame whatever was held as HTTP/1, then the rest.
            self.preface = None;
            let held = std::mem::take(&mut self.partial);
            self.feed_http1(&held)?;
        }
        self.feed_http1(bytes)
    }

    fn feed_http1(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let mut rest = bytes;
        while !rest.is_empty() {
            rest = match self.state {
                State::Passthrough => return Ok(()),
                State::Head { .. } => self.feed_head(rest)?,
                State::Length(remaining) => {
                    let take = remaining.min(rest.len() as u64);
                    let remaining = remaining - take;
                    self.state = if remaining == 0 {
                        FRESH_HEAD
                    } else {
                        State::Length(remaining)
                    };
                    &rest[take as usize..]
                }
                State::Chunked(chunk, total) => self.feed_chunked(chunk, total, rest)?,
            };
        }
        Ok(())
    }

    /// Consumes head bytes; returns what follows the head, if it ended.
    fn feed_head<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], Violation> {
        let State::Head {
            mut len,
            mut line_start,
            mut last_was_cr,
        } = self.state
        else {
            return Ok(bytes);
        };
        let mut head_from = None;
        for (index, &byte) in bytes.iter().enumerate() {
            if len == 0 && head_from.is_none() && self.partial.is_empty() {
                // Blank lines before a request line are skipped (RFC 9112 §2.2).
                match byte {
                    b'\r' if !last_was_cr => {
                        last_was_cr = true;
                        continue;
                    }
                    b'\n' if last_was_cr => {
                        last_was_cr = false;
                        continue;
                    }
                    b'\r' | b'\n' => return Err(Violation::BareLineFeed),
                    _ if last_was_cr => return Err(Violation::BareLineFeed),
                    _ => head_from = Some(index),
                }
            }
            if head_from.is_none() {
                head_from = Some(index);
            }
            len += 1;
            if len > self.limits.max_header_bytes {
                return Err(if line_start == 0 {
                    Violation::RequestLineTooLong
                } else {
                    Violation::HeaderTooLarge
                });
            }
            if line_start == 0 && len > self.limits.max_request_line + 2 {
                return Err(Violation::RequestLineTooLong);
            }
            if last_was_cr && byte != b'\n' {
                return Err(Violation::BareLineFeed);
            }
            match byte {
                b'\r' => last_was_cr = true,
                b'\n' if !last_was_cr => return Err(Violation::BareLineFeed),
                b'\n' => {
                    last_was_cr = false;
                    let line_len = len - line_start;
                    if line_start == 0 {
                        // The request line is complete: judge it now.
                        let from = head_from.unwrap_or(index);
                        let mut line = Vec::new();
                        let request_line: &[u8] = if self.partial.is_empty() {
                            &bytes[from..index]
                        } else {
                            line.extend_from_slice(&self.partial);
                            line.extend_from_slice(&bytes[from..index]);
                            &line
                        };
                        check_request_line(
                            request_line.strip_suffix(b"\r").unwrap_or(request_line),
                            &self.limits,
                        )?;
                    }
                    line_start = len;
                    if line_len == 2 {
                        let from = head_from.unwrap_or(index);
                        let checked = if self.partial.is_empty() {
                            check_head(&bytes[from..=index], &self.limits)
                        } else {
                            let mut whole = std::mem::take(&mut self.partial);
                            whole.extend_from_slice(&bytes[from..=index]);
                            check_head(&whole, &self.limits)
                        }?;
                        self.n_heads += 1;
                        self.state = match (checked.upgrade, checked.body) {
                            (true, _) => State::Passthrough,
                            (false, BodyFraming::None) => FRESH_HEAD,
                            (false, BodyFraming::Length(length)) => State::Length(length),
                            (false, BodyFraming::Chunked) => {
                                State::Chunked(Chunk::Size { digits: 0, size: 0 }, 0)
                            }
                        };
                        return Ok(&bytes[index + 1..]);
                    }
                }
                _ => {}
            }
        }
        // The head continues in a later read: keep what we have of it.
        if let Some(from) = head_from {
            self.partial.extend_from_slice(&bytes[from..]);
        }
        self.state = State::Head {
            len,
            line_start,
            last_was_cr,
        };
        Ok(&[])
    }

    /// Consumes chunked-body bytes; returns what follows the body, if it ended.
    fn feed_chunked<'b>(
        &mut self,
        mut chunk: Chunk,
        mut total: u64,
        bytes: &'b [u8],
    ) -> Result<&'b [u8], Violation> {
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            index += 1;
            chunk = match chunk {
                Chunk::Size { digits, size } => match (byte as char).to_digit(16) {
                    Some(digit) if digits < 15 => Chunk::Size {
                        digits: digits + 1,
                        size: size * 16 + u64::from(digit),
                    },
                    Some(_) => return Err(Violation::BadChunk),
                    None if digits == 0 => return Err(Violation::BadChunk),
                    None => {
                        total = total.saturating_add(size);
                        if self.limits.max_body_bytes.is_some_and(|max| total > max) {
                            return Err(Violation::BodyTooLarge);
                        }
                        match byte {
                            b'\r' => Chunk::SizeLf { size },
                            b';' => Chunk::Extension {
                                size,
                                len: 1,
                                at: Ext::NameStart,
                            },
                            b' ' | b'\t' => Chunk::Extension {
                                size,
                                len: 1,
                                at: Ext::BeforeSemicolon,
                            },
                            _ => return Err(Violation::BadChunk),
                        }
                    }
                },
                Chunk::Extension { size, len, at } => match byte {
                    // Whitespace alone after the size is not an extension.
                    b'\r' if at.may_end() && !(at == Ext::BeforeSemicolon && len == 1) => {
                        Chunk::SizeLf { size }
                    }
                    _ if len >= MAX_CHUNK_EXTENSION => return Err(Violation::BadChunk),
                    _ => match at.next(byte) {
                        Some(at) => Chunk::Extension {
                            size,
                            len: len + 1,
                            at,
                        },
                        None => return Err(Violation::BadChunk),
                    },
                },
                Chunk::SizeLf { size } => match byte {
                    b'\n' if size == 0 => Chunk::Trailer {
                        len: 0,
                        line_len: 0,
                        last_was_cr: false,
                    },
                    b'\n' => Chunk::Data(size),
                    _ => return Err(Violation::BadChunk),
                },
                Chunk::Data(remaining) => {
                    // Skip the data in bulk; `byte` was its first byte.
                    let available = (bytes.len() - index + 1) as u64;
                    let take = remaining.min(available);
                    index += take as usize - 1;
                    if take == remaining {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(remaining - take)
                    }
                }
                Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
                Chunk::DataLf if byte == b'\n' => Chunk::Size { digits: 0, size: 0 },
                Chunk::DataCr | Chunk::DataLf => return Err(Violation::BadChunk),
                Chunk::Trailer {
                    len,
                    line_len,
                    last_was_cr,
                } => {
                    if last_was_cr {
                        if byte != b'\n' {
                            return Err(Violation::BareLineFeed);
                        }
                        if line_len == 0 {
                            self.state = FRESH_HEAD;
                            return Ok(&bytes[index..]);
                        }
                        Chunk::Trailer {
                            len,
                            line_len: 0,
                            last_was_cr: false,
                        }
                    } else {
                        match byte {
                            b'\r' => Chunk::Trailer {
                                len,
                                line_len,
                                last_was_cr: true,
                            },
                            b'\n' => return Err(Violation::BareLineFeed),
                            b' ' | b'\t' if line_len == 0 => return Err(Violation::ObsFold),
                            _ if !is_field_value_byte(byte) => {
                                return Err(Violation::InvalidHeaderValue)
                            }
                            _ if len + 1 > self.limits.max_header_bytes => {
                                return Err(Violation::HeaderTooLarge)
                            }
                            _ => Chunk::Trailer {
                                len: len + 1,
                                line_len: line_len + 1,
                                last_was_cr: false,
                            },
                        }
                    }
                }
            };
        }
        self.state = State::Chunked(chunk, total);
        Ok(&bytes[index..])
    }
}

#[cfg(test)]
mod tests;
