//! A real headless Chromium driven over the DevTools protocol, for tests of the pages Tally
//! serves (`/ops`, `/admin`): navigate, evaluate JavaScript in the page (read the DOM, click a
//! button, type into a field — the page's own handlers run), wait for a condition, take a
//! screenshot. Everything runs in the browser as it would for a person; nothing is faked.
//!
//! The protocol is JSON over a WebSocket. The browser is started with
//! `--remote-debugging-port=0` and writes the port it chose into `DevToolsActivePort` in its
//! profile directory; the test attaches to one page target (`flatten` sessions) and sends
//! commands one at a time, reading events in between: console errors, uncaught exceptions and
//! Content-Security-Policy violations are collected so a test can assert there were none.
//!
//! The browser is `TALLY_CHROMIUM` (`scripts/test` installs Debian's `chromium` and sets it),
//! else `chromium` on the usual paths; without one the test fails and says so.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// The flags every headless run here starts the browser with: no sandbox (tests run as root
/// in CI), no GPU, no /dev/shm (small in containers), no first-run pages, no scrollbars in
/// screenshots.
pub const HEADLESS_FLAGS: [&str; 6] =
    ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"];

/// How long one protocol command may take (a navigation, an evaluation, a screenshot).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the browser may take to start and open its debugging port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `wait_for` evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The browser binary: `TALLY_CHROMIUM`, else Chromium or Chrome on the usual paths.
pub fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("TALLY_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "TALLY_CHROMIUM={} is not a file", path.display());
        return path;
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no headless browser: install Debian's `chromium` (scripts/test does: apt-get install -y chromium) \
                 or set TALLY_CHROMIUM to a Chromium binary"
            )
        })
}

/// Where screenshots are kept as CI artifacts: `TALLY_ARTIFACTS_DIR`, default
/// `target/ci-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var("TALLY_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    dir
}

/// One headless Chromium with one page, killed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: WebSocket<TcpStream>,
    session_id: String,
    next_id: u64,
    /// Console errors, uncaught exceptions and CSP violations seen so far, in order.
    problems: Vec<String>,
}

impl Browser {
    /// Starts the browser with a window of `width` × `height` CSS pixels and attaches to a
    /// blank page.
    pub fn launch(width: u32, height: u32) -> Browser {
        let browser = chromium();
        let profile = std::env::temp_dir().join(format!("tally-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap_or_else(|error| panic!("create {}: {error}", profile.display()));
        let child = Command::new(&browser)
            .args(HEADLESS_FLAGS)
            .args([
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", browser.display()));
        let (port, endpoint) = Browser::devtools_endpoint(&profile);
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|error| panic!("connect to the browser's DevTools port {port}: {error}"));
        stream.set_read_timeout(Some(COMMAND_TIMEOUT)).expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        let (socket, _) = tungstenite::client(endpoint.as_str(), stream)
            .unwrap_or_else(|error| panic!("open the browser's DevTools WebSocket {endpoint}: {error}"));
        let mut browser =
            Browser { child, profile, socket, session_id: String::new(), next_id: 0, problems: Vec::new() };
        let target = browser.command(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.command(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        browser.session_id = attached["sessionId"].as_str().expect("sessionId").to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// The browser's debugging port and browser-level WebSocket URL, from the
    /// `DevToolsActivePort` file it writes once it listens (first line the port, second the
    /// path).
    fn devtools_endpoint(profile: &Path) -> (u16, String) {
        let file = profile.join("DevToolsActivePort");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(Ok(port)), Some(path)) =
                    (lines.next().map(|port| port.trim().parse::<u16>()), lines.next())
                {
                    return (port, format!("ws://127.0.0.1:{port}{}", path.trim()));
                }
            }
            assert!(
                started.elapsed() < LAUNCH_TIMEOUT,
                "the browser did not open its DevTools port in {LAUNCH_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command (to the page's session, or the browser's when `session` is None) and
    /// returns its result, collecting the events that arrive meanwhile.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|error| panic!("send {method} to the browser: {error}"));
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < COMMAND_TIMEOUT, "{method}: no answer from the browser in {COMMAND_TIMEOUT:?}");
            let frame =
                self.socket.read().unwrap_or_else(|error| panic!("read the browser's answer to {method}: {error}"));
            let text = match frame {
                Message::Text(text) => text.to_string(),
                Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                _ => continue,
            };
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|error| panic!("browser sent {text}: {error}"));
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed in the browser: {error}");
                }
                return value["result"].clone();
            }
            self.collect(&value);
        }
    }

