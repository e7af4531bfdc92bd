//! How connections reach fab: [`Edge`], fab's own accept loop over plain TCP or TLS, with the
//! limits a server facing the internet needs, and graceful shutdown.
//!
//! Threat: clients that hold connections without finishing a request (slowloris: a request head
//! sent a byte at a time, a TLS handshake never completed, an HTTP/2 connection left open with
//! nothing on it), that send an enormous request head, or that open connections without bound,
//! until the server runs out of memory, file descriptors or tasks; and a restart that cuts
//! answers in the middle.
//!
//! Rule:
//! - At most `MAX_CONNECTIONS` connections are served at once. At the limit fab stops accepting
//!   until one closes; further clients wait in the kernel's accept queue, so fab's tasks and
//!   memory stay bounded whatever arrives.
//! - A TLS handshake must finish within `HEADER_READ_TIMEOUT`.
//! - HTTP/1.1 (keep-alive on): each request head must arrive within `HEADER_READ_TIMEOUT` of fab
//!   starting to wait for it, which also closes keep-alive connections idle that long; a head
//!   (request line and headers) longer than `MAX_HEADER_BYTES` gets 431 and the connection is
//!   closed; a malformed head gets 400.
//! - HTTP/2 is spoken over TLS when ALPN chose `h2`: a header list longer than
//!   `MAX_HEADER_BYTES` gets 431, at most [`MAX_CONCURRENT_STREAMS`] requests run at once per
//!   connection, and a connection with no request in progress (response bodies count until they
//!   are sent) for `HEADER_READ_TIMEOUT` is sent GOAWAY, then closed outright if the client has
//!   not finished after another such period.
//! - Plain TCP speaks HTTP/1.1 only. No browser speaks cleartext HTTP/2, reverse proxies talk
//!   HTTP/1.1 to their upstream, and recognising it would mean waiting for the 24-byte HTTP/2
//!   preface before any header timer runs (hyper-util's auto builder does that wait with no
//!   timeout, so a client that connects and sends nothing would hold its slot for ever).
//! - Every request carries `ConnectInfo<SocketAddr>` (the socket peer, the only address fab
//!   believes unless that peer is a trusted proxy) and [`fab_web::Transport`] (whether fab
//!   terminated TLS).
//! - Shutdown: the listener is closed first (new connections are refused), then every connection
//!   is asked to finish: HTTP/1.1 completes the request in progress, response body included, and
//!   closes; an idle one closes at once; HTTP/2 sends GOAWAY and completes its open streams. What
//!   is still open after the drain timeout ([`DRAIN_TIMEOUT`] by default) is cut, and logged.
//!
//! Ordering: these limits act on the connection, before a request reaches the router. Body sizes
//! per route class and the whole-request timeout (408) are fab-web's layers.

use crate::tls::{CertificateStore, TlsError};
use axum::Router;
use axum::extract::ConnectInfo;
use fab_core::config::{Config, RequestLimits};
use fab_web::Transport;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// How long shutdown waits for requests in flight before cutting them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests served at once on one HTTP/2 connection (RFC 9113 recommends at least 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// How long to pause accepting after an accept error that is not about one connection (e.g. out
/// of file descriptors), instead of spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A bound listener with everything it needs to serve: TLS when configured, and the limits.
pub struct Edge {
    listener: TcpListener,
    tls: Option<TlsListener>,
    limits: ConnectionLimits,
    drain_timeout: Duration,
}

/// fab's TLS: the certificate store, the acceptor built on it, and the task keeping it current.
struct TlsListener {
    store: Arc<CertificateStore>,
    acceptor: TlsAcceptor,
    /// [`crate::tls::watch`], created (SIGHUP handler installed) with the [`Edge`] and run while
    /// it serves.
    watcher: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// The configuration's limits that act on connections, in the units the server uses.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    max_header_bytes: usize,
    header_read_timeout: Duration,
}

impl ConnectionLimits {
    fn from_config(limits: &RequestLimits) -> Self {
        Self {
            max_connections: limits.max_connections,
            max_header_bytes: limits.max_header_bytes,
            // Validation keeps it within 1..=600 seconds; never negative.
            header_read_timeout: limits
                .header_read_timeout
                .to_std()
                .unwrap_or(Duration::from_secs(10)),
        }
    }
}

