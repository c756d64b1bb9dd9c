//! `edge run` as a child process: its log captured to a file, stopped with SIGTERM like an
//! operator would, killed with SIGKILL if it does not stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct EdgeProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl EdgeProcess {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts with these environment variables set.
    pub fn start_with_env(config: &Path, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .arg(config)
            .env("EDGE_LOG", std::env::var("TEST_EDGE_LOG").unwrap_or_else(|_| "info,rumqttd=warn,edge=debug".into()))
            .env_remove("EDGE_LOG_FORMAT");
        Self::spawn(command, config.with_extension("log"))
    }

    /// Another program, handled the same way (a benchmark's baseline), its stderr into `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        EdgeProcess { child: Some(child), log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "timed out waiting for log line {needle:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("edge did not stop within 30 s of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// As [`http_get`], or the error when nothing answers (yet).
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The JSON at `path` of an HTTP endpoint (`Null` when it does not answer or is not JSON).
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    try_http_get(addr, path).ok().and_then(|(_, body)| serde_json::from_str(&body).ok()).unwrap_or_default()
}

/// Polls `check` until it holds, or panics with `what`.
pub fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/readyz` at `addr` shows each of `sources` with its subscriptions acknowledged
/// by the broker on its current connection (all of a source's topics are answered at once):
/// from then on, what is published reaches it.
pub fn wait_subscribed(addr: &str, sources: &[&str], timeout: Duration) {
    eventually(&format!("{sources:?} subscribed"), timeout, || {
        let ready = get_json(addr, "/readyz");
        sources.iter().all(|s| ready["sources"][s]["subscribed"].as_array().is_some_and(|t| !t.is_empty()))
    });
}

/// User and system CPU time of process `pid`, in clock ticks (`sysconf(_SC_CLK_TCK)` a second).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Resident memory of process `pid` now (`VmRSS`) or at its peak (`VmHWM`), in KiB.
pub fn memory_kb(pid: u32, key: &str) -> u64 {
    status_field(&format!("/proc/{pid}/status"), key)
}

/// Context switches of every thread of process `pid` so far, voluntary or not: each is a wake-up
/// or a preemption. (A thread's count goes with it when it exits.)
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .map(|task| {
            let status = task.path().join("status");
            let status = status.to_string_lossy();
            status_field(&status, "voluntary_ctxt_switches") + status_field(&status, "nonvoluntary_ctxt_switches")
        })
        .sum()
}

/// A numeric field of a /proc status file (`key:  value [unit]`), 0 when absent.
fn status_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn rss_kb(pid: u32) -> u64 {
    memory_kb(pid, "VmRSS")
}
