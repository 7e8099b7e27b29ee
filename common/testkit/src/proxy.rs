//! A TCP proxy that a test can cut: the way to take a backend (MariaDB, Redis, a Kafka
//! broker) away from the code under test without touching the server other tests share.
//! Plain threads, so it works beside any runtime and in any test binary.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Up,
    /// The backend is gone: open connections are closed, new ones are accepted and closed
    /// at once (the client reads EOF or a reset).
    Down,
    /// The backend hangs: open connections stop carrying bytes (they are delivered when
    /// the proxy is up again), new ones are accepted and never answered: what a network
    /// partition looks like.
    Hang,
}

/// A proxy from a free local port to `target`; it stops forwarding when dropped.
pub struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `target` (`host:port`).
    pub fn start(target: &str) -> Self {
        Self::start_on(0, target)
    }

    /// Like [`Proxy::start`] on a given port (`0` for a free one).
    pub fn start_on(port: u16, target: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
        let port = listener.local_addr().expect("bound").port();
        let mode = Arc::new(AtomicU8::new(Mode::Up as u8));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (mode2, open2, target) = (mode.clone(), open.clone(), target.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                match current(&mode2) {
                    Mode::Down => continue, // dropped: closed
                    Mode::Hang => {
                        open2.lock().expect("lock").push(client);
                        continue;
                    }
                    Mode::Up => {}
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut open = open2.lock().expect("lock");
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                for (from, to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let mode = mode2.clone();
                    std::thread::spawn(move || pump(from, to, &mode));
                }
            }
        });
        Self { port, mode, open }
    }

    /// The port to connect to instead of the backend's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes what the proxy does; [`Mode::Down`] also closes every open connection.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Mode::Down {
            for stream in self.open.lock().expect("lock").drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Down);
    }
}

fn current(mode: &AtomicU8) -> Mode {
    match mode.load(Ordering::SeqCst) {
        0 => Mode::Up,
        1 => Mode::Down,
        _ => Mode::Hang,
    }
}

/// Copies `from` to `to` while the proxy is up. In [`Mode::Hang`] the bytes read are held
/// back until it is up again, as a network partition delays them (TCP retransmits what
/// was lost once the path heals): the peer waits, and nothing is lost or reordered.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while current(mode) == Mode::Hang {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if current(mode) == Mode::Down || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
