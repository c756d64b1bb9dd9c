//! A real headless Chromium (Debian's `chromium`) driven through the DevTools protocol over
//! `--remote-debugging-pipe` (fd 3 in, fd 4 out, NUL-terminated JSON): no WebDriver, no
//! websocket crate. Enough to open a page and evaluate JavaScript in it.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    replies: BufReader<std::io::PipeReader>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens `url` in a new tab.
    pub fn open(url: &str) -> Self {
        let binary = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
            .expect("chromium is not installed: run scripts/install-deps");
        let profile = tempfile::tempdir().unwrap();
        let (their_in, commands) = std::io::pipe().unwrap();
        let (replies, their_out) = std::io::pipe().unwrap();
        let (fd_in, fd_out) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut command = Command::new(binary);
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(profile.path().join("chromium.log")).unwrap());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Either pipe end may itself be fd 3 or 4: move both out of the way first.
                let (high_in, high_out) =
                    (libc::fcntl(fd_in, libc::F_DUPFD, 10), libc::fcntl(fd_out, libc::F_DUPFD, 10));
                if high_in < 0 || high_out < 0 || libc::dup2(high_in, 3) < 0 || libc::dup2(high_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high_in);
                libc::close(high_out);
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop((their_in, their_out));
        let mut browser = Browser {
            child,
            commands,
            replies: BufReader::new(replies),
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": url }), false);
        let target_id = target["targetId"].as_str().expect("a target id").to_string();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), false);
        browser.session = attached["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    /// Evaluates `expression` in the page; its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let reply = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }), true);
        assert!(reply.get("exceptionDetails").is_none(), "{expression} threw: {reply}");
        reply["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`, or panics with `what`.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, expression: &str) {
        let deadline = Instant::now() + timeout;
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what} in the page");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if in_page {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let gone = |browser: &Self| {
            let log = std::fs::read_to_string(browser._profile.path().join("chromium.log")).unwrap_or_default();
            format!("chromium closed the DevTools pipe; its log:\n{log}")
        };
        if self.commands.write_all(&bytes).is_err() {
            panic!("{}", gone(self));
        }
        loop {
            let mut raw = Vec::new();
            let n = self.replies.read_until(0, &mut raw).unwrap_or(0);
            assert!(n > 0, "{}", gone(self));
            raw.pop();
            let reply: Value = serde_json::from_slice(&raw).unwrap();
            // Everything else is an event or another call's answer.
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
