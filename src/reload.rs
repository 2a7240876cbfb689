//! Live reload (SPEC §8.2): SIGHUP, `POST /config/reload`, or a change to
//! the config file.
//!
//! Every trigger ends in [`reload`], which builds the whole new snapshot on
//! the side and publishes it with one atomic swap — or, if the file is
//! invalid, changes nothing and returns every error. Requests in flight
//! keep the snapshot they started with.
//!
//! The file is watched by polling its content once a second rather than
//! with inotify: Kubernetes updates a mounted ConfigMap by swapping a
//! `..data` symlink, which inotify on the file misses and inotify on the
//! directory reports noisily; comparing content is correct for symlink
//! swaps, editors that rename, and network filesystems alike, and a config
//! file costs nothing to read.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config, ConfigError, ConfigIssue};
use crate::events::Severity;
use crate::proxy::snapshot::Snapshot;
use crate::state::{ConfigSource, State};

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Config version now serving.
    pub version: u64,
    /// False when the file was unchanged (nothing was swapped).
    pub changed: bool,
}

/// Loads the config again and swaps it in if valid. `trigger` names the
/// cause for the log (`sighup`, `admin`, `file`).
pub async fn reload(state: &State, trigger: &str) -> Result<Reloaded, ConfigError> {
    let _one_at_a_time = state.reload_lock.lock().await;
    let result = match &state.source {
        ConfigSource::File(path) => config::load_file(path, &state.overrides),
        ConfigSource::Embedded => config::load_str(
            config::DEFAULT_CONFIG,
            "<embedded default>",
            &state.overrides,
        ),
    };
    let current = state.snapshot();
    let result = result.and_then(|config| {
        check_restart_only(&current.config, &config)?;
        Ok(config)
    });
    match result {
        Ok(config) if config == *current.config => {
            state
                .metrics
                .config_reloads_total
                .with_label_values(&["success"])
                .inc();
            tracing::info!(
                trigger,
                version = current.version,
                "Config reloaded: unchanged."
            );
            Ok(Reloaded {
                version: current.version,
                changed: false,
            })
        }
        Ok(config) => {
            let version = current.version + 1;
            let snapshot = Snapshot::build(
                config,
                version,
                Some(&current),
                &state.metrics,
                &state.events,
            );
            state.publish(snapshot);
            state
                .metrics
                .config_reloads_total
                .with_label_values(&["success"])
                .inc();
            state.events.emit(
                "config_reload",
                source_name(state),
                Severity::Info,
                &format!("version {version} via {trigger}"),
            );
            Ok(Reloaded {
                version,
                changed: true,
            })
        }
        Err(error) => {
            state
                .metrics
                .config_reloads_total
                .with_label_values(&["error"])
                .inc();
            state.events.emit(
                "config_reload_failed",
                source_name(state),
                Severity::Warning,
                &format!(
                    "via {trigger}; still serving version {}: {error}",
                    current.version
                ),
            );
            Err(error)
        }
    }
}

fn source_name(state: &State) -> &str {
    match &state.source {
        ConfigSource::File(path) => path.to_str().unwrap_or("config"),
        ConfigSource::Embedded => "<embedded default>",
    }
}

/// Listeners own sockets and accept loops: adding, removing, renaming or
/// moving one needs a restart, so such a reload is refused as a whole
/// rather than half-applied.
fn check_restart_only(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let old_set: Vec<(&str, std::net::SocketAddr)> = old
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.listen))
        .collect();
    let new_set: Vec<(&str, std::net::SocketAddr)> = new
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.listen))
        .collect();
    let mut issues = Vec::new();
    if old_set != new_set {
        issues.push(ConfigIssue {
            path: "listeners".to_owned(),
            line: None,
            message: format!("listener names and addresses changed ({old_set:?} → {new_set:?}); that needs a restart"),
        });
    }
    if old.admin.listen != new.admin.listen {
        issues.push(ConfigIssue {
            path: "admin.listen".to_owned(),
            line: None,
            message: "changing the admin address needs a restart".to_owned(),
        });
    }
    if old.runtime != new.runtime {
        issues.push(ConfigIssue {
            path: "runtime".to_owned(),
            line: None,
            message: "changing runtime settings needs a restart".to_owned(),
        });
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

/// Starts the SIGHUP handler and, for a file config, the file watcher.
pub fn spawn_triggers(state: Arc<State>) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let on_signal = state.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(error) = reload(&on_signal, "sighup").await {
                tracing::error!(%error, "Reload on SIGHUP refused; the previous config keeps serving.");
            }
        }
    });
    if let ConfigSource::File(path) = &state.source {
        let path = path.clone();
        tokio::spawn(watch_file(state, path));
    }
    Ok(())
}

async fn watch_file(state: Arc<State>, path: std::path::PathBuf) {
    let mut last = fingerprint(&path).await;
    let mut shutdown = state.shutdown.subscribe();
    let mut ticks = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let now = fingerprint(&path).await;
        if now == last || now.is_none() {
            // A missing file (mid-swap, or deleted) keeps the running config.
            continue;
        }
        last = now;
        match reload(&state, "file").await {
            Ok(reloaded) if reloaded.changed => {
                tracing::info!(version = reloaded.version, "Config file changed; reloaded.")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "Changed config file refused; the previous config keeps serving.")
            }
        }
    }
}

/// Hash of the file's content (following symlinks), `None` if unreadable.
async fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}
