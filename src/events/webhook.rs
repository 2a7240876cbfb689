//! Webhook alerts: each event is POSTed to `alerts.webhooks` (SPEC §5.6).
//!
//! Every webhook gets its own bounded queue and its own delivery task, so a
//! slow or dead receiver delays only its own alerts. The queue holds
//! [`QUEUE_CAPACITY`] events; when it is full the *oldest* is dropped and
//! counted, on the view that during an incident the latest state is worth
//! more than a complete history (which `/events` keeps anyway).
//!
//! A delivery is one POST of `content-type: application/json`, with at
//! most [`TRIES`] tries, each bounded by [`TRY_TIMEOUT`], with backoff
//! between them. Redirects are not followed (a 3xx is a failure), so a
//! compromised receiver cannot bounce alerts to an internal address.
//!
//! `https://` receivers (Slack's and PagerDuty's webhooks are HTTPS) are
//! verified with the same rustls client config as upstreams
//! (`crate::tls`): against the webhook's `ca` bundle, or the system trust
//! store. The `ca` file is read again before a delivery when its content
//! has changed, so a rotated private CA needs no reload.
//!
//! Webhook URLs often carry a secret in their path (Slack's do), so logs
//! and errors name a webhook by scheme, host and port only.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Event, Severity};

/// Events a webhook's queue holds before it drops its oldest.
pub const QUEUE_CAPACITY: usize = 256;

/// Bound on one try: connect, send, and the response head.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries per event, the first included.
pub const TRIES: usize = 3;

/// Wait before the second and the third try.
const BACKOFF: [Duration; TRIES - 1] = [Duration::from_millis(250), Duration::from_secs(1)];

/// Most of a response body read (then discarded) so the connection can be
/// reused; a larger body is cut off.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What is POSTed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event itself, as listed at `/events`.
    Json,
    /// Slack-compatible: `{"text": "[CRITICAL] kind subject: detail"}`.
    Slack,
}

// === impl WebhookFormat ===

impl WebhookFormat {
    /// Parses the config name (`json`, `slack`); `None` for anything else.
    pub fn from_name(name: &str) -> Option<WebhookFormat> {
        match name {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }

    /// The request body for `event`.
    pub(crate) fn body(self, event: &Event) -> Result<Bytes, serde_json::Error> {
        let body = match self {
            WebhookFormat::Json => serde_json::to_vec(event)?,
            WebhookFormat::Slack => serde_json::to_vec(&serde_json::json!({
                "text": format!(
                    "[{}] {} {}: {}",
                    event.severity.as_str().to_ascii_uppercase(),
                    event.kind,
                    event.subject,
                    event.detail,
                ),
            }))?,
        };
        Ok(Bytes::from(body))
    }
}

/// Why a webhook URL was refused. The URL itself is never echoed: it may
/// hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL did not parse as an absolute URI.
    #[error("webhook url is not a valid absolute URL: {reason}")]
    InvalidUrl {
        /// What the parser objected to.
        reason: String,
    },
    /// A scheme other than `http` or `https`.
    #[error("webhook url scheme must be http:// or https://, got {scheme}://")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// No host after the scheme.
    #[error("webhook url has no host")]
    MissingHost,
    /// `user:password@` in the URL; it would be neither sent nor hidden.
    #[error("webhook url must not contain credentials (user:password@)")]
    Credentials,
}

/// One validated webhook: where to POST, in what format, from which
/// severity up.
#[derive(Clone)]
pub struct WebhookConfig {
    /// As configured, for [`WebhookConfig::url`].
    url: String,
    /// Parsed once at construction.
    uri: Uri,
    /// `http://host:port`, the only form that is logged.
    name: String,
    format: WebhookFormat,
    min_severity: Severity,
    /// PEM CA bundle for an `https://` receiver; `None`: the system store.
    ca: Option<PathBuf>,
}

// === impl WebhookConfig ===

