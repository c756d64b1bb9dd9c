//! Ports for the servers a test starts: handed out once per test process, and bound with a
//! retry, so that tests running in parallel never collide on one.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port nobody listens on right now and that this test process has not handed out before:
/// parallel tests reserve ports some time before their servers bind them, and two tests given
/// the same one would fail with "address in use" (or talk to each other's servers).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if keep_port(port) {
            return port;
        }
    }
}

/// Marks `port` as used by this process for good, so that [`free_port`] never hands it out
/// (a server that goes down and comes back keeps its port); false if it already was.
fn keep_port(port: u16) -> bool {
    static KEPT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    KEPT.lock().unwrap().insert(port)
}

/// Listens on `addr`; port 0 takes one the kernel picks (and keeps it, see [`keep_port`]).
/// The socket is reusable, so that coming back on a port is not stopped by the last run's
/// TIME_WAIT connections, and binding is retried while another process's outgoing connection
/// briefly holds the port.
pub async fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        match socket.bind(addr).and_then(|()| socket.listen(128)) {
            Ok(listener) => {
                keep_port(listener.local_addr().unwrap().port());
                return listener;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot listen on {addr}: {e}"),
        }
    }
}