impl Edge {
    /// Serves on `listener` with the configuration's limits, over TLS when `config.edge.tls`
    /// names a certificate: the pair is loaded now, and an unusable one is an error naming the
    /// file and why. With TLS, the SIGHUP handler is installed now too, so a SIGHUP sent once
    /// the server has said it listens reloads the certificate instead of ending the process.
    ///
    /// Call it within a Tokio runtime (as anything holding a Tokio `TcpListener` is).
    pub fn new(listener: TcpListener, config: &Config) -> Result<Edge, TlsError> {
        let tls = match &config.edge.tls {
            None => None,
            Some(settings) => {
                let store = CertificateStore::load(settings)?;
                let acceptor = TlsAcceptor::from(store.server_config()?);
                let watcher = Box::pin(crate::tls::watch(Arc::clone(&store)));
                Some(TlsListener {
                    store,
                    acceptor,
                    watcher,
                })
            }
        };
        Ok(Edge {
            listener,
            tls,
            limits: ConnectionLimits::from_config(&config.edge.limits),
            drain_timeout: DRAIN_TIMEOUT,
        })
    }

    /// How long shutdown waits for requests in flight (default [`DRAIN_TIMEOUT`]).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Edge {
        self.drain_timeout = timeout;
        self
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The certificate store, when serving TLS.
    pub fn certificates(&self) -> Option<&Arc<CertificateStore>> {
        self.tls.as_ref().map(|tls| &tls.store)
    }

    /// Serves `router` until `shutdown` completes, then drains (see the module docs).
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()> + Send) {
        let Edge {
            listener,
            tls,
            limits,
            drain_timeout,
        } = self;
        let (acceptor, watcher) = match tls {
            Some(tls) => (
                Some(tls.acceptor),
                Some(AbortOnDrop(tokio::spawn(tls.watcher))),
            ),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            router,
            acceptor,
            limits,
        });
        let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);

        loop {
            reap(&mut connections);
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) if is_connection_error(&error) => continue,
                    Err(error) => {
                        tracing::error!(%error, "accept failed; pausing before the next accept");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        }
                    }
                },
            };
            connections.spawn(connection(
                stream,
                peer,
                Arc::clone(&shared),
                stopping.clone(),
                permit,
            ));
        }

        // Refuse new connections first, then ask the open ones to finish.
        drop(listener);
        let _ = stop.send(true);
        let open = connections.len();
        if open > 0 {
            tracing::info!(open, "draining open connections");
        }
        let drained = tokio::time::timeout(drain_timeout, async {
            while let Some(done) = connections.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                cut = connections.len(),
                timeout_seconds = drain_timeout.as_secs(),
                "drain timeout reached; closing the connections still open"
            );
            connections.shutdown().await;
        }
        drop(watcher);
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every connection task shares.
struct Shared {
    router: Router,
    acceptor: Option<TlsAcceptor>,
    limits: ConnectionLimits,
}

/// Collects finished connection tasks so the set holds only live ones.
fn reap(connections: &mut JoinSet<()>) {
    while let Some(done) = connections.try_join_next() {
        log_task_end(done);
    }
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done
        && error.is_panic()
    {
        tracing::error!(%error, "a connection task panicked");
    }
}

/// Errors about one connection that went away before it was accepted; the next accept works.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection; holding `_permit` is what counts it against `MAX_CONNECTIONS`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Small responses (redirects, JSON) go out at once instead of waiting on Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.acceptor else {
        let service = RequestService::new(&shared.router, peer, false, None);
        http1_connection(TokioIo::new(stream), service, &shared.limits, stopping).await;
        return;
    };
    let handshake =
        tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not finished within HEADER_READ_TIMEOUT");
                return;
            }
        },
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    if http2 {
        let activity = Arc::new(Activity::new());
        let service = RequestService::new(&shared.router, peer, true, Some(Arc::clone(&activity)));
        http2_connection(
            TokioIo::new(stream),
            service,
            &shared.limits,
            activity,
            stopping,
        )
        .await;
    } else {
        let service = RequestService::new(&shared.router, peer, true, None);
        http1_connection(TokioIo::new(stream), service, &shared.limits, stopping).await;
    }
}

async fn http1_connection<I>(
    io: I,
    service: RequestService,
    limits: &ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut asked_to_stop = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP/1.1 connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !asked_to_stop => {
                conn.as_mut().graceful_shutdown();
                asked_to_stop = true;
            }
        }
    }
}

