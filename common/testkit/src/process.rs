//! Helpers for tests that run a function binary as a process, the way Knative runs it.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Sends SIGTERM, as the kubelet does when Knative scales an instance down.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Waits for `child` to exit; fails the test if it takes longer than `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server on `port` speaks HTTP/2 with prior knowledge (h2c): it answers the
/// connection preface and an empty SETTINGS frame with a SETTINGS frame of its own.
pub async fn answers_h2c(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    if stream.write_all(preface).await.is_err() {
        return false;
    }
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
        .await
        .is_ok_and(|r| r.is_ok())
        && header[3] == 0x4
}

/// A connection the server has accepted and served one request on (`GET /healthz`, kept
/// alive), for a request that must be in flight when SIGTERM arrives. On a fresh
/// connection the signal can win the race with the accept loop, and a connection never
/// accepted is reset at exit instead of drained.
pub async fn accepted_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("writes");
    // Headers, then exactly Content-Length bytes of body: the connection stays open.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .expect("reads the probe's answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("the probe's answer has a Content-Length");
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .await
        .expect("reads the probe's body");
    stream
}

/// Waits until process `pid` has read everything sent to it on `stream` (the receive
/// queue of its end of the connection is empty, per /proc), so a request written there is
/// in the server's hands, not in a socket buffer, before the test goes on (say, to send
/// SIGTERM). Fails the test after 10 s.
pub fn wait_until_read(pid: u32, stream: &TcpStream) {
    let client = stream.local_addr().expect("local address").port();
    let server = stream.peer_addr().expect("peer address").port();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = ["tcp", "tcp6"].iter().find_map(|table| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
            text.lines().skip(1).find_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let port = |addr: &str| {
                    addr.rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                };
                (cols.len() > 4 && port(cols[1]) == Some(server) && port(cols[2]) == Some(client))
                    .then(|| cols[4].rsplit(':').next().unwrap_or("0") != "00000000")
            })
        });
        if pending == Some(false) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not read the request within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until nothing accepts connections on `port` of 127.0.0.1 any more: a server that
/// got SIGTERM has closed its listener and is draining. Panics after 10 s. The positive
/// signal that the signal was handled, instead of a sleep that hopes it was.
pub async fn wait_listener_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "port {port} still accepts connections 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
