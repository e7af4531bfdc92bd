//! `fab serve` at the edge, through the real binary: the TLS flags, a certificate re-read on
//! SIGHUP (which only a separate process can be sent safely), an unusable certificate refusing
//! the start, and the configuration warnings printed at start-up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot unwrap should fail loudly"
)]

mod support;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Site;

/// A running `fab serve --json`: the child, its start-up event and its stderr so far.
struct Served {
    child: Child,
    event: Value,
}

impl Served {
    /// Starts `fab serve --json ARGS` and waits for its listening event.
    fn start(site: &Site, args: &[&str]) -> Served {
        let mut all = vec!["serve", "--bind", "127.0.0.1:0", "--json"];
        all.extend(args);
        let mut child = site
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => Served {
                child,
                event: serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            },
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "fab serve did not start: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        self.event["listening"].as_str().unwrap().parse().unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// SIGTERM, then the exit status must be success; returns stderr.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("fab serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(self.child.wait().unwrap().success(), "stderr: {stderr}");
        stderr
    }
}

struct TestCertificate {
    pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn certificate() -> TestCertificate {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    TestCertificate {
        pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().clone(),
    }
}

/// A certificate whose PEM has exactly `len` bytes (ECDSA signatures vary by a byte or two).
fn certificate_of_len(len: usize) -> TestCertificate {
    for _ in 0..200 {
        let candidate = certificate();
        if candidate.pem.len() == len {
            return candidate;
        }
    }
    panic!("no certificate of {len} bytes in 200 tries");
}

/// Connects over TLS 1.3 trusting only `trusted`; the certificate the server presented, or the
/// handshake error (a server presenting another certificate fails verification).
fn presented(
    addr: SocketAddr,
    trusted: &TestCertificate,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    Ok(connection.peer_certificates().unwrap()[0].clone())
}

/// Writes the pair in place (same files, same inodes).
fn write_pair(cert: &Path, key: &Path, pair: &TestCertificate) {
    std::fs::write(key, &pair.key_pem).unwrap();
    std::fs::write(cert, &pair.pem).unwrap();
}

#[test]
fn serve_with_tls_flags_serves_https_and_rereads_the_certificate_on_sighup() {
    let site = Site::new();
    let (cert, key) = (site.path("cert.pem"), site.path("key.pem"));
    let first = certificate();
    write_pair(&cert, &key, &first);
    let served = Served::start(
        &site,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(served.event["tls"], true);
    assert!(
        served.event["url"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:"),
        "{}",
        served.event
    );
    let addr = served.addr();
    assert_eq!(presented(addr, &first).unwrap(), first.der);

    // Replace the pair in place with one of the same sizes and put the old modification times
    // back: the poll cannot tell, only SIGHUP can.
    let stamps: Vec<(PathBuf, std::time::SystemTime)> = [&cert, &key]
        .into_iter()
        .map(|path| {
            (
                path.clone(),
                std::fs::metadata(path).unwrap().modified().unwrap(),
            )
        })
        .collect();
    let second = certificate_of_len(first.pem.len());
    write_pair(&cert, &key, &second);
    assert_eq!(
        second.key_pem.len(),
        first.key_pem.len(),
        "PKCS#8 P-256 keys are one size"
    );
    for (path, modified) in &stamps {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(*modified)
            .unwrap();
    }
    std::thread::sleep(fab::tls::POLL_INTERVAL * 2 + Duration::from_millis(500));
    assert_eq!(
        presented(addr, &first).unwrap(),
        first.der,
        "unchanged-looking files are not re-read by the poll"
    );

    served.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match presented(addr, &second) {
            Ok(der) => {
                assert_eq!(der, second.der);
                break;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "SIGHUP did not reload: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let stderr = served.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_refuses_an_unusable_certificate_naming_the_file_and_creates_no_admin() {
    let site = Site::new();
    let key = site.path("key.pem");
    std::fs::write(&key, certificate().key_pem).unwrap();
    let missing = site.path("missing-cert.pem");
    let output = site
        .command(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(error.contains("TLS_CERT_FILE"), "{error}");
    assert!(error.contains(missing.to_str().unwrap()), "{error}");
    assert!(error.contains("cannot read the certificate"), "{error}");
    assert!(
        output.stdout.is_empty(),
        "no admin password was printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let users = site.command(&["list-users", "--json"]).output().unwrap();
    let users: Value = serde_json::from_slice(&users.stdout).unwrap();
    assert_eq!(users.as_array().map(Vec::len), Some(0), "{users}");
}

#[test]
fn serve_prints_every_configuration_warning_and_insecure_override_at_start() {
    let mut site = Site::new();
    site.set("FAB_ENV", "production")
        .set("SECRET_KEY", &"k".repeat(48))
        .set("PASSWORD_HASH_MEMORY_KIB", "19456")
        .set("PASSWORD_HASH_ITERATIONS", "2")
        .set("ENFORCE_HTTPS", "false")
        .set("ALLOW_INSECURE", "plain-http,insecure-cookies")
        .set("SESSION_TIMEOUT", "7200")
        .set("PERMANENT_SESSION_LIFETIME", "3600");
    let upgrade = site.command(&["db", "upgrade"]).output().unwrap();
    assert!(upgrade.status.success(), "{upgrade:?}");

    let served = Served::start(&site, &[]);
    let warnings: Vec<String> = served.event["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    let stderr = served.stop();
    let printed: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("warning: "))
        .collect();
    for expected in [
        "ALLOW_INSECURE=plain-http",
        "ALLOW_INSECURE=insecure-cookies",
        "PERMANENT_SESSION_LIFETIME is shorter than SESSION_TIMEOUT",
    ] {
        assert_eq!(
            printed.iter().filter(|w| w.contains(expected)).count(),
            1,
            "`{expected}` printed once on stderr: {stderr}"
        );
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "`{expected}` in the start-up event: {warnings:?}"
        );
    }
    assert_eq!(printed.len(), warnings.len(), "{stderr}");
}
