//! A real browser for the dashboard tests: headless Chromium driven over
//! the W3C WebDriver protocol by `chromedriver`, which each [`Browser`]
//! starts on a free port with a fresh profile.
//!
//! The protocol is a handful of JSON calls, so this speaks it with the
//! HTTP client the suite already has rather than a WebDriver crate. Every
//! wait has a deadline. A machine without Chromium fails the test, loudly:
//! `scripts/test.sh` installs Debian's `chromium` and `chromium-driver`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::{free_port, Output};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The window the pages are laid out (and screenshots taken) in.
pub const WINDOW: (u32, u32) = (1400, 1000);

/// How often a wait looks again at the page.
const POLL: Duration = Duration::from_millis(100);

/// A Chromium session; chromedriver and the browser are killed on drop.
pub struct Browser {
    driver: Child,
    driver_output: Output,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

/// The first program of `candidates` found on `PATH` (or given as a path).
fn find_program(env: &str, candidates: &[&str]) -> Option<String> {
    if let Some(path) = std::env::var_os(env) {
        return Some(path.to_string_lossy().into_owned());
    }
    let path = std::env::var_os("PATH")?;
    candidates.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
            .map(|found| found.to_string_lossy().into_owned())
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics with
    /// what went wrong if either cannot start.
    pub async fn start() -> Browser {
        let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]).expect(
            "chromedriver is not installed: the dashboard tests need Debian's `chromium` and \
             `chromium-driver` packages (scripts/test.sh installs them)",
        );
        let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser"]).expect(
            "chromium is not installed: the dashboard tests need Debian's `chromium` and \
             `chromium-driver` packages (scripts/test.sh installs them)",
        );
        let port = free_port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the browser it starts dies with it.
            .process_group(0);
        let mut driver = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {chromedriver}: {error}"));
        let driver_output = Output::default();
        driver_output.capture(driver.stdout.take().expect("stdout"), "chromedriver");
        driver_output.capture(driver.stderr.take().expect("stderr"), "chromedriver");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if let Ok(Some(exit)) = driver.try_wait() {
                panic!(
                    "chromedriver exited ({exit}) before it was ready:\n{}",
                    driver_output.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within 20s:\n{}",
                driver_output.text()
            );
            tokio::time::sleep(POLL).await;
        }

        let profile = tempfile::tempdir().expect("tempdir");
        // No network here, and we run as root: no sandbox, nothing that
        // phones home, a fresh profile.
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session to chromedriver");
        let status = created.status();
        let answer: Value = created.json().await.expect("session JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "Chromium did not start ({status}): {answer}\n{}",
                    driver_output.text()
                )
            })
            .to_owned();
        Browser {
            driver,
            driver_output,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    /// One WebDriver command; `Err` carries the WebDriver error name and
    /// message (e.g. `no such element`).
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("{method} {path}: {error}"))?;
        let ok = response.status().is_success();
        let answer: Value = response
            .json()
            .await
            .map_err(|error| format!("{method} {path}: {error}"))?;
        if ok {
            Ok(answer["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                answer["value"]["error"], answer["value"]["message"]
            ))
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method.clone(), path, body).await {
            Ok(value) => value,
            Err(error) => panic!(
                "WebDriver {method} {path}: {error}\nchromedriver said:\n{}",
                self.driver_output.text()
            ),
        }
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`).
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// The attribute `name` of the first element matching `css`.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let value = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
                json!([css, name]),
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// Polls the text of `css` until `accept` takes it, or panics after
    /// `limit` with what the page showed last.
    pub async fn wait_text(
        &self,
        what: &str,
        css: &str,
        limit: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text(css).await;
            if let Some(text) = text.as_deref().filter(|text| accept(text)) {
                return text.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}: `{css}` shows {text:?}\nthe page header: {:?}\nthe last action: {:?}",
                self.text("#summary").await,
                self.text("#action").await,
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the attribute `name` of `css` until it is `expected`.
    pub async fn wait_attribute(
        &self,
        what: &str,
        css: &str,
        name: &str,
        expected: &str,
        limit: Duration,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.attribute(css, name).await;
            if value.as_deref() == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}: `{css}` [{name}] is {value:?}, not {expected:?}\nthe last action: {:?}",
                self.text("#action").await,
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css`, waiting (bounded) for it.
    async fn element(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            match found {
                Ok(value) => {
                    return value[ELEMENT]
                        .as_str()
                        .expect("an element reference")
                        .to_owned()
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "no element `{css}` within {limit:?}: {error}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the element matching `css` as a user would (scrolled into
    /// view, at its centre), once it is there.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.element(css, Duration::from_secs(10)).await;
            match self
                .try_call(
                    reqwest::Method::POST,
                    &format!("/element/{element}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                // Replaced between finding and clicking: find it again.
                Err(error) if error.contains("stale element") && Instant::now() < deadline => {}
                Err(error) => panic!("clicking `{css}`: {error}"),
            }
        }
    }

    /// Types `text` into the input matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css, Duration::from_secs(10)).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Makes the window tall enough to show the whole page (for a
    /// screenshot), keeping its width.
    pub async fn fit_window_to_page(&self) {
        let sizes = self
            .script(
                "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                json!([]),
            )
            .await;
        let page = sizes[0].as_u64().unwrap_or(u64::from(WINDOW.1));
        let frame = sizes[1].as_u64().unwrap_or(0);
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": WINDOW.0, "height": page + frame})),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .call(reqwest::Method::GET, "/screenshot", None)
            .await
            .as_str()
            .expect("base64 PNG")
            .to_owned();
        let png = base64_decode(&encoded).expect("valid base64 from chromedriver");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }

    /// Ends the session (Chromium exits), then stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self.try_call(reqwest::Method::DELETE, "", None).await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and the browser it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|&b| b != b'=').collect();
        let mut word = 0u32;
        for (i, &byte) in data.iter().enumerate() {
            word |= value(byte)? << (18 - 6 * i);
        }
        let produced = data.len().saturating_sub(1);
        out.extend_from_slice(&word.to_be_bytes()[1..=produced.min(3)]);
    }
    Some(out)
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
    assert_eq!(base64_decode("").unwrap(), b"");
    assert!(base64_decode("a$==").is_none());
}
