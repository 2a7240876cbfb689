//! Live reload (SPEC §8.2): SIGHUP, `POST /config/reload`, or a change to
//! the config file.
//!
//! Every trigger ends in [`Reloader::reload`], which loads and validates
//! the file, builds the whole new snapshot on the side and publishes it
//! with one atomic swap — or, if anything is wrong, changes nothing and
//! returns every error. Requests in flight keep the snapshot they started
//! with.
//!
//! A reload is honest about what it applies. Routes, upstreams, policies,
//! limits (for connections accepted from then on, `max_connections` at
//! the next accept), the admin token, the overload watermark, webhooks
//! and the supervisor section (a changed process spec restarts the child
//! with it) all follow the new file. What cannot change in a running
//! process — listener names and addresses, the admin address, worker
//! threads — refuses the whole reload with "needs a restart" naming the
//! key, rather than half-applying it or ignoring it.
//!
//! With `config_rollback: {window, error_rate}`, a reload is on watch for
//! `window`: if the share of 5xx replies since it (injected faults
//! excepted) reaches `error_rate` over at least `min_requests` replies,
//! the previous config is published again (the reload keeps it for this),
//! a `rollback` event says why, and that exact config is refused until
//! the file changes again. The rate is absolute, not relative to before
//! the reload: a service already failing at that rate has its reloads
//! rolled back, which the event makes plain.
//!
//! The file is watched by polling its content once a second rather than
//! with inotify: Kubernetes updates a mounted ConfigMap by swapping a
//! `..data` symlink, which inotify on the file misses and inotify on the
//! directory reports noisily; comparing content is correct for symlink
//! swaps, editors that rename, and network filesystems alike, and a config
//! file costs nothing to read.
//!
//! TLS files (listeners' certificates, keys and client CAs; upstreams'
//! CAs and client certificates) are watched the same way, in the same
//! poll: a change to any of them reloads, and so does a SIGHUP or admin
//! reload after one, even with the config file itself unchanged — the new
//! snapshot reads them again (cert-manager and Kubernetes secret mounts
//! rotate certificates by the same `..data` swap as ConfigMaps).
//! Connections already open keep the certificate they were made with.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{self, Config, ConfigError, ConfigIssue, ConfigRollback, Overrides};
use crate::events::Severity;
use crate::proxy::DataPlane;
use crate::supervisor::Supervisors;

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the running config came from, for reloads.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read on reload.
    File(PathBuf),
    /// The embedded default; reload re-applies it (with the same flags).
    Embedded,
}

impl ConfigSource {
    /// How the source is named in logs and events.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "<embedded default>".to_owned(),
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Config version now serving.
    pub version: u64,
    /// False when the config was unchanged (nothing was swapped).
    pub changed: bool,
}

/// Reloads the config into the data plane and the supervisor.
pub struct Reloader {
    plane: Arc<DataPlane>,
    supervisors: Arc<Supervisors>,
    source: ConfigSource,
    /// CLI flags applied over every load.
    overrides: Overrides,
    /// Serialises reloads (and rollbacks) so two cannot interleave.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// What `config_rollback` keeps between reloads.
    rollback: Arc<RollbackBook>,
    /// The content of the TLS files the serving snapshot was built from.
    tls_seen: Mutex<u64>,
}

/// `config_rollback`'s books: the reload on watch, the config refused
/// after a rollback, and the last rollback for `/status`.
#[derive(Default)]
struct RollbackBook {
    watching: Mutex<Option<JoinHandle<()>>>,
    refused: Mutex<Option<Arc<Config>>>,
    last: Mutex<Option<Value>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Reloader ===

impl Reloader {
    /// A reloader of `source` (with `overrides`) into `plane` and `supervisors`.
    pub fn new(
        plane: Arc<DataPlane>,
        supervisors: Arc<Supervisors>,
        source: ConfigSource,
        overrides: Overrides,
    ) -> Self {
        let tls_seen = Mutex::new(tls_fingerprint(&plane.snapshot().config));
        Reloader {
            plane,
            supervisors,
            source,
            overrides,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            rollback: Arc::new(RollbackBook::default()),
            tls_seen,
        }
    }

