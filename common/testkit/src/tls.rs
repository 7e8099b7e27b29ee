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
