//! A TCP proxy between edge and the broker that a test can cut: every open connection is
//! dropped and new ones are refused until it is restored (a network drop).

use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: bool,
    connections: Vec<AbortHandle>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    runtime: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn start(upstream: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if shared.lock().unwrap().cut {
                    continue; // dropped: the client sees the connection close at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                shared.lock().unwrap().connections.push(task.abort_handle());
            }
        });
        Proxy { port, state, runtime }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        let _ = &self.runtime;
    }
}