impl WebhookConfig {
    /// Validates `url` (absolute, `http://` or `https://`, a host, no
    /// credentials) and
    /// builds the webhook. Events below `min_severity` are not sent to it.
    pub fn new(
        url: impl Into<String>,
        format: WebhookFormat,
        min_severity: Severity,
    ) -> Result<WebhookConfig, WebhookError> {
        let url = url.into();
        let uri: Uri =
            url.parse()
                .map_err(|error: http::uri::InvalidUri| WebhookError::InvalidUrl {
                    reason: error.to_string(),
                })?;
        let scheme = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => "http",
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
            Some(scheme) => {
                return Err(WebhookError::UnsupportedScheme {
                    scheme: scheme.to_owned(),
                })
            }
            None => {
                return Err(WebhookError::InvalidUrl {
                    reason: "no scheme; expected http://host/path or https://host/path".to_owned(),
                })
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(WebhookError::MissingHost);
        };
        if authority.as_str().contains('@') {
            return Err(WebhookError::Credentials);
        }
        if authority.host().is_empty() {
            return Err(WebhookError::MissingHost);
        }
        let name = match authority.port_u16() {
            Some(port) => format!("{scheme}://{}:{port}", authority.host()),
            None => format!("{scheme}://{}", authority.host()),
        };
        Ok(WebhookConfig {
            url,
            uri,
            name,
            format,
            min_severity,
            ca: None,
        })
    }

    /// Trusts the CAs in the PEM bundle at `ca` (for an `https://`
    /// receiver with a private CA) instead of the system trust store.
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Self {
        self.ca = ca;
        self
    }

    /// The CA bundle trusted for `https://`, if not the system store.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The URL as configured. May hold a secret: do not log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://host:port` (or `https://`): safe to log and show in `/status`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is POSTed.
    pub fn format(&self) -> WebhookFormat {
        self.format
    }

    /// Least severity sent.
    pub fn min_severity(&self) -> Severity {
        self.min_severity
    }
}

impl PartialEq for WebhookConfig {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && self.format == other.format
            && self.min_severity == other.min_severity
            && self.ca == other.ca
    }
}

impl fmt::Debug for WebhookConfig {
    /// Shows [`WebhookConfig::name`], never the full URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("min_severity", &self.min_severity)
            .finish_non_exhaustive()
    }
}

/// A webhook's bounded queue, shared by [`super::EventBus::emit`] (which
/// pushes) and the delivery task (which pops).
pub(crate) struct WebhookQueue {
    min_severity: Severity,
    pending: Mutex<Pending>,
    /// Wakes the delivery task; `notify_one` keeps a permit when the task
    /// is busy, so a push between its empty check and its wait is not lost.
    wake: Notify,
    /// The bus-wide drop counter.
    dropped: Arc<AtomicU64>,
}

struct Pending {
    events: VecDeque<Event>,
    /// Set when the bus is dropped: the task drains what is left and ends.
    closed: bool,
}

// === impl WebhookQueue ===

impl WebhookQueue {
    fn new(min_severity: Severity, dropped: Arc<AtomicU64>) -> WebhookQueue {
        WebhookQueue {
            min_severity,
            pending: Mutex::new(Pending {
                events: VecDeque::with_capacity(QUEUE_CAPACITY),
                closed: false,
            }),
            wake: Notify::new(),
            dropped,
        }
    }

