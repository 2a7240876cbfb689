//! The stale-if-error store (SPEC §4.2): the last good answer to each
//! GET/HEAD of a route, kept to serve when the upstream cannot answer.
//!
//! The store is [`quick_cache`]'s concurrent cache weighted by bytes: it
//! evicts by a scan-resistant policy without a background task, holds no
//! lock across requests, and bounds both counts at once — each entry
//! weighs at least `max_bytes / max_entries`, so the weights summing to at
//! most `max_bytes` keeps both the bytes and the number of entries within
//! their limits. (`moka` was the other candidate: richer, with time-based
//! expiry, but larger and with its own housekeeping threads; an entry's age
//! is checked when it is served here, which is all `max_stale` needs.)
//!
//! What is kept follows HTTP caching's rules for shared caches: GET (HEAD
//! is served from it) answers with a cacheable status, never one with
//! `cache-control: no-store` or `private`, never one that sets a cookie,
//! never one to a request with `authorization` unless the answer says
//! `public`, and never `Vary: *`. The key is host, path and query; the
//! request headers the answer varies on must match too. A body is taken as
//! it streams by ([`Capture`]) and kept only if it ends whole within
//! `max_entry_bytes`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONNECTION, HOST, SET_COOKIE, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::time::Instant;

use crate::config::StaleIfError;

/// Where an answer is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaleKey {
    host: String,
    path_and_query: String,
}

/// A kept answer.
#[derive(Debug)]
pub struct StaleEntry {
    /// Its status.
    pub status: StatusCode,
    /// Its headers (hop-by-hop ones dropped).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// When it was kept.
    pub stored: Instant,
    /// The request headers it varies on, and the values it was kept for.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    weight: u64,
}

#[derive(Clone)]
struct EntryWeight;

impl Weighter<StaleKey, Arc<StaleEntry>> for EntryWeight {
    fn weight(&self, _key: &StaleKey, entry: &Arc<StaleEntry>) -> u64 {
        entry.weight
    }
}

/// One route's store.
pub struct StaleStore {
    cache: Cache<StaleKey, Arc<StaleEntry>, EntryWeight>,
    config: StaleIfError,
    /// Every entry weighs at least this: `max_bytes / max_entries`.
    unit: u64,
}

impl std::fmt::Debug for StaleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleStore")
            .field("entries", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .finish_non_exhaustive()
    }
}

// === impl StaleStore ===

impl StaleStore {
    /// An empty store within `config`'s limits.
    pub fn new(config: &StaleIfError) -> Self {
        let max_entries = config.max_entries.max(1) as u64;
        let max_bytes = config.max_bytes.0.max(1);
        let unit = (max_bytes / max_entries).max(1);
        StaleStore {
            cache: Cache::with_weighter(config.max_entries.max(1), max_bytes, EntryWeight),
            config: config.clone(),
            unit,
        }
    }

    /// The settings it was built from.
    pub fn config(&self) -> &StaleIfError {
        &self.config
    }

    /// Answers kept now, and their weight in bytes.
    pub fn usage(&self) -> (usize, u64) {
        (self.cache.len(), self.cache.weight())
    }

