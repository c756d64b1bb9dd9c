//! A real mosquitto broker (Debian package) on a free port, started and stopped by a test.

use super::ports::free_port;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: String,
    /// Set once it has run: from then on clients know its port, and a restart must keep it.
    started: bool,
}

impl Mosquitto {
    /// A plain broker allowing anonymous clients.
    pub fn start() -> Self {
        Self::with_config("")
    }

    /// A broker with extra mosquitto.conf lines for its listener (TLS files, ACLs).
    pub fn with_config(extra: &str) -> Self {
        let mut broker = Mosquitto {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_string(),
            started: false,
        };
        broker.launch();
        broker
    }

    /// A broker set up as docs/operations.md asks of a plant's broker: sessions persisted (in a
    /// folder of its own under `dir`) and no limit on the messages queued per client, so that
    /// it holds what edge does not take while it is away or holds intake.
    pub fn persistent(dir: &Path) -> Self {
        Self::persistent_with(dir, "")
    }

    /// As [`persistent`](Self::persistent), with more mosquitto.conf lines.
    pub fn persistent_with(dir: &Path, extra: &str) -> Self {
        // mosquitto started as root drops to its own user: its database folder must be writable.
        let db = dir.join("mosquitto-db");
        std::fs::create_dir(&db).unwrap();
        std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        Self::with_config(&format!(
            "persistence true\npersistence_location {}/\nmax_queued_messages 0\n{extra}",
            db.display()
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts mosquitto on `self.port`. A first start whose port another process took in the
    /// meantime (mosquitto exits at once) moves to a fresh port; a restart keeps its port, as
    /// clients reconnect to it, and tries again until the port is free.
    fn launch(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait(deadline) {
                Ok(()) => {
                    self.started = true;
                    return;
                }
                Err(log) if Instant::now() >= deadline => panic!("mosquitto did not start: {log}"),
                Err(_) if !self.started => self.port = free_port(),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Spawns mosquitto and waits until it accepts connections; `Err` (its log) when it exits.
    fn spawn_and_wait(&mut self, deadline: Instant) -> Result<(), String> {
        let conf = self.dir.path().join("mosquitto.conf");
        let text =
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n{}\n", self.port, self.extra);
        std::fs::write(&conf, text).unwrap();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: apt-get install -y mosquitto (scripts/install-deps does it)");
        let log_path = self.dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(binary).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if child.try_wait().unwrap().is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops with SIGTERM, so that a broker with persistence saves its sessions, then starts
    /// again on the same port.
    pub fn restart_gracefully(&mut self, down_for: Duration) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.launch();
    }

    /// Stops and starts again on the same port (sessions are not persisted).
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
