//! How connections reach fab, tried on the wire against a real server on loopback: native TLS
//! (versions, ALPN, HSTS, certificate replaced without restart), the connection limits
//! (slowloris heads, stalled handshakes, idle HTTP/2, oversized heads, MAX_CONNECTIONS) and
//! graceful shutdown. Each wait is bounded; the timeouts under test are set to one second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer, TestServerOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, SupportedProtocolVersion};

/// Upper bound of any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(10);

const HSTS_MISSING: &str = "Strict-Transport-Security is added by fab-web's header layer to \
    responses of requests that arrived over TLS (fab_web::Transport { tls: true }); if this \
    fails, that layer is missing or does not read the Transport extension the listener inserts";

// ---------------------------------------------------------------------------------------------
// Certificates and TLS clients

/// A self-signed certificate for `localhost` and its key.
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

/// The certificate and key paths in `dir`.
fn pair_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Writes `certificate` into `dir` the way renewal tools do: a new file renamed over the old.
fn install(dir: &Path, certificate: &TestCertificate) {
    let (cert, key) = pair_paths(dir);
    for (path, text) in [(&key, &certificate.key_pem), (&cert, &certificate.pem)] {
        let staging = path.with_extension("new");
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, path).unwrap();
    }
}

async fn tls_server(
    dir: &Path,
    certificate: &TestCertificate,
    settings: &[(&str, &str)],
) -> TestServer {
    install(dir, certificate);
    let (cert, key) = pair_paths(dir);
    let mut options = TestServerOptions::default()
        .set("TLS_CERT_FILE", cert.to_str().unwrap())
        .set("TLS_KEY_FILE", key.to_str().unwrap());
    for (name, value) in settings {
        options = options.set(name, value);
    }
    let server = TestServer::start_with(options).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    server
}

async fn plain_server(settings: &[(&str, &str)]) -> TestServer {
    let mut options = TestServerOptions::default();
    for (name, value) in settings {
        options = options.set(name, value);
    }
    TestServer::start_with(options).await
}

fn client_config(
    trusted: &TestCertificate,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(PATIENCE, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake finishes in time")
}

/// The leaf certificate the server presented.
fn presented(stream: &TlsStream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A reqwest client trusting only `certificate`, reaching `https://localhost:PORT` at `server`.
fn https_client(certificate: &TestCertificate, server: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&certificate.der).unwrap()])
        .resolve("localhost", server)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE)
}