    /// The key of `request`, when it is a GET or HEAD.
    pub fn key_of<B>(request: &Request<B>) -> Option<StaleKey> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let host = request
            .headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_ascii_lowercase();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        Some(StaleKey {
            host,
            path_and_query,
        })
    }

    /// The kept answer for `key` that fits a request with `headers`, if
    /// one is kept and younger than `max_stale` at `now`.
    pub fn lookup(
        &self,
        key: &StaleKey,
        headers: &HeaderMap,
        now: Instant,
    ) -> Option<Arc<StaleEntry>> {
        let entry = self.cache.get(key)?;
        if now.saturating_duration_since(entry.stored) > self.config.max_stale {
            self.cache.remove(key);
            return None;
        }
        let fits = entry
            .vary
            .iter()
            .all(|(name, value)| headers.get(name) == value.as_ref());
        fits.then_some(entry)
    }

    /// A capture of `response`'s body into the store under `key`, when the
    /// answer may be kept. `request_headers` are the request's.
    pub fn capture<B>(
        self: &Arc<Self>,
        key: StaleKey,
        request_headers: &HeaderMap,
        response: &Response<B>,
    ) -> Option<Capture> {
        let status = response.status();
        let cacheable_status = (status.is_success() && status != StatusCode::PARTIAL_CONTENT)
            || matches!(status.as_u16(), 301 | 308 | 404 | 410);
        if !cacheable_status {
            return None;
        }
        let headers = response.headers();
        let directives = |map: &HeaderMap| -> Vec<String> {
            map.get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(|directive| directive.trim().to_ascii_lowercase())
                .collect()
        };
        let response_directives = directives(headers);
        let has = |name: &str| {
            response_directives
                .iter()
                .any(|directive| directive == name || directive.starts_with(&format!("{name}=")))
        };
        if has("no-store") || has("private") || headers.contains_key(SET_COOKIE) {
            return None;
        }
        if request_headers.contains_key(AUTHORIZATION) && !has("public") {
            return None;
        }
        if directives(request_headers)
            .iter()
            .any(|directive| directive == "no-store")
        {
            return None;
        }
        let mut vary = Vec::new();
        for value in headers.get_all(VARY) {
            let Ok(value) = value.to_str() else {
                return None;
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return None;
                }
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return None;
                };
                let value = request_headers.get(&name).cloned();
                vary.push((name, value));
            }
        }
        let mut kept = headers.clone();
        for name in [CONNECTION, TRANSFER_ENCODING] {
            kept.remove(name);
        }
        Some(Capture {
            store: self.clone(),
            key,
            status,
            headers: kept,
            vary,
            body: BytesMut::new(),
            limit: usize::try_from(self.config.max_entry_bytes.0).unwrap_or(usize::MAX),
            overflowed: false,
        })
    }

    fn insert(&self, key: StaleKey, entry: StaleEntry) {
        self.cache.insert(key, Arc::new(entry));
    }
}

/// A response body on its way to the store: bytes are copied as they
/// stream by, and kept once the body has ended whole.
pub struct Capture {
    store: Arc<StaleStore>,
    key: StaleKey,
    status: StatusCode,
    headers: HeaderMap,
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    body: BytesMut,
    limit: usize,
    overflowed: bool,
}

impl Capture {
    /// The next bytes of the body.
    pub fn push(&mut self, data: &[u8]) {
        if self.overflowed || self.body.len() + data.len() > self.limit {
            self.overflowed = true;
            self.body = BytesMut::new();
            return;
        }
        self.body.extend_from_slice(data);
    }

    /// The body ended whole: keep the answer (unless it was too large).
    pub fn keep(self, now: Instant) {
        if self.overflowed {
            return;
        }
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let size = (self.body.len() + header_bytes) as u64;
        let entry = StaleEntry {
            status: self.status,
            headers: self.headers,
            body: self.body.freeze(),
            stored: now,
            vary: self.vary,
            weight: size.max(self.store.unit),
        };
        self.store.insert(self.key, entry);
    }
}