    /// Keeps what a test may want to assert there was none of.
    fn collect(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"].as_str().or(details["text"].as_str()).unwrap_or("?");
                self.problems.push(format!("uncaught exception: {text}"));
            }
            Some("Log.entryAdded") => {
                let entry = &params["entry"];
                // Network errors (a 403 the page asked for and shows) are expected; what is
                // not: script errors, CSP violations, anything the page logs as an error.
                if entry["level"] == "error" && entry["source"] != "network" {
                    self.problems.push(format!("{}: {}", entry["source"], entry["text"]));
                }
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.problems.push(format!("console.error: {}", params["args"]));
            }
            _ => {}
        }
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session_id.clone();
        self.command(Some(&session), method, params)
    }

    /// Opens `url` and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url}));
        assert!(answer.get("errorText").is_none(), "navigate to {url}: {answer}");
        self.wait_for("the document to load", "document.readyState === 'complete'", Duration::from_secs(30));
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value as JSON;
    /// an exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
        );
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {}", details["exception"]["description"].as_str().unwrap_or("?"));
        }
        answer["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page and returns its value; on time-out
    /// fails with what the page shows.
    pub fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value =
                self.eval(&format!("(() => {{ try {{ return ({expression}); }} catch (_) {{ return null; }} }})()"));
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(flag) => *flag,
                Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0),
                Value::String(text) => !text.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if started.elapsed() > limit {
                let page = self.eval("document.body ? document.body.innerText.slice(0, 3000) : ''");
                panic!(
                    "waited {limit:?} for {what} (`{expression}`); the page shows:\n{}\nproblems: {:?}",
                    page.as_str().unwrap_or(""),
                    self.problems
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether an element matching `selector` exists.
    pub fn exists(&mut self, selector: &str) -> bool {
        self.eval(&format!("document.querySelector({}) !== null", json!(selector))) == json!(true)
    }

    /// Whether an element matching `selector` exists and is rendered (not `display: none`).
    pub fn visible(&mut self, selector: &str) -> bool {
        self.eval(&format!(
            "(() => {{ const node = document.querySelector({}); return node !== null && node.getClientRects().length > 0; }})()",
            json!(selector)
        )) == json!(true)
    }

    /// The text of the first element matching `selector`; fails if there is none.
    pub fn text(&mut self, selector: &str) -> String {
        let value = self.eval(&format!(
            "(() => {{ const node = document.querySelector({}); return node === null ? null : node.textContent; }})()",
            json!(selector)
        ));
        value.as_str().unwrap_or_else(|| panic!("no element {selector} in the page")).to_owned()
    }

    /// An attribute of the first element matching `selector` (None if absent).
    pub fn attribute(&mut self, selector: &str, name: &str) -> Option<String> {
        self.eval(&format!(
            "(() => {{ const node = document.querySelector({}); return node === null ? null : node.getAttribute({}); }})()",
            json!(selector),
            json!(name)
        ))
        .as_str()
        .map(str::to_owned)
    }

    /// Clicks the first element matching `selector`, as a person's click would (its handlers
    /// run); fails if there is none or it is disabled or not rendered.
    pub fn click(&mut self, selector: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const node = document.querySelector({0}); \
               if (node === null) return 'no element ' + {0}; \
               if (node.disabled) return 'disabled: ' + {0}; \
               if (node.getClientRects().length === 0) return 'not rendered: ' + {0}; \
               node.scrollIntoView({{block: 'center'}}); node.click(); return 'ok'; }})()",
            json!(selector)
        ));
        assert_eq!(clicked, json!("ok"), "click {selector}");
    }

    /// Types `value` into the field matching `selector` (replacing what it held), firing the
    /// `input` and `change` events a person's typing would.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let filled = self.eval(&format!(
            "(() => {{ const node = document.querySelector({0}); if (node === null) return 'no element ' + {0}; \
               node.focus(); node.value = {1}; \
               node.dispatchEvent(new Event('input', {{bubbles: true}})); \
               node.dispatchEvent(new Event('change', {{bubbles: true}})); return 'ok'; }})()",
            json!(selector),
            json!(value)
        ));
        assert_eq!(filled, json!("ok"), "fill {selector}");
    }

    /// Saves a PNG of the whole page (beyond the viewport) at `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
        std::fs::write(path, &png).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    }

    /// Console errors, uncaught exceptions and CSP violations seen so far. Reads pending
    /// events first (one cheap evaluation).
    pub fn problems(&mut self) -> Vec<String> {
        self.eval("0");
        self.problems.clone()
    }
}

impl Drop for Browser {
    /// Asks the browser to close (it ends its renderer and helper processes, which a kill of
    /// the main process would leave writing into the profile for a moment), kills it if it
    /// has not exited within a few seconds, then removes the profile.
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.socket.send(Message::text(close.to_string()));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
