//! Spawning, watching and stopping the supervised process: the I/O half of
//! the supervisor.
//!
//! The child runs in its own process group (so a stop signal reaches its
//! children too) and gets `PR_SET_PDEATHSIG(SIGKILL)`: if breakwater dies —
//! even by SIGKILL — the kernel kills the child, so it never outlives the
//! proxy. Its stdout and stderr are forwarded line by line into
//! breakwater's log, tagged with the process name, each line capped at
//! [`MAX_LINE`] bytes. Its exit is seen at once through tokio's child
//! handle (a SIGCHLD-driven wait, no polling).
#![allow(unsafe_code)] // Only `pre_exec`, for prctl; see the SAFETY note.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use std::sync::Arc;

use tokio::sync::mpsc;

use super::ladder::Action;
use super::restart::Exit;

/// Longest child log line forwarded; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// What to run (`supervisor.process`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessSpec {
    /// Program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory, if not breakwater's.
    pub cwd: Option<String>,
}

/// A running child.
pub struct Running {
    child: Child,
    /// Its process id (also its process group id).
    pub pid: u32,
}

/// Log lines that act: each match sends its action to the supervisor.
#[derive(Clone)]
pub struct LogWatch {
    /// Patterns and what a match does.
    pub patterns: Arc<Vec<(regex::Regex, Action)>>,
    /// Where matches go; a full channel drops the match (the supervisor is
    /// already acting).
    pub matches: mpsc::Sender<Action>,
}

/// Spawns `spec`, forwarding its output under `name` and matching it
/// against `watch`.
pub fn spawn(spec: &ProcessSpec, name: &str, watch: Option<LogWatch>) -> std::io::Result<Running> {
    let mut command = Command::new(&spec.command);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, _exit) with no
    // allocation or locking.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or(0);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(
            stdout,
            name.to_owned(),
            "stdout",
            watch.clone(),
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(stderr, name.to_owned(), "stderr", watch));
    }
    Ok(Running { child, pid })
}

/// Where `spec`'s command resolves to, as `exec` would find it: relative
/// to `cwd` when it names a path, else the first executable file of that
/// name on `PATH`. `None` when there is none (what a user must be told
/// when a spawn fails).
pub fn resolve(spec: &ProcessSpec) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    let command = std::path::Path::new(&spec.command);
    if spec.command.contains('/') {
        let path = match &spec.cwd {
            Some(cwd) if command.is_relative() => std::path::Path::new(cwd).join(command),
            _ => command.to_path_buf(),
        };
        return executable(&path).then_some(path);
    }
    let search = spec
        .env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| std::ffi::OsString::from(value))
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(command))
        .find(|path| executable(path))
}

/// Logs each line of `stream`, capped at [`MAX_LINE`] bytes.
async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    name: String,
    which: &'static str,
    watch: Option<LogWatch>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let mut overflow = false;
        // Read one line without letting it grow past the cap.
        loop {
            let buffer = match reader.fill_buf().await {
                Ok([]) => return,
                Ok(buffer) => buffer,
                Err(_) => return,
            };
            let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (buffer.len(), false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            let keep = taken.min(room);
            line.extend_from_slice(&buffer[..keep]);
            overflow |= keep < taken;
            reader.consume(taken);
            if done {
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(target: "breakwater::child", process = %name, stream = which, truncated = overflow.then_some(true), "{text}");
        if let Some(watch) = &watch {
            if let Some((_, action)) = watch
                .patterns
                .iter()
                .find(|(regex, _)| regex.is_match(text))
            {
                let _ = watch.matches.try_send(*action);
            }
        }
    }
}

impl Running {
    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => exit_of(status),
            Err(_) => Exit::Code(-1),
        }
    }

    /// Sends `signal` to the child's process group.
    pub fn signal(&self, signal: i32) {
        if self.pid > 0 {
            // SAFETY: kill(2) with a negative pid signals a process group;
            // no memory is shared.
            unsafe {
                libc::kill(-(self.pid as i32), signal);
            }
        }
    }

    /// Stops the child: `signal`, then SIGKILL after `grace`. Returns how it
    /// ended.
    pub async fn stop(&mut self, signal: i32, grace: Duration) -> Exit {
        self.signal(signal);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => exit_of(status),
            _ => {
                tracing::warn!(
                    pid = self.pid,
                    grace = %crate::units::format_duration(grace),
                    "Child did not stop in time; sending SIGKILL."
                );
                self.signal(libc::SIGKILL);
                self.wait().await
            }
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_like_exec() {
        let spec = |command: &str| ProcessSpec {
            command: command.into(),
            args: vec![],
            env: vec![],
            cwd: None,
        };
        assert!(resolve(&spec("sh")).is_some_and(|path| path.is_absolute()));
        assert_eq!(resolve(&spec("no-such-command-here")), None);
        assert_eq!(resolve(&spec("./no/such/file")), None);
    }

    #[tokio::test]
    async fn spawns_waits_and_stops() {
        let spec = ProcessSpec {
            command: "sh".into(),
            args: vec!["-c".into(), "exit 3".into()],
            env: vec![],
            cwd: None,
        };
        let mut running = spawn(&spec, "t", None).unwrap();
        assert_eq!(running.wait().await, Exit::Code(3));
        let spec = ProcessSpec {
            command: "sleep".into(),
            args: vec!["30".into()],
            env: vec![],
            cwd: None,
        };
        let mut running = spawn(&spec, "t", None).unwrap();
        assert_eq!(
            running.stop(libc::SIGTERM, Duration::from_secs(5)).await,
            Exit::Signal(libc::SIGTERM)
        );
        // A process that ignores SIGTERM (an ignored signal stays ignored
        // across exec) ends only by the SIGKILL after the grace period.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("trapped");
        let script = format!("trap '' TERM; touch {}; exec sleep 30", marker.display());
        let spec = ProcessSpec {
            command: "sh".into(),
            args: vec!["-c".into(), script],
            env: vec![],
            cwd: None,
        };
        let mut running = spawn(&spec, "t", None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !marker.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child never set its trap"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            running
                .stop(libc::SIGTERM, Duration::from_millis(300))
                .await,
            Exit::Signal(libc::SIGKILL)
        );
    }
}
