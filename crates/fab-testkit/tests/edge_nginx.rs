//! deploy/nginx.conf, for real: Debian's nginx runs that file (placeholders filled in) on free
//! loopback ports with a self-signed certificate, in front of a fab TestServer started with
//! `TRUSTED_PROXIES=127.0.0.1` and `ENFORCE_HTTPS=true`, and the tests talk to nginx as a browser
//! would.
//!
//! The client connects from 127.0.0.2, not 127.0.0.1: nginx itself reaches fab from 127.0.0.1,
//! and that address is the trusted proxy. A client on 127.0.0.1 would look like a proxy hop to
//! fab, which would rightly skip it when walking X-Forwarded-For, so only a client on another
//! address shows which address fab takes.
//!
//! nginx is required: a machine without it fails these tests (CI installs Debian's `nginx`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer, TestServerOptions};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address the test's client connects from (see the module docs).
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];
/// What a client writes into its own X-Forwarded-For, hoping to be audited under it.
const FORGED_IP: &str = "203.0.113.9";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The nginx binary: on PATH, else Debian's /usr/sbin/nginx.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        binary.is_file(),
        "nginx is not installed: these tests run deploy/nginx.conf on Debian's nginx \
         (`apt-get install -y nginx`); .ci/run installs it"
    );
    binary
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running nginx master process on deploy/nginx.conf; stopped (SIGTERM, then SIGKILL) on drop.
struct Nginx {
    child: Child,
    https: SocketAddr,
    http: SocketAddr,
    certificate: reqwest::Certificate,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in front of `upstream`; retries with new ports if a port was taken meanwhile.
    fn start(upstream: SocketAddr) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(upstream) {
                Ok(nginx) => return nginx,
                Err(error) => last_error = error,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(upstream: SocketAddr) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // nginx's workers run as an unprivileged user when the test runs as root: they must be
        // able to enter the directory and write their temporary files.
        set_mode(root, 0o755);
        for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let path = root.join("temp").join(temp);
            std::fs::create_dir_all(&path).unwrap();
            set_mode(&path, 0o777);
        }
        set_mode(&root.join("temp"), 0o755);

        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = root.join("cert.pem");
        let key = root.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let template = std::fs::read_to_string(workspace_root().join("deploy/nginx.conf"))
            .expect("deploy/nginx.conf");
        let site = template
            .replace("__FAB_UPSTREAM__", &upstream.to_string())
            .replace("__LISTEN_HTTPS__", &https.to_string())
            .replace("__LISTEN_HTTP__", &http.to_string())
            .replace("__SERVER_NAME__", "localhost")
            .replace("__CERT__", cert.to_str().unwrap())
            .replace("__KEY__", key.to_str().unwrap());
        // Comments may mention placeholders; directives must not keep any.
        let unfilled: Vec<&str> = site
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && line.contains("__"))
            .collect();
        assert!(
            unfilled.is_empty(),
            "placeholders left in the site file: {unfilled:?}"
        );
        std::fs::write(root.join("site.conf"), site).unwrap();

        let temp = root.join("temp");
        let main = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {t}/body;\n\
             \x20   proxy_temp_path {t}/proxy;\n\
             \x20   fastcgi_temp_path {t}/fastcgi;\n\
             \x20   uwsgi_temp_path {t}/uwsgi;\n\
             \x20   scgi_temp_path {t}/scgi;\n\
             \x20   include {site};\n\
             }}\n",
            t = temp.display(),
            site = root.join("site.conf").display(),
        );
        std::fs::write(root.join("nginx.conf"), main).unwrap();

        let stderr_path = root.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let globals = format!(
            "daemon off; pid {}; error_log stderr;",
            root.join("nginx.pid").display()
        );
        let mut child = Command::new(nginx_binary())
            .arg("-e")
            .arg("stderr")
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run nginx");

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!("nginx exited with {status}: {log}"));
            }
            let up = [https, http]
                .iter()
                .all(|addr| std::net::TcpStream::connect(addr).is_ok());
            if up {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!("nginx did not listen within 10 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx {
            child,
            https,
            http,
            certificate: reqwest::Certificate::from_der(generated.cert.der()).unwrap(),
            stderr_path,
            _dir: dir,
        })
    }

    /// A client that trusts nginx's certificate, reaches `localhost` at nginx, connects from
    /// [`CLIENT_IP`] and follows no redirects.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([self.certificate.clone()])
            .resolve("localhost", self.https)
            .local_address(IpAddr::from(CLIENT_IP))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL if it does not within 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// fab behind nginx, configured as deploy/nginx.conf says.