    /// The last `config_rollback`, for `/status`.
    pub fn last_rollback(&self) -> Option<Value> {
        locked(&self.rollback.last).clone()
    }

    /// Loads the config again and swaps it in if valid. `trigger` names
    /// the cause for the log (`sighup`, `admin`, `file`).
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.lock.lock().await;
        let current = self.plane.snapshot();
        let result = self.load().and_then(|config| {
            needs_restart(&current.config, &config)?;
            Ok(config)
        });
        let metrics = &self.plane.metrics;
        let source = self.source.name();
        let tls_now = result.as_ref().map(tls_fingerprint).ok();
        let tls_unchanged = tls_now == Some(*self.tls_seen());
        let config = match result {
            Ok(config) if config == *current.config && tls_unchanged => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(
                    trigger,
                    version = current.version,
                    "Config reloaded: unchanged."
                );
                return Ok(Reloaded {
                    version: current.version,
                    changed: false,
                });
            }
            Ok(config) => config,
            Err(error) => return Err(self.refused(error, trigger, current.version)),
        };
        {
            let mut refused = locked(&self.rollback.refused);
            match refused.as_deref() {
                Some(bad) if *bad == config => {
                    let error = ConfigError {
                        source_name: source.clone(),
                        issues: vec![ConfigIssue {
                            path: String::new(),
                            line: None,
                            message: "this config was rolled back by config_rollback; change the file to apply it again".to_owned(),
                        }],
                    };
                    drop(refused);
                    return Err(self.refused(error, trigger, current.version));
                }
                // The file changed: the refusal is over.
                Some(_) => *refused = None,
                None => {}
            }
        }
        let webhooks = config
            .alerts
            .webhooks
            .iter()
            .filter_map(|webhook| webhook.to_config())
            .collect();
        let snapshot = match self.plane.build(config) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let error = ConfigError {
                    source_name: source,
                    issues: error
                        .0
                        .into_iter()
                        .map(|message| ConfigIssue {
                            path: String::new(),
                            line: None,
                            message,
                        })
                        .collect(),
                };
                return Err(self.refused(error, trigger, current.version));
            }
        };
        let version = snapshot.version;
        let config = snapshot.config.clone();
        self.plane.publish(snapshot);
        if let Some(tls_now) = tls_now {
            *self.tls_seen() = tls_now;
        }
        self.plane.events.set_webhooks(webhooks);
        self.supervisors.apply(&self.plane, &config).await;
        self.watch_for_rollback(current.config.clone(), version);
        metrics
            .config_reloads_total
            .with_label_values(&["success"])
            .inc();
        self.plane.events.emit(
            "config_reload",
            &source,
            Severity::Info,
            &format!("version {version} via {trigger}"),
        );
        Ok(Reloaded {
            version,
            changed: true,
        })
    }

    /// Puts the reload that published `version` on watch, when the new
    /// config has `config_rollback`; `previous` is what a rollback restores.
    fn watch_for_rollback(&self, previous: Arc<Config>, version: u64) {
        let mut watching = locked(&self.rollback.watching);
        if let Some(task) = watching.take() {
            task.abort();
        }
        let Some(settings) = self.plane.snapshot().config.config_rollback.clone() else {
            return;
        };
        let watch = RollbackWatch {
            plane: self.plane.clone(),
            supervisors: self.supervisors.clone(),
            lock: self.lock.clone(),
            book: self.rollback.clone(),
            source: self.source.name(),
        };
        *watching = Some(tokio::spawn(watch.run(settings, previous, version)));
    }

    fn tls_seen(&self) -> std::sync::MutexGuard<'_, u64> {
        self.tls_seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn load(&self) -> Result<Config, ConfigError> {
        match &self.source {
            ConfigSource::File(path) => config::load_file(path, &self.overrides),
            ConfigSource::Embedded => config::load_str(
                config::DEFAULT_CONFIG,
                "<embedded default>",
                &self.overrides,
            ),
        }
    }

    fn refused(&self, error: ConfigError, trigger: &str, version: u64) -> ConfigError {
        self.plane
            .metrics
            .config_reloads_total
            .with_label_values(&["error"])
            .inc();
        self.plane.events.emit(
            "config_reload_failed",
            &self.source.name(),
            Severity::Warning,
            &format!(
                "via {trigger}; still serving version {version}: {}",
                one_line(&error)
            ),
        );
        error
    }

    /// Starts the SIGHUP handler and, for a file config, the file watcher.
    pub fn spawn_triggers(self: &Arc<Self>) -> std::io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let on_signal = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(error) = on_signal.reload("sighup").await {
                    tracing::error!(error = %one_line(&error), "Reload on SIGHUP refused; the previous config keeps serving.");
                }
            }
        });
        if let ConfigSource::File(path) = &self.source {
            tokio::spawn(self.clone().watch_file(path.clone()));
        }
        Ok(())
    }

    async fn watch_file(self: Arc<Self>, path: PathBuf) {
        // No fingerprint yet: the file may have changed between the load
        // at start-up and this task's first look, so the first look
        // compares what the file says with what is running.
        let mut last = None;
        let mut refused_tls = None;
        let mut shutdown = self.plane.watch_shutdown();
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            let now = fingerprint(&path).await;
            // The TLS files of the serving config; a change that was
            // refused (a half-written key) is retried only once it changes
            // again.
            let config = self.plane.snapshot().config.clone();
            let tls_now = tokio::task::spawn_blocking(move || tls_fingerprint(&config))
                .await
                .ok();
            let tls_changed = tls_now
                .is_some_and(|tls_now| tls_now != *self.tls_seen() && Some(tls_now) != refused_tls);
            // A missing file (mid-swap, or deleted) keeps the running config.
            let file_changed = now != last && now.is_some();
            if !file_changed && !tls_changed {
                continue;
            }
            let first_look = last.is_none();
            if file_changed {
                last = now;
            }
            if first_look
                && !tls_changed
                && self
                    .load()
                    .is_ok_and(|config| config == *self.plane.snapshot().config)
            {
                continue;
            }
            let trigger = if file_changed { "file" } else { "tls-file" };
            let reloaded = self.reload(trigger).await;
            refused_tls = if reloaded.is_err() { tls_now } else { None };
            match reloaded {
                Ok(reloaded) if reloaded.changed => {
                    tracing::info!(
                        trigger,
                        version = reloaded.version,
                        "A watched file changed; reloaded."
                    )
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %one_line(&error), "Changed config file refused; the previous config keeps serving.")
                }
            }
        }
    }
}

