//! Runs the real `missive dev` binary for process-level tests, and speaks plain HTTP/1.1
//! to it (no client library: what goes over the wire is what the test says).

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `missive dev`.
pub struct Dev {
    pub child: Child,
    pub addr: String,
    /// Where the event endpoints are (`/_events/<function>`).
    pub events_addr: String,
    /// Everything it printed on stdout so far, line by line.
    pub output: Arc<Mutex<Vec<String>>>,
}

/// A test that fails midway must not leave its server running (and consuming Kafka).
impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `missive` with a clean environment, listening on a free port.
pub fn missive() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("DEV_EVENTS_PORT", "0")
        .env("LOG_LEVEL", "warn");
    cmd
}

pub fn mysql_server() -> String {
    std::env::var("MISSIVE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The tests' Redis: one reading of `MISSIVE_TEST_REDIS_URL`, the testkit's.
pub fn redis_url() -> String {
    missive_testkit::redis_url()
}

pub fn kafka_brokers() -> String {
    std::env::var("MISSIVE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

impl Dev {
    /// Starts `missive dev` and waits for the line with its URL.
    pub fn start(mut cmd: Command) -> Dev {
        let mut child = cmd.arg("dev").stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let output = Arc::new(Mutex::new(Vec::new()));
        // Log lines may come first; the URL line is the one with http://.
        let line = loop {
            let line = lines.next().expect("missive dev prints its URL").unwrap();
            output.lock().unwrap().push(line.clone());
            if line.contains("http://") && !line.starts_with('{') {
                break line;
            }
            eprintln!("[missive dev] {line}");
        };
        // `host:port` of the line's URL.
        let addr_in = |line: &str| {
            line.split("http://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_else(|| panic!("no URL in {line:?}"))
                .to_owned()
        };
        let addr = addr_in(&line);
        let events_line = lines
            .next()
            .expect("missive dev prints its event URL")
            .unwrap();
        output.lock().unwrap().push(events_line.clone());
        let events_addr = addr_in(&events_line);
        // The server's log becomes part of the test's captured output.
        let kept = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[missive dev] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        Dev {
            child,
            addr,
            events_addr,
            output,
        }
    }

    /// SIGTERM, then expect exit 0.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0));
                return;
            }
            assert!(Instant::now() < deadline, "missive dev did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// One request; returns (status, headers, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        json: Option<&str>,
    ) -> Response {
        self.request_with(method, path, &[], cookie, json)
    }

    /// One request with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        cookie: Option<&str>,
        json: Option<&str>,
    ) -> Response {
        self.try_request_with(method, path, headers, cookie, json)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    /// Like [`Dev::request_with`], but a connection that fails or closes before a whole
    /// response is an error, not a panic (a server killed under load).
    pub fn try_request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        cookie: Option<&str>,
        json: Option<&str>,
    ) -> std::io::Result<Response> {
        self.try_request_at(&self.addr, method, path, headers, cookie, json)
    }

    /// One request to `addr` (the event endpoints' port, say). `headers` may replace the
    /// default `Host: localhost`.
    pub fn try_request_at(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        cookie: Option<&str>,
        json: Option<&str>,
    ) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            req.push_str("Host: localhost\r\n");
        }
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(cookie) = cookie {
            req.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        if let Some(body) = json {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(req.as_bytes())?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        if !raw.starts_with("HTTP/1.1 ") || !raw.contains("\r\n\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("no whole response: {raw:?}"),
            ));
        }
        Ok(Response::parse(&raw))
    }

    /// Signs up and returns the cookie.
    pub fn signup(&self, name: &str) -> String {
        self.credentials("/api/auth/signup", name, 201)
    }

    /// Logs in (the password [`Dev::signup`] sets) and returns the cookie.
    pub fn login(&self, name: &str) -> String {
        self.credentials("/api/auth/login", name, 200)
    }

    fn credentials(&self, path: &str, name: &str, status: u16) -> String {
        let body = format!(r#"{{"username":"{name}","password":"12345678"}}"#);
        let res = self.request("POST", path, None, Some(&body));
        assert_eq!(res.status, status, "{}", res.body);
        res.cookie().unwrap()
    }

    /// Texts of the user's messages, newest first (up to 100).
    pub fn texts(&self, cookie: &str) -> Vec<String> {
        let res = self.request("GET", "/api/messages?limit=100", Some(cookie), None);
        assert_eq!(res.status, 200, "{}", res.body);
        res.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Activity types of the user, newest first.
    pub fn activity(&self, cookie: &str) -> Vec<String> {
        let res = self.request("GET", "/api/activity", Some(cookie), None);
        res.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The status of `GET path` on `addr` (`127.0.0.1:port`), or `None` when nothing
/// answers there yet.
pub fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    raw.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// One test's topics, database and key prefix.
pub struct Setup {
    pub name: String,
}

impl Setup {
    pub fn new(test: &str) -> Self {
        Self {
            name: format!("missive_test_k{}_{test}", std::process::id()),
        }
    }

    pub fn topic(&self, which: &str) -> String {
        format!("{}.{which}", self.name)
    }

    pub fn command(&self) -> Command {
        let mut cmd = missive();
        cmd.env("DATABASE_URL", format!("{}/{}", mysql_server(), self.name))
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", format!("{}:", self.name))
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("KAFKA_EVENTS_TOPIC", self.topic("events"))
            .env("KAFKA_INBOX_TOPIC", self.topic("inbox"))
            .env("KAFKA_DLQ_TOPIC", self.topic("dlq"))
            .env("DISPATCH_BACKOFF_MS", "20")
            .env("DISPATCH_MAX_ATTEMPTS", "3")
            .env("LOG_LEVEL", "info,rdkafka=warn");
        cmd
    }
}

impl Drop for Setup {
    /// Removes what the test made: its database, topics and Redis keys.
    fn drop(&mut self) {
        drop_database(&self.name);
        let topics = ["events", "inbox", "dlq"].map(|t| self.topic(t));
        let _ = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/kafka_client.py"
            ))
            .args(["delete", &kafka_brokers()])
            .args(&topics)
            .output();
        let prefix = format!("{}:*", self.name);
        let _ = Command::new("sh")
            .args([
                "-c",
                r#"redis-cli -u "$1" --scan --pattern "$2" | xargs -r redis-cli -u "$1" del"#,
                "sh",
                &redis_url(),
                &prefix,
            ])
            .output();
    }
}

/// A parsed HTTP/1.1 response.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        Response {
            status: head[9..12].parse().unwrap(),
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    pub fn cookie(&self) -> Option<String> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    }
}

/// Runs `cmd` with `stdin` as its input; panics with its stderr unless it succeeds.
/// Returns its stdout.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `check` holds, polling, or panics with `what`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sql` with the mariadb client on the test server (`MISSIVE_TEST_DATABASE_URL`,
/// through scripts/mariadb.sh), returning its output without column names.
pub fn mariadb(sql: &str) -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/mariadb.sh"
        ))
        .args(["-N", "-e", sql])
        .output()
        .expect("the mariadb client is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn drop_database(name: &str) {
    mariadb(&format!("DROP DATABASE IF EXISTS `{name}`"));
}
