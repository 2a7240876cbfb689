//! Route matching: which configured route, if any, serves a request.
//!
//! Routes are tried in config order and the first whose every condition
//! holds wins (SPEC §2). Matchers are compiled once per config snapshot,
//! so a match costs a few byte comparisons and allocates nothing. The
//! target's scheme and authority are never used to pick an upstream:
//! `GET http://other-host/` is matched on its path and host like any other
//! request and goes to a configured upstream, never to `other-host`.
//! `match.port` is the port the client connected to — on a transparent
//! listener, the original destination's port — which the connection, not
//! the request, tells.

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Method, Uri};

use crate::config::RouteMatch;

/// A compiled `match:` block.
#[derive(Debug, Clone)]
pub struct Matcher {
    host: Option<HostMatch>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone)]
enum PathMatch {
    Any,
    Prefix(String),
    Exact(String),
}

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Path without the query.
    pub path: &'a str,
    /// Host without port, if the request names one.
    pub host: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The port the client connected to (the original destination's on a
    /// transparent listener), when known.
    pub port: Option<u16>,
}

impl<'a> RequestFacts<'a> {
    /// Facts of a request head.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        RequestFacts {
            method,
            path: uri.path(),
            host: request_host(uri, headers),
            headers,
            port: None,
        }
    }

    /// The same facts, on a connection made to `port`.
    pub fn on_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// The request's host without port: the `:authority` / absolute-form host,
/// else the `Host` header.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(host) = uri.host() {
        return Some(host);
    }
    let host = headers.get(HOST)?.to_str().ok()?;
    Some(strip_port(host))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: "[::1]:8080" → "[::1]".
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

impl Matcher {
    /// Compiles a validated `match:` block. Values were checked by the
    /// config loader; anything that still fails to convert never matches.
    pub fn new(config: &RouteMatch) -> Matcher {
        let host = config
            .host
            .as_ref()
            .map(|host| match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    HostMatch::Subdomain(suffix.to_ascii_lowercase())
                }
                _ => HostMatch::Exact(host.to_ascii_lowercase()),
            });
        let path = match (&config.path_exact, &config.path_prefix) {
            (Some(exact), _) => PathMatch::Exact(exact.clone()),
            (None, Some(prefix)) if prefix != "/" => PathMatch::Prefix(prefix.clone()),
            _ => PathMatch::Any,
        };
        let methods = config
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let headers = config
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Matcher {
            host,
            path,
            methods,
            headers,
            port: config.port,
        }
    }

    /// Whether every condition holds for `request`.
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => request.path.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => request.path == exact,
        };
        if !path_ok {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method) {
            return false;
        }
        if self.port.is_some() && self.port != request.port {
            return false;
        }
        if let Some(host_match) = &self.host {
            let Some(host) = request.host else {
                return false;
            };
            let ok = match host_match {
                HostMatch::Exact(expected) => host.eq_ignore_ascii_case(expected),
                HostMatch::Subdomain(suffix) => {
                    host.len() > suffix.len()
                        && host.is_char_boundary(host.len() - suffix.len())
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|(name, value)| {
            request
                .headers
                .get_all(name)
                .iter()
                .any(|candidate| candidate == value)
        })
    }
}

/// Index of the first route in `matchers` that matches, if any.
pub fn select<'m>(
    matchers: impl IntoIterator<Item = &'m Matcher>,
    request: &RequestFacts<'_>,
) -> Option<usize> {
    matchers
        .into_iter()
        .position(|matcher| matcher.matches(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(yaml_like: RouteMatch) -> Matcher {
        Matcher::new(&yaml_like)
    }

    fn facts<'a>(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> RequestFacts<'a> {
        RequestFacts::new(method, uri, headers)
    }

    #[test]
    fn first_match_wins_in_order() {
        let routes = [
            matcher(RouteMatch {
                path_prefix: Some("/api".into()),
                methods: vec!["POST".into()],
                ..Default::default()
            }),
            matcher(RouteMatch {
                path_prefix: Some("/api".into()),
                ..Default::default()
            }),
            matcher(RouteMatch::default()),
        ];
        let headers = HeaderMap::new();
        let uri: Uri = "/api/orders?x=1".parse().unwrap();
        assert_eq!(
            select(&routes, &facts(&Method::POST, &uri, &headers)),
            Some(0)
        );
        assert_eq!(
            select(&routes, &facts(&Method::GET, &uri, &headers)),
            Some(1)
        );
        let other: Uri = "/index.html".parse().unwrap();
        assert_eq!(
            select(&routes, &facts(&Method::GET, &other, &headers)),
            Some(2)
        );
    }

    #[test]
    fn exact_path_ignores_query() {
        let route = matcher(RouteMatch {
            path_exact: Some("/healthz".into()),
            ..Default::default()
        });
        let headers = HeaderMap::new();
        for (uri, expected) in [
            ("/healthz?verbose=1", true),
            ("/healthz/x", false),
            ("/health", false),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(
                route.matches(&facts(&Method::GET, &uri, &headers)),
                expected,
                "{uri}"
            );
        }
    }

    #[test]
    fn host_matching() {
        let exact = matcher(RouteMatch {
            host: Some("shop.example".into()),
            ..Default::default()
        });
        let wildcard = matcher(RouteMatch {
            host: Some("*.example".into()),
            ..Default::default()
        });
        let uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("Shop.Example:8080"));
        let request = facts(&Method::GET, &uri, &headers);
        assert!(exact.matches(&request));
        assert!(wildcard.matches(&request));
        headers.insert(HOST, HeaderValue::from_static("example"));
        assert!(!wildcard.matches(&facts(&Method::GET, &uri, &headers)));
        let absolute: Uri = "http://shop.example/".parse().unwrap();
        assert!(exact.matches(&facts(&Method::GET, &absolute, &HeaderMap::new())));
        assert!(!exact.matches(&facts(&Method::GET, &uri, &HeaderMap::new())));
    }

    #[test]
    fn header_matching() {
        let route = matcher(RouteMatch {
            headers: vec![("x-env".into(), "canary".into())],
            ..Default::default()
        });
        let uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert!(!route.matches(&facts(&Method::GET, &uri, &headers)));
        headers.append("x-env", HeaderValue::from_static("prod"));
        headers.append("x-env", HeaderValue::from_static("canary"));
        assert!(route.matches(&facts(&Method::GET, &uri, &headers)));
    }

    #[test]
    fn port_matching() {
        let route = matcher(RouteMatch {
            port: Some(8080),
            ..Default::default()
        });
        let uri: Uri = "/".parse().unwrap();
        let headers = HeaderMap::new();
        let request = facts(&Method::GET, &uri, &headers);
        assert!(!route.matches(&request), "an unknown port never matches");
        assert!(route.matches(&request.on_port(8080)));
        assert!(!route.matches(&request.on_port(9090)));
        assert!(matcher(RouteMatch::default()).matches(&request.on_port(9090)));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("weird:port"), "weird:port");
    }
}
