//! A TCP relay in front of a server: it can stop listening and cut every connection, then listen
//! again on the same port, which is how a test makes an outage for one client while the server
//! and its other clients go on.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A TCP relay that can stop listening and cut its connections, then listen again on the same
/// port.
pub struct Relay {
    pub listen: SocketAddr,
    target: SocketAddr,
    state: Arc<RelayState>,
}

#[derive(Default)]
pub struct RelayState {
    /// Bumped on every stop: accept loops and pumps of an older generation end.
    generation: Mutex<u64>,
    connections: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
    /// Milliseconds each answer from the broker is held back.
    delay_ms: AtomicU64,
}

impl Relay {
    pub fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let relay = Relay {
            listen,
            target,
            state: Arc::new(RelayState::default()),
        };
        relay.start_listening();
        relay
    }

    pub fn start_listening(&self) {
        let listener = {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                match TcpListener::bind(self.listen) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(
                            Instant::now() < end,
                            "relay cannot bind {}: {e}",
                            self.listen
                        );
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        self.state.stopped.store(false, Ordering::SeqCst);
        let generation = *self.state.generation.lock().unwrap();
        let state = self.state.clone();
        let target = self.target;
        thread::spawn(move || {
            loop {
                if *state.generation.lock().unwrap() != generation {
                    return; // dropping the listener closes the port
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        client.set_nonblocking(false).ok();
                        let mut conns = state.connections.lock().unwrap();
                        for s in [&client, &server] {
                            if let Ok(c) = s.try_clone() {
                                conns.push(c);
                            }
                        }
                        drop(conns);
                        pump(&client, &server, None);
                        pump(&server, &client, Some(state.clone()));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    /// Holds every answer of the server back by `delay`.
    pub fn delay_answers(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        if self.state.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.state.generation.lock().unwrap() += 1;
        for c in self.state.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // The accept loop notices within 5 ms and drops its listener; wait until nothing
        // accepts on the port.
        let end = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&self.listen, Duration::from_millis(100)).is_ok() {
            assert!(Instant::now() < end, "the relay kept listening");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Copies one direction of a connection on its own thread until either side closes, holding
/// each chunk back by the relay's delay when `delayed` is given.
fn pump(from: &TcpStream, to: &TcpStream, delayed: Option<Arc<RelayState>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        use std::io::{Read, Write};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(state) = &delayed {
                let ms = state.delay_ms.load(Ordering::Relaxed);
                if ms > 0 {
                    thread::sleep(Duration::from_millis(ms));
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}
