//! TLS for the backend tests: certificates made on the spot (a CA of the test's own, a
//! server certificate it signs, and an unrelated CA), and private servers that speak
//! only TLS with them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files in a directory of their own (removed on drop).
pub struct Pki {
    dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing here: trusting it (only) must fail.
    pub other_ca: PathBuf,
    /// The server's certificate, for the names given to [`Pki::new`].
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

impl Pki {
    /// A CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("missive-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let (ca_cert, ca_params, ca_key) = ca("missive test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let server_cert = CertificateParams::new(names)
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        // Another name: a CA with the same name would fail on the signature instead.
        let (other_cert, _, _) = ca("unrelated test CA");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("writing a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_cert.pem()),
            cert: write("server.pem", server_cert.pem()),
            key: write("server-key.pem", server_key.serialize_pem()),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA named `name`.
fn ca(name: &str) -> (Certificate, CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, params, key)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A private `redis-server` (Debian's package) that accepts only TLS, with `pki`'s
/// certificate; stopped on drop.
pub struct TlsRedis {
    child: Child,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
}

impl TlsRedis {
    /// Starts it and waits until it accepts connections (at most 10 s).
    pub fn start(pki: &Pki) -> Self {
        let port = free_port();
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path(&pki.cert)])
            .args(["--tls-key-file", &path(&pki.key)])
            .args(["--tls-ca-cert-file", &path(&pki.ca)])
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) with TLS");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private MariaDB (Debian's `mariadb-server`, initialised by `mariadb-install-db` into
/// a directory of its own) that refuses connections without TLS
/// (`require_secure_transport`), with `pki`'s certificate and a user that must use TLS
/// (`REQUIRE SSL`); stopped and removed on drop.
pub struct TlsMariaDb {
    child: Child,
    dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl TlsMariaDb {
    /// The user the tests connect as, and its password.
    pub const USER: (&'static str, &'static str) = ("missive", "tls-only");

    /// Initialises, starts and waits for it (at most 30 s).
    pub fn start(pki: &Pki) -> Self {
        let dir = std::env::temp_dir().join(format!("missive-mariadb-{}", uuid::Uuid::new_v4()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("temporary directory");
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
        let installed = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", path(&data)))
            .args(["--user=root", "--auth-root-authentication-method=socket"])
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db (Debian's mariadb-server package)");
        assert!(installed.success(), "mariadb-install-db failed");
        let port = free_port();
        let socket = dir.join("mysqld.sock");
        // Debian puts it in /usr/sbin, which is not on every PATH.
        let mariadbd = if Path::new("/usr/sbin/mariadbd").exists() {
            "/usr/sbin/mariadbd"
        } else {
            "mariadbd"
        };
        let child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", path(&data)))
            .args(["--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", path(&socket)))
            .arg(format!("--pid-file={}", path(&dir.join("mysqld.pid"))))
            .arg(format!("--log-error={}", path(&dir.join("error.log"))))
            .arg(format!("--ssl-cert={}", path(&pki.cert)))
            .arg(format!("--ssl-key={}", path(&pki.key)))
            .arg(format!("--ssl-ca={}", path(&pki.ca)))
            .args(["--require-secure-transport=ON", "--skip-log-bin"])
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (Debian's mariadb-server package)");
        let server = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        let (user, password) = Self::USER;
        let grant = format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL; \
             GRANT ALL ON *.* TO '{user}'@'%';"
        );
        loop {
            // Over the socket as root (socket authentication): allowed without TLS.
            let done = Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", path(&socket)))
                .args(["-u", "root", "-e", &grant])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("the mariadb client (Debian's mariadb-client package)");
            if done.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the private MariaDB did not start; see {}",
                server.dir.join("error.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `mysql://missive:…@{host}:{port}/{database}` for the TLS-only user.
    pub fn url(&self, host: &str, database: &str) -> String {
        let (user, password) = Self::USER;
        format!("mysql://{user}:{password}@{host}:{}/{database}", self.port)
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Kafka that speaks only TLS: a tansu broker (the Kafka-compatible broker the
/// tests use) on a loopback port nobody is told about, behind `stunnel` (Debian's
/// package) with `pki`'s certificate, advertising the TLS port under `host`. tansu 0.6
/// cannot serve TLS itself (its `--cert` and `--key` options exclude each other). With
/// `authentication` every client must also authenticate over SASL (PLAIN, or SCRAM for
/// users made with [`TlsKafka::create_user`]); that needs tansu built with its SASL
/// mechanisms (`scripts/kafka.sh` builds it: scripts/tansu-sasl), and its SQLite storage
/// in the broker's directory, the one that keeps SCRAM credentials. Stopped on drop.
pub struct TlsKafka {
    broker: Child,
    tunnel: Child,
    dir: PathBuf,
    ca: PathBuf,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
}

/// Where `scripts/kafka.sh` builds tansu with SASL (`MISSIVE_TANSU_SASL` overrides).
pub fn tansu_sasl() -> PathBuf {
    if let Some(path) = std::env::var_os("MISSIVE_TANSU_SASL") {
        return path.into();
    }
    let tools = std::env::var_os("MISSIVE_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/missive-tools"),
        PathBuf::from,
    );
    tools.join("tansu-sasl-target/release/tansu-sasl")
}

impl TlsKafka {
    /// Starts both and waits until the broker answers through the tunnel (at most 10 s).
    pub fn start(pki: &Pki, host: &str, authentication: bool) -> Self {
        let (inner, port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("missive-kafka-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
        let (tansu, storage) = if authentication {
            let built = tansu_sasl();
            assert!(
                built.is_file(),
                "{} is missing: run scripts/kafka.sh",
                built.display()
            );
            // tansu reads the path as relative to its working directory (set below).
            (built, "sqlite://tansu.db".to_owned())
        } else {
            (PathBuf::from("tansu"), "memory://tansu/".to_owned())
        };
        let mut cmd = Command::new(&tansu);
        cmd.current_dir(&dir)
            .args(["broker", "--storage-engine", &storage])
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{inner}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{host}:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            cmd.arg("--authentication");
        }
        let broker = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} (scripts/kafka.sh installs it): {e}", tansu.display()));
        let config = dir.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{inner}\ncert = {}\nkey = {}\n",
                path(&dir.join("stunnel.log")),
                path(&pki.cert),
                path(&pki.key),
            ),
        )
        .expect("writing stunnel.conf");
        let tunnel = Command::new("stunnel")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel (Debian's stunnel4 package; scripts/setup.sh installs it)");
        let server = Self {
            broker,
            tunnel,
            dir,
            ca: pki.ca.clone(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [inner, port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "tansu or stunnel did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        server
    }

    /// Gives `user` SCRAM-SHA-256 and SCRAM-SHA-512 credentials with `password`, through
    /// an outside client (Python's confluent-kafka, as the other Kafka tests use),
    /// authenticated with PLAIN, which tansu lets any password pass.
    pub fn create_user(&self, user: &str, password: &str) {
        let script = r#"
import sys
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
port, ca, user, password = sys.argv[1:5]
admin = AdminClient({"bootstrap.servers": f"localhost:{port}", "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN", "sasl.username": "admin", "sasl.password": "admin",
    "ssl.ca.location": ca, "log_level": 0})
upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(m, 4096), password.encode(), b"missive-test-salt")
           for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
for future in admin.alter_user_scram_credentials(upserts, request_timeout=10).values():
    future.result()
"#;
        let out = Command::new("python3")
            .args(["-c", script, &self.port.to_string()])
            .arg(&self.ca)
            .args([user, password])
            .output()
            .expect("python3 with confluent-kafka (scripts/kafka.sh installs it)");
        assert!(
            out.status.success(),
            "creating the SCRAM user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        for child in [&mut self.tunnel, &mut self.broker] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