    /// Queues `event` if it is severe enough, dropping (and counting) the
    /// oldest queued event when full. Never blocks beyond a short lock.
    pub(crate) fn push(&self, event: &Event) {
        if event.severity < self.min_severity {
            return;
        }
        {
            let mut pending = self.lock();
            if pending.closed {
                return;
            }
            if pending.events.len() >= QUEUE_CAPACITY {
                pending.events.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            pending.events.push_back(event.clone());
        }
        self.wake.notify_one();
    }

    /// No more events will come; the task ends once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The next event to deliver, or `None` once closed and drained.
    async fn next(&self) -> Option<Event> {
        loop {
            {
                let mut pending = self.lock();
                if let Some(event) = pending.events.pop_front() {
                    return Some(event);
                }
                if pending.closed {
                    return None;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Nothing waiting to be sent.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().events.is_empty()
    }

    /// Ids waiting to be sent, oldest first.
    #[cfg(test)]
    pub(super) fn queued_ids(&self) -> Vec<u64> {
        self.lock().events.iter().map(|event| event.id).collect()
    }

    /// Each step under the lock is one push or pop, so a poisoned lock
    /// still guards a consistent queue.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the delivery task for `config` on `runtime` and returns the
/// queue that feeds it.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    config: WebhookConfig,
    dropped: Arc<AtomicU64>,
) -> Arc<WebhookQueue> {
    let queue = Arc::new(WebhookQueue::new(config.min_severity, dropped));
    runtime.spawn(deliver_all(queue.clone(), config));
    queue
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for `http://` and `https://`, trusting `ca` (or the system
/// store when `None`).
fn client(ca: Option<&Path>) -> Result<HttpClient, crate::tls::TlsError> {
    // No ALPN here: hyper-rustls sets it from the enabled protocols.
    let tls = crate::tls::client_config(crate::tls::ClientFiles { ca, identity: None }, &[])?;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(TRY_TIMEOUT));
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector))
}

/// The webhook's client, rebuilt when its CA file's content changed since
/// the last delivery (so a rotated CA is trusted without a reload).
struct Delivery {
    ca: Option<PathBuf>,
    /// Content hash of the CA file the client was built with.
    built_with: Option<u64>,
    client: Option<HttpClient>,
}

impl Delivery {
    fn client(&mut self, webhook: &str) -> Option<&HttpClient> {
        let content = self.ca.as_deref().map(|ca| {
            let bytes = std::fs::read(ca).unwrap_or_default();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&bytes, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        });
        if self.client.is_none() || content != self.built_with {
            match client(self.ca.as_deref()) {
                Ok(client) => {
                    self.client = Some(client);
                    self.built_with = content;
                }
                // Keep the last good client, if any, rather than send nothing.
                Err(error) => {
                    tracing::warn!(webhook, %error, "Cannot build the webhook's TLS client.")
                }
            }
        }
        self.client.as_ref()
    }
}

/// The delivery task: one event at a time, in order, until the bus is gone.
async fn deliver_all(queue: Arc<WebhookQueue>, config: WebhookConfig) {
    let mut delivery = Delivery {
        ca: config.ca.clone(),
        built_with: None,
        client: None,
    };
    while let Some(event) = queue.next().await {
        match delivery.client(&config.name) {
            Some(client) => deliver(client, &config, &event).await,
            None => {
                tracing::warn!(webhook = %config.name, event_id = event.id, "Webhook has no usable client; event not sent.")
            }
        }
    }
}

/// Why one try failed.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("no response within {}", crate::units::format_duration_rounded(*.0))]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("receiver answered {0}")]
    Status(StatusCode),
    #[error("could not build the request: {0}")]
    Build(#[from] http::Error),
}

/// Up to [`TRIES`] tries for one event; failures are logged, never returned.
async fn deliver(client: &HttpClient, config: &WebhookConfig, event: &Event) {
    let body = match config.format.body(event) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(webhook = %config.name, event_id = event.id, %error, "Could not encode the webhook body; event not sent.");
            return;
        }
    };
    for attempt in 1..=TRIES {
        let error = match try_once(client, config, body.clone()).await {
            Ok(()) => {
                tracing::debug!(webhook = %config.name, event_id = event.id, attempt, "Webhook delivered.");
                return;
            }
            Err(error) => error,
        };
        match BACKOFF.get(attempt - 1) {
            Some(backoff) => {
                tracing::warn!(webhook = %config.name, event_id = event.id, kind = event.kind, attempt, retry_in = %crate::units::format_duration_rounded(*backoff), %error, "Webhook delivery failed; will retry.");
                tokio::time::sleep(*backoff).await;
            }
            None => {
                tracing::warn!(webhook = %config.name, event_id = event.id, kind = event.kind, attempt, %error, "Webhook delivery failed; giving up on this event.");
            }
        }
    }
}

/// One POST. Success is a 2xx; a 3xx is not followed and counts as failure.
async fn try_once(
    client: &HttpClient,
    config: &WebhookConfig,
    body: Bytes,
) -> Result<(), TryError> {
    // The URI was validated at construction and the headers are constants,
    // so building does not fail in practice.
    let request = Request::builder()
        .method(Method::POST)
        .uri(config.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("breakwater/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))?;
    let deadline = Instant::now() + TRY_TIMEOUT;
    let response = tokio::time::timeout_at(deadline, client.request(request))
        .await
        .map_err(|_| TryError::Timeout(TRY_TIMEOUT))??;
    let status = response.status();
    // Read what is left of the body so the connection can be reused; the
    // outcome is decided by the status alone.
    let _ = tokio::time::timeout_at(
        deadline,
        Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect(),
    )
    .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(TryError::Status(status))
    }
}