async fn http2_connection<I>(
    io: I,
    service: RequestService,
    limits: &ConnectionLimits,
    activity: Arc<Activity>,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut asked_to_stop = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP/2 connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !asked_to_stop => {
                conn.as_mut().graceful_shutdown();
                activity.restart_idle_clock();
                asked_to_stop = true;
            }
            () = activity.idle_for(limits.header_read_timeout) => {
                if asked_to_stop {
                    // A graceful HTTP/2 close waits for the client to answer a PING; one that
                    // never answers would keep its slot, so after another idle period, close.
                    tracing::debug!("HTTP/2 client did not finish after GOAWAY; closing");
                    return;
                }
                tracing::debug!("HTTP/2 connection idle for HEADER_READ_TIMEOUT; sending GOAWAY");
                conn.as_mut().graceful_shutdown();
                activity.restart_idle_clock();
                asked_to_stop = true;
            }
        }
    }
}

/// Requests in progress on one HTTP/2 connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once the connection has had no request in progress for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let deadline = if busy {
                Instant::now() + limit
            } else {
                self.idle_since() + limit
            };
            tokio::time::sleep_until(deadline).await;
            if self.in_flight.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= limit {
                return;
            }
        }
    }

    /// Counts an idle period from now (after GOAWAY: the client gets a full period to finish).
    fn restart_idle_clock(&self) {
        let mut idle_since = self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *idle_since = Instant::now();
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// One request in progress, from the moment hyper hands it over until its response body has been
/// sent (or abandoned by the client): dropping it ends it.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let mut idle_since = activity
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *idle_since = Instant::now();
        }
    }
}

/// The hyper service for one connection: the router, with the connection's facts added to every
/// request.
#[derive(Clone)]
struct RequestService {
    router: Router,
    peer: SocketAddr,
    transport: Transport,
    activity: Option<Arc<Activity>>,
}

impl RequestService {
    fn new(router: &Router, peer: SocketAddr, tls: bool, activity: Option<Arc<Activity>>) -> Self {
        Self {
            router: router.clone(),
            peer,
            transport: Transport { tls },
            activity,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>,
    >;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.transport);
        let in_flight = self.activity.as_ref().map(Activity::start);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await;
            Ok(match (response, in_flight) {
                (Ok(response), Some(in_flight)) => response.map(|body| {
                    axum::body::Body::new(CountedBody {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }),
                (Ok(response), None) => response,
                (Err(never), _) => match never {},
            })
        })
    }
}

/// A response body that keeps its request counted as in progress until it is sent or dropped.
struct CountedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::config::{Origin, RawConfig, RawValue};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn config() -> Config {
        let mut raw = RawConfig::new();
        for (key, value) in [
            ("FAB_ENV", "development"),
            ("SECRET_KEY", "a-development-secret-key-long-enough-0123"),
        ] {
            raw.set(
                key,
                RawValue::Text(value.into()),
                Origin::Env("test".into()),
            );
        }
        Config::from_raw(&raw).unwrap()
    }

    /// Serves `router` on a fresh loopback port; the address, the stop switch and the task.
    async fn serve(
        router: Router,
        drain: Duration,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let edge = Edge::new(listener, &config()).unwrap().drain_timeout(drain);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(edge.serve(router, async move {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes)).await;
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn every_request_carries_the_socket_peer_and_the_transport() {
        let router = Router::new().route(
            "/who",
            axum::routing::get(|request: axum::extract::Request| async move {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip());
                let transport = request.extensions().get::<Transport>().copied();
                format!("{peer:?} {transport:?}")
            }),
        );
        let (addr, stop, task) = serve(router, DRAIN_TIMEOUT).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let response = read_all(&mut stream).await;
        assert!(
            response.ends_with("Some(127.0.0.1) Some(Transport { tls: false })"),
            "{response}"
        );
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_drain_timeout_bounds_a_request_that_never_finishes() {
        let router = Router::new().route(
            "/stuck",
            axum::routing::get(std::future::pending::<&'static str>),
        );
        let drain = Duration::from_millis(300);
        let (addr, stop, task) = serve(router, drain).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        let asked = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns once the drain timeout has passed")
            .unwrap();
        assert!(asked.elapsed() >= drain, "waited {:?}", asked.elapsed());
        assert_eq!(
            read_all(&mut stream).await,
            "",
            "the stuck connection was cut"
        );
    }
}
