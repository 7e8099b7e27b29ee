//! The `missive` binary as a user runs it: `missive dev` with nothing configured, on the
//! real services, and `missive migrate`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn missive() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("LOG_LEVEL", "warn");
    cmd
}

fn mysql_server() -> String {
    std::env::var("MISSIVE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// One HTTP/1.1 request; returns the raw response.
fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn signup(addr: &str, name: &str) -> String {
    let body = format!(r#"{{"username":"{name}","password":"12345678"}}"#);
    http(
        addr,
        &format!(
            "POST /api/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Starts `missive dev`, returns it and the address from the line it prints.
fn start_dev(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("a line").unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn stop(mut child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            return;
        }
        assert!(Instant::now() < deadline, "missive dev did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dev_runs_with_nothing_configured() {
    let dir = std::env::temp_dir().join(format!("missive-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = missive();
    cmd.current_dir(&dir);
    let (child, addr) = start_dev(cmd);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "dev listens on loopback: {addr}"
    );
    assert!(
        http(
            &addr,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200")
    );
    assert!(signup(&addr, "devuser").starts_with("HTTP/1.1 201"));
    assert!(
        dir.join(".missive/missive.db").exists(),
        "SQLite file under ./.missive/"
    );
    stop(child);
    // Data survives a restart.
    let mut cmd = missive();
    cmd.current_dir(&dir);
    let (child, addr) = start_dev(cmd);
    assert!(signup(&addr, "devuser").starts_with("HTTP/1.1 409"));
    stop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_runs_on_mariadb_and_redis_creating_the_database() {
    let name = format!("missive_test_dev_{}", std::process::id());
    let url = format!("{}/{name}", mysql_server());
    let mut cmd = missive();
    cmd.arg("dev")
        .env("DATABASE_URL", &url)
        .env(
            "REDIS_URL",
            std::env::var("MISSIVE_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        )
        .env("REDIS_KEY_PREFIX", format!("{name}:"));
    let (child, addr) = start_dev(cmd);
    assert!(signup(&addr, "realuser").starts_with("HTTP/1.1 201"));
    assert!(
        http(
            &addr,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200")
    );
    stop(child);
    drop_database(&name);
}

#[test]
fn migrate_creates_and_migrates_idempotently() {
    let name = format!("missive_test_migrate_{}", std::process::id());
    let url = format!("{}/{name}", mysql_server());
    for _ in 0..2 {
        let out = missive()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tables = mariadb(&format!(
        "SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = '{name}'"
    ));
    let mut tables: Vec<&str> = tables.trim().split(',').collect();
    tables.sort_unstable();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "idempotency_keys",
            "message_tokens",
            "messages",
            "outbox",
            "outbox_lease",
            "processed_events",
            "users"
        ]
    );
    drop_database(&name);
    let out = missive().arg("migrate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

fn mariadb(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-e", sql])
        .output()
        .expect("the mariadb client is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn drop_database(name: &str) {
    mariadb(&format!("DROP DATABASE IF EXISTS `{name}`"));
}
