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