/// How often a reload on watch samples the reply counters.
const ROLLBACK_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One reload on watch for `config_rollback`.
struct RollbackWatch {
    plane: Arc<DataPlane>,
    supervisors: Arc<Supervisors>,
    lock: Arc<tokio::sync::Mutex<()>>,
    book: Arc<RollbackBook>,
    source: String,
}

impl RollbackWatch {
    /// Replies (and 5xx replies that were not injected faults) so far.
    fn counts(&self) -> (u64, u64) {
        let (replies, server_errors) = self.plane.metrics.replies_and_5xx();
        let injected = self.plane.faults.injected_5xx.load(Ordering::Relaxed);
        (replies, server_errors.saturating_sub(injected))
    }

    async fn run(self, settings: ConfigRollback, previous: Arc<Config>, version: u64) {
        let (replies_then, errors_then) = self.counts();
        let until = Instant::now() + settings.window;
        let mut ticks = tokio::time::interval(ROLLBACK_SAMPLE_EVERY);
        while Instant::now() < until {
            ticks.tick().await;
            let (replies, errors) = self.counts();
            let replies = replies.saturating_sub(replies_then);
            let errors = errors.saturating_sub(errors_then);
            if replies >= settings.min_requests
                && errors as f64 / replies as f64 >= settings.error_rate
            {
                let why = format!(
                    "{errors} of {replies} replies were 5xx since the reload (config_rollback.error_rate {})",
                    settings.error_rate
                );
                self.roll_back(previous, version, why).await;
                return;
            }
        }
    }