/// How old `entry` is at `now`, in whole seconds (for `age`).
pub fn age(entry: &StaleEntry, now: Instant) -> Duration {
    Duration::from_secs(now.saturating_duration_since(entry.stored).as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn config(max_entries: usize, max_bytes: u64) -> StaleIfError {
        StaleIfError {
            max_entries,
            max_bytes: ByteSize(max_bytes),
            max_entry_bytes: ByteSize(max_bytes),
            max_stale: Duration::from_secs(60),
        }
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).header(HOST, "svc").body(()).unwrap()
    }

    fn ok(headers: &[(&str, &str)]) -> Response<()> {
        let mut response = Response::new(());
        for (name, value) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    fn keep(store: &Arc<StaleStore>, path: &str, body: &[u8], now: Instant) {
        let request = get(path);
        let key = StaleStore::key_of(&request).unwrap();
        let mut capture = store.capture(key, request.headers(), &ok(&[])).unwrap();
        capture.push(body);
        capture.keep(now);
    }

    #[test]
    fn keeps_and_serves_the_last_good_answer_until_max_stale() {
        let store = Arc::new(StaleStore::new(&config(10, 1 << 20)));
        let now = Instant::now();
        keep(&store, "/a?x=1", b"hello", now);
        let key = StaleStore::key_of(&get("/a?x=1")).unwrap();
        let entry = store.lookup(&key, &HeaderMap::new(), now).unwrap();
        assert_eq!(entry.body, "hello");
        assert!(store
            .lookup(
                &StaleStore::key_of(&get("/a?x=2")).unwrap(),
                &HeaderMap::new(),
                now
            )
            .is_none());
        assert!(store
            .lookup(&key, &HeaderMap::new(), now + Duration::from_secs(61))
            .is_none());
    }

    #[test]
    fn what_must_not_be_shared_is_never_kept() {
        let store = Arc::new(StaleStore::new(&config(10, 1 << 20)));
        let request = get("/a");
        let key = StaleStore::key_of(&request).unwrap();
        for refused in [
            ok(&[("cache-control", "no-store")]),
            ok(&[("cache-control", "max-age=5, private")]),
            ok(&[("set-cookie", "id=1")]),
            ok(&[("vary", "*")]),
        ] {
            assert!(store
                .capture(key.clone(), request.headers(), &refused)
                .is_none());
        }
        let mut failed = ok(&[]);
        *failed.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert!(store
            .capture(key.clone(), request.headers(), &failed)
            .is_none());
        let with_credentials = Request::get("/a")
            .header(AUTHORIZATION, "Bearer x")
            .body(())
            .unwrap();
        assert!(store
            .capture(key.clone(), with_credentials.headers(), &ok(&[]))
            .is_none());
        assert!(store
            .capture(
                key,
                with_credentials.headers(),
                &ok(&[("cache-control", "public")])
            )
            .is_some());
        let post = Request::post("/a").body(()).unwrap();
        assert!(StaleStore::key_of(&post).is_none());
    }

    #[test]
    fn an_answer_varies_on_the_request_headers_it_names() {
        let store = Arc::new(StaleStore::new(&config(10, 1 << 20)));
        let request = Request::get("/a")
            .header("accept-language", "fr")
            .body(())
            .unwrap();
        let key = StaleStore::key_of(&request).unwrap();
        let mut capture = store
            .capture(
                key.clone(),
                request.headers(),
                &ok(&[("vary", "Accept-Language")]),
            )
            .unwrap();
        capture.push(b"bonjour");
        let now = Instant::now();
        capture.keep(now);
        assert!(store.lookup(&key, request.headers(), now).is_some());
        let mut english = HeaderMap::new();
        english.insert("accept-language", HeaderValue::from_static("en"));
        assert!(store.lookup(&key, &english, now).is_none());
    }

    #[test]
    fn entries_and_bytes_stay_within_their_limits() {
        let store = Arc::new(StaleStore::new(&config(50, 64 * 1024)));
        let now = Instant::now();
        for n in 0..2000 {
            keep(&store, &format!("/item/{n}"), &[b'x'; 300], now);
        }
        let (entries, bytes) = store.usage();
        assert!(entries <= 50, "{entries} entries");
        assert!(bytes <= 64 * 1024, "{bytes} bytes");
        assert!(entries > 0);
    }

    #[test]
    fn a_body_over_max_entry_bytes_is_not_kept() {
        let mut settings = config(10, 1 << 20);
        settings.max_entry_bytes = ByteSize(4);
        let store = Arc::new(StaleStore::new(&settings));
        keep(&store, "/big", b"too large", Instant::now());
        assert_eq!(store.usage().0, 0);
    }
}