/// `https://localhost:PORT` for a TLS test server.
fn localhost_url(server: &TestServer) -> String {
    format!("https://localhost:{}", server.addr.port())
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 on the wire

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Headers = Vec<(String, String)>;

/// Splits a response into status, headers and where the body starts; None while incomplete.
fn parse_head(bytes: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Some((status, headers, end + 4))
}

/// Reads one response with a Content-Length body, leaving the connection open.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> RawResponse {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((status, headers, body_start)) = parse_head(&bytes) {
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if bytes.len() >= body_start + length {
                let body = bytes[body_start..body_start + length].to_vec();
                return RawResponse {
                    status,
                    headers,
                    body,
                };
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the response arrives in time")
            .expect("read the response");
        assert!(read > 0, "connection closed mid-response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// Sends `request` and reads one response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> RawResponse {
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_response(stream).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// How a connection the test keeps quiet on ended.
#[derive(Debug)]
enum Ending {
    /// The server closed it (EOF or reset), after sending these bytes.
    Closed { after: Duration, received: Vec<u8> },
    /// Still open when the test stopped waiting.
    StillOpen,
}

/// Reads until the server closes the connection or `within` passes.
async fn wait_for_close<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Ending {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return Ending::StillOpen,
            Ok(Ok(0) | Err(_)) => {
                return Ending::Closed {
                    after: started.elapsed(),
                    received,
                };
            }
            Ok(Ok(read)) => received.extend_from_slice(&chunk[..read]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_listener_serves_http11_over_tls12_and_tls13_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[]).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client_config(&cert, &[version], &[b"http/1.1"]);
        let mut stream = tls_connect(server.addr, config).await.unwrap();
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(version.version),
            "negotiated the only version offered"
        );
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(b"http/1.1".as_slice())
        );
        let response = exchange(&mut stream, &get("/health")).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert!(!response.body.is_empty(), "the whole body arrived");
        let hsts = response.values("strict-transport-security");
        assert_eq!(hsts.len(), 1, "{HSTS_MISSING}: {response:?}");
        assert!(hsts[0].starts_with("max-age=31536000"), "{hsts:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn tls_listener_speaks_http2_when_alpn_chooses_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[]).await;
    let config = client_config(&cert, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let stream = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    drop(stream);

    let response = https_client(&cert, server.addr)
        .build()
        .unwrap()
        .get(format!("{}/health", localhost_url(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get_all("strict-transport-security")
            .iter()
            .count(),
        1,
        "{HSTS_MISSING}"
    );
    server.stop().await;
}

/// A TLS 1.1 ClientHello: client_version 3.2 and no supported_versions extension, otherwise
/// something a TLS 1.2 server could answer.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version: TLS 1.1
    hello.extend([0x42; 32]); // random
    hello.push(0); // no session id
    // ECDHE-ECDSA-AES128-GCM-SHA256 (which TLS 1.2 would accept, so only the version can fail),
    // ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA, RSA-AES128-SHA.
    let suites: [u16; 4] = [0xc02b, 0xc009, 0xc013, 0x002f];
    hello.extend(u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend(suite.to_be_bytes());
    }
    hello.extend([1, 0]); // compression methods: null
    // Extensions a TLS 1.2 server needs to pick the certificate, and no supported_versions:
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pkcs1_sha256), supported_groups
    // (secp256r1, x25519), ec_point_formats (uncompressed).
    let extensions: [&[u8]; 3] = [
        &[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01],
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d],
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00],
    ];
    let extensions = extensions.concat();
    hello.extend(u16::try_from(extensions.len()).unwrap().to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, legacy version
    record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let Ending::Closed { received, .. } = wait_for_close(&mut tcp, PATIENCE).await else {
        panic!("the server neither answered nor closed a TLS 1.1 ClientHello");
    };
    // One alert record: type 21, any version, length 2, level fatal (2), protocol_version (70).
    assert!(received.len() >= 7, "an alert, not silence: {received:?}");
    assert_eq!(
        received[0], 21,
        "an alert record, not a ServerHello: {received:?}"
    );
    assert_eq!(
        &received[3..7],
        [0, 2, 2, 70],
        "fatal protocol_version alert"
    );
    server.stop().await;
}

#[tokio::test]
async fn replaced_certificate_reaches_new_connections_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate();
    let server = tls_server(dir.path(), &first, &[]).await;
    let trusts_first = client_config(&first, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut kept = tls_connect(server.addr, Arc::clone(&trusts_first))
        .await
        .unwrap();
    assert_eq!(presented(&kept), first.der);
    assert_eq!(exchange(&mut kept, &get("/health")).await.status, 200);

    // A broken renewal: the old certificate keeps serving.
    let (cert_path, _) = pair_paths(dir.path());
    std::fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    tokio::time::sleep(fab::tls::POLL_INTERVAL * 2 + Duration::from_millis(500)).await;
    let during = tls_connect(server.addr, Arc::clone(&trusts_first))
        .await
        .unwrap();
    assert_eq!(
        presented(&during),
        first.der,
        "a bad file keeps the old certificate"
    );
    drop(during);

    // A good renewal: new connections get it, without a restart.
    let second = certificate();
    install(dir.path(), &second);
    let trusts_second = client_config(&second, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let deadline = Instant::now() + PATIENCE;
    let mut renewed = loop {
        if let Ok(stream) = tls_connect(server.addr, Arc::clone(&trusts_second)).await {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(presented(&renewed), second.der);
    assert_eq!(exchange(&mut renewed, &get("/health")).await.status, 200);

    // The connection opened before the renewal keeps its certificate and keeps working.
    assert_eq!(presented(&kept), first.der);
    assert_eq!(exchange(&mut kept, &get("/health")).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed_at_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[("HEADER_READ_TIMEOUT", "1")]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    tcp.write_all(&tls11_client_hello()[..5]).await.unwrap();
    match wait_for_close(&mut tcp, PATIENCE).await {
        Ending::Closed { after, .. } => assert!(
            after >= Duration::from_millis(800) && after < Duration::from_secs(4),
            "closed after {after:?}"
        ),
        Ending::StillOpen => panic!("a stalled handshake held its connection for {PATIENCE:?}"),
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn slow_request_head_is_closed_at_the_header_read_timeout() {
    let server = plain_server(&[("HEADER_READ_TIMEOUT", "1")]).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    // Slowloris: a valid head, one header line every 200 ms, never the blank line.
    let drip = tokio::spawn(async move {
        if writer
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"X-Drip: a\r\n").await.is_err() {
                return;
            }
        }
    });
    match wait_for_close(&mut reader, PATIENCE).await {
        Ending::Closed { after, received } => {
            assert!(
                after >= Duration::from_millis(800) && after < Duration::from_secs(4),
                "closed after {after:?}"
            );
            assert!(
                !String::from_utf8_lossy(&received).contains(" 200 "),
                "a head that never finished was not served: {received:?}"
            );
        }
        Ending::StillOpen => panic!("a dripping request head held its connection for {PATIENCE:?}"),
    }
    drip.abort();
    server.stop().await;
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed_at_the_header_read_timeout() {
    let server = plain_server(&[("HEADER_READ_TIMEOUT", "1")]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut idle, &get("/health")).await.status, 200);
    for (what, stream) in [("silent", &mut silent), ("idle keep-alive", &mut idle)] {
        match wait_for_close(stream, PATIENCE).await {
            Ending::Closed { after, .. } => {
                assert!(
                    after < Duration::from_secs(4),
                    "{what}: closed after {after:?}"
                );
            }
            Ending::StillOpen => panic!("a {what} connection was kept for {PATIENCE:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn idle_http2_connection_is_sent_goaway_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[("HEADER_READ_TIMEOUT", "1")]).await;
    let config = client_config(&cert, &[&rustls::version::TLS13], &[b"h2"]);
    let mut stream = tls_connect(server.addr, config).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    // The client preface and an empty SETTINGS frame, then silence: no request, no PING answer.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let Ending::Closed { after, received } = wait_for_close(&mut stream, PATIENCE).await else {
        panic!("an idle HTTP/2 connection was kept for {PATIENCE:?}");
    };
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    // Walk the frames: 3-byte length, type, flags, 4-byte stream id, payload.
    let mut frame_types = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = usize::from(received[at]) << 16
            | usize::from(received[at + 1]) << 8
            | usize::from(received[at + 2]);
        frame_types.push(received[at + 3]);
        at += 9 + length;
    }
    assert!(
        frame_types.contains(&7),
        "a GOAWAY frame before the close; frame types {frame_types:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_request_head_gets_431_and_one_within_the_limit_is_served() {
    let server = plain_server(&[("MAX_HEADER_BYTES", "8192")]).await;
    let request = |filler: usize| {
        format!(
            "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(filler)
        )
    };

    let mut within = TcpStream::connect(server.addr).await.unwrap();
    let response = exchange(&mut within, &request(7000)).await;
    assert_eq!(response.status, 200, "a 7 KB head is within 8 KiB");

    let mut over = TcpStream::connect(server.addr).await.unwrap();
    over.write_all(request(9000).as_bytes()).await.unwrap();
    let Ending::Closed { received, .. } = wait_for_close(&mut over, PATIENCE).await else {
        panic!("an oversized head left the connection open");
    };
    let (status, _, _) =
        parse_head(&received).unwrap_or_else(|| panic!("an answer before the close: {received:?}"));
    assert_eq!(status, 431, "Request Header Fields Too Large");
    server.stop().await;
}

#[tokio::test]
async fn oversized_header_list_over_http2_gets_431() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let server = tls_server(dir.path(), &cert, &[("MAX_HEADER_BYTES", "8192")]).await;
    let client = https_client(&cert, server.addr).build().unwrap();
    let url = format!("{}/health", localhost_url(&server));
    let small = client
        .get(&url)
        .header("x-filler", "a".repeat(7000))
        .send()
        .await
        .unwrap();
    assert_eq!(small.version(), reqwest::Version::HTTP_2);
    assert_eq!(small.status(), 200);
    let large = client
        .get(&url)
        .header("x-filler", "a".repeat(9000))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 431);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let server = plain_server(&[("MAX_CONNECTIONS", "2")]).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut first, &get("/health")).await.status, 200);
    assert_eq!(exchange(&mut second, &get("/health")).await.status, 200);

    // The kernel completes the third handshake (accept queue), but fab does not take it.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(get("/health").as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond MAX_CONNECTIONS=2"
    );

    // Closing one frees its slot; the waiting connection is then served.
    drop(first);
    let response = read_response(&mut third).await;
    assert_eq!(response.status, 200);
    assert_eq!(exchange(&mut second, &get("/health")).await.status, 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_refuses_new_connections() {
    let server = plain_server(&[]).await;
    let addr = server.addr;
    let body = format!("username={ADMIN_USERNAME}&password={ADMIN_PASSWORD}");
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /login/ HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: same-origin\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first_half.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // The login handler is now waiting for the rest of its body.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::spawn(server.stop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // Queued in the backlog as the listener closed, then reset: not served either.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("connecting after shutdown: {error}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "still accepting after shutdown");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the request in flight"
    );

    stream.write_all(second_half.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 303, "the login completed: {response:?}");
    assert!(
        response
            .values("set-cookie")
            .iter()
            .any(|c| c.starts_with("fab_session=")),
        "with its session cookie: {response:?}"
    );
    assert_eq!(
        response.values("connection"),
        ["close"],
        "and the connection is closed after it"
    );
    assert!(matches!(
        wait_for_close(&mut stream, PATIENCE).await,
        Ending::Closed { .. }
    ));
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown completes once the request is answered")
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// What each request carries

/// Logs in with `client` (bound to a loopback address of the test's choosing), sending a forged
/// X-Forwarded-For, and returns the IP the audit trail recorded for that login.
async fn audited_login_ip(server: &TestServer, client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/login/"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", "203.0.113.9")
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let events = server
        .store
        .recent_audit(1, Some("user.login"))
        .await
        .unwrap();
    events[0].event.origin.ip.clone().unwrap()
}

#[tokio::test]
async fn every_request_carries_its_socket_peer_over_tcp_and_tls() {
    let plain = plain_server(&[]).await;
    let from_seven = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 7]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(
        audited_login_ip(&plain, &from_seven, &plain.url).await,
        "127.0.0.7",
        "the socket peer, not the forged X-Forwarded-For of an untrusted client"
    );
    plain.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let cert = certificate();
    let tls = tls_server(dir.path(), &cert, &[]).await;
    let from_eight = https_client(&cert, tls.addr)
        .local_address(IpAddr::from([127, 0, 0, 8]))
        .build()
        .unwrap();
    assert_eq!(
        audited_login_ip(&tls, &from_eight, &localhost_url(&tls)).await,
        "127.0.0.8"
    );
    tls.stop().await;
}