    /// Publishes `previous` again, unless a newer reload came first.
    async fn roll_back(self, previous: Arc<Config>, version: u64, why: String) {
        let _one_at_a_time = self.lock.lock().await;
        let current = self.plane.snapshot();
        if current.version != version {
            return;
        }
        let bad = current.config.clone();
        let snapshot = match self.plane.build((*previous).clone()) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.plane.events.emit(
                    "rollback",
                    &self.source,
                    Severity::Critical,
                    &format!("version {version}: {why}; the previous config could not be rebuilt: {error}"),
                );
                return;
            }
        };
        let restored = snapshot.version;
        let webhooks = previous
            .alerts
            .webhooks
            .iter()
            .filter_map(|webhook| webhook.to_config())
            .collect();
        self.plane.publish(snapshot);
        self.plane.events.set_webhooks(webhooks);
        self.supervisors.apply(&self.plane, &previous).await;
        *locked(&self.book.refused) = Some(bad);
        self.plane
            .metrics
            .rollbacks
            .with_label_values(&["config"])
            .inc();
        let detail = format!(
            "config version {version} rolled back (now version {restored}, the previous config): {why}; it is refused until the file changes"
        );
        self.plane
            .events
            .emit("rollback", &self.source, Severity::Critical, &detail);
        *locked(&self.book.last) = Some(json!({
            "rolled_back_version": version,
            "restored_as_version": restored,
            "reason": why,
            "at": crate::events::rfc3339::now(),
        }));
    }
}

/// What a running process cannot change: listeners own sockets and accept
/// loops, the admin server its socket, the runtime its threads. A reload
/// that changes any of them is refused as a whole, naming the key.
fn needs_restart(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let describe = |config: &Config| {
        config
            .listeners
            .iter()
            .map(|listener| format!("{} on {}", listener.name, listener.listen))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut issues = Vec::new();
    let mut restart = |path: &str, message: String| {
        issues.push(ConfigIssue {
            path: path.to_owned(),
            line: None,
            message: format!("{message}; that needs a restart"),
        })
    };
    let addresses = |config: &Config| {
        config
            .listeners
            .iter()
            .map(|listener| (listener.name.clone(), listener.listen))
            .collect::<Vec<_>>()
    };
    if addresses(old) != addresses(new) {
        restart(
            "listeners",
            format!(
                "listener names or addresses changed (from {} to {})",
                describe(old),
                describe(new)
            ),
        );
    }
    if old.admin.listen != new.admin.listen {
        restart(
            "admin.listen",
            format!(
                "the admin address changed (from {} to {})",
                old.admin.listen, new.admin.listen
            ),
        );
    }
    if old.runtime != new.runtime {
        restart("runtime.threads", "the worker threads changed".to_owned());
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ConfigError {
            source_name: "reload".to_owned(),
            issues,
        })
    }
}

/// The TLS files `config` names: every listener's and upstream's.
pub fn tls_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        files.push(&tls.cert);
        files.push(&tls.key);
        files.extend(&tls.client_ca);
    }
    for tls in config.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
        files.extend(&tls.ca);
        files.extend(&tls.client_cert);
        files.extend(&tls.client_key);
    }
    files.into_iter().map(PathBuf::from).collect()
}

/// Hash of the names and contents of `config`'s TLS files (an unreadable
/// one counts as empty).
fn tls_fingerprint(config: &Config) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in tls_files(config) {
        path.hash(&mut hasher);
        std::fs::read(&path).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

/// Hash of the file's content (following symlinks), `None` if unreadable.
async fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// A refused config's errors on one line, for an event: the log and a
/// webhook show one line per event.
fn one_line(error: &ConfigError) -> String {
    let issues: Vec<String> = error.issues.iter().map(ToString::to_string).collect();
    format!(
        "{}: {} error{}: {}",
        error.source_name,
        issues.len(),
        if issues.len() == 1 { "" } else { "s" },
        issues.join("; ")
    )
}