async fn fab_behind_nginx() -> (TestServer, Nginx) {
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set("TRUSTED_PROXIES", "127.0.0.1")
            .set("ENFORCE_HTTPS", "true"),
    )
    .await;
    let nginx = Nginx::start(server.addr);
    (server, nginx)
}

fn header_count(response: &reqwest::Response, name: &str) -> usize {
    response.headers().get_all(name).iter().count()
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_and_unsafe_methods_are_refused() {
    let (server, nginx) = fab_behind_nginx().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let response = client
        .get(nginx.http_url("/users/list/?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308, "{}", nginx.log());
    assert_eq!(
        response.headers()["location"],
        "https://localhost/users/list/?page=2",
        "same path and query, on the configured server name"
    );

    let response = client
        .post(nginx.http_url("/login/"))
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "credentials over plain HTTP are refused"
    );
    assert!(
        server
            .store
            .recent_audit(10, Some("user.login"))
            .await
            .unwrap()
            .is_empty(),
        "the plain-HTTP post never reached fab"
    );

    // fab enforces HTTPS by itself too: reached directly, without the proxy's
    // X-Forwarded-Proto, it redirects.
    let direct = client
        .get(format!("{}/users/list/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        308,
        "ENFORCE_HTTPS on fab's own plain listener"
    );
    server.stop().await;
}

#[tokio::test]
async fn https_through_nginx_reaches_fab_and_carries_fabs_headers_exactly_once() {
    let (server, nginx) = fab_behind_nginx().await;
    let response = nginx
        .client()
        .get(nginx.https_url("/login/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", nginx.log());
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "nginx speaks HTTP/2 to browsers"
    );
    // HSTS is sent by fab only for requests that arrived over HTTPS: here it learned that from
    // nginx's X-Forwarded-Proto. Once: nginx adds none of its own.
    for name in [
        "strict-transport-security",
        "x-frame-options",
        "x-content-type-options",
        "content-security-policy",
    ] {
        assert_eq!(
            header_count(&response, name),
            1,
            "{name} exactly once: {:?}",
            response.headers()
        );
    }
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        response.headers()["server"],
        "nginx",
        "no version (server_tokens off)"
    );
    server.stop().await;
}

#[tokio::test]
async fn fab_audits_the_address_nginx_saw_not_the_one_the_client_forged() {
    let (server, nginx) = fab_behind_nginx().await;
    // The client forges X-Forwarded-For. nginx appends the address it saw, so fab receives
    // `X-Forwarded-For: 203.0.113.9, 127.0.0.2` from its socket peer 127.0.0.1. That peer is a
    // trusted proxy, so fab reads the chain from the right: 127.0.0.2 is not a trusted proxy,
    // so it is the client, and the forged 203.0.113.9 to its left is never reached.
    let response = nginx
        .client()
        .post(nginx.https_url("/login/"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", FORGED_IP)
        .header("x-real-ip", FORGED_IP)
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        303,
        "logged in through nginx: {}",
        nginx.log()
    );
    let logins = server
        .store
        .recent_audit(1, Some("user.login"))
        .await
        .unwrap();
    assert_eq!(
        logins[0].event.origin.ip.as_deref(),
        Some("127.0.0.2"),
        "the client address nginx saw (not nginx's 127.0.0.1, not the forged {FORGED_IP})"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_written_x_forwarded_host_does_not_get_through_nginx() {
    let (server, nginx) = fab_behind_nginx().await;
    let client = nginx.client();
    let origin = format!("https://localhost:{}", nginx.https.port());

    // A browser posting from the page itself: its Origin carries the port, and so does the
    // X-Forwarded-Host nginx sets from the Host it received, so fab's same-origin check passes.
    let response = client
        .post(nginx.https_url("/login/"))
        .header("origin", &origin)
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "same-origin post through nginx");

    // A request that names another host in its own X-Forwarded-Host, to make fab believe it was
    // addressed as evil.example (and so accept an evil.example Origin). nginx replaces the
    // header with the host the client really addressed, and fab refuses the cross-site post.
    let response = client
        .post(nginx.https_url("/login/"))
        .header("origin", "https://evil.example")
        .header("x-forwarded-host", "evil.example")
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "the client's X-Forwarded-Host reached fab: {}",
        response.text().await.unwrap_or_default()
    );
    server.stop().await;
}
