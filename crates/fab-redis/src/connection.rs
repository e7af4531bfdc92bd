//! [`RedisConnection`]: the one Redis client the limiter, the session store and the emergency
//! flag share — `REDIS_URL` (`redis://`, `rediss://`), `REDIS_PASSWORD`, `REDIS_SSL` — with short
//! timeouts so nothing waits on a dead Redis.
//!
//! The one thing to know: opening never touches the network and never fails because Redis is
//! down. The connection is made on first use and remade by itself after Redis goes away, and
//! every call is bounded by `connect_timeout + command_timeout` (250 ms each by default): past
//! that it returns [`Failure::Unavailable`] and the caller applies its fail mode.

use fab_core::Secret;
use fab_core::StoreError;
use fab_core::ratelimit::LimiterError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// How to reach Redis besides the URL.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `REDIS_PASSWORD`: used when the URL carries none (a password in the URL wins).
    pub password: Option<Secret>,
    /// `REDIS_SSL`: speak TLS even when the URL says `redis://`.
    pub tls: bool,
    /// How long one attempt to connect may take.
    pub connect_timeout: Duration,
    /// How long one command may take once connected.
    pub command_timeout: Duration,
}

impl Default for RedisOptions {
    /// No password, TLS only for `rediss://`, 250 ms to connect and 250 ms per command: a
    /// rate-limit decision sits in front of every request, so a slow Redis must turn into the fail
    /// mode quickly rather than into slow requests.
    fn default() -> Self {
        Self {
            password: None,
            tls: false,
            connect_timeout: Duration::from_millis(250),
            command_timeout: Duration::from_millis(250),
        }
    }
}

/// Why a Redis connection could not be set up (before any network traffic).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SetupError {
    /// The URL cannot be used; the message never contains the password.
    #[error("REDIS_URL: {0}")]
    InvalidUrl(String),
    /// The Redis client needs a Tokio runtime and none is running.
    #[error("the Redis client must be opened inside a Tokio runtime")]
    NoRuntime,
}

/// A failed Redis call, before it becomes a [`LimiterError`] or a [`StoreError`].
#[derive(Debug, Clone, Error)]
pub enum Failure {
    /// Redis could not be reached, refused us, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// Redis answered something unexpected.
    #[error("{0}")]
    Internal(String),
}

impl From<Failure> for LimiterError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => LimiterError::Unavailable(m),
            Failure::Internal(m) => LimiterError::Internal(m),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => StoreError::Unavailable(m),
            Failure::Internal(m) => StoreError::Internal(m),
        }
    }
}

/// A shared, self-reconnecting Redis client. Clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    address: String,
    bound: Duration,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("address", &self.address)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A client for `url` (`redis://[user][:password@]host[:port][/db]` or `rediss://...`).
    /// Nothing is sent until the first call, so this succeeds while Redis is down; it fails
    /// only for a URL that cannot work (and outside a Tokio runtime).
    ///
    /// Refused on purpose: `rediss://...#insecure`, which turns off certificate checks.
    pub fn open(url: &Secret, options: &RedisOptions) -> Result<Self, SetupError> {
        let mut parsed = url::Url::parse(url.expose().trim())
            .map_err(|e| SetupError::InvalidUrl(format!("not a URL ({e})")))?;
        let tls = match parsed.scheme() {
            "rediss" | "valkeys" => true,
            "redis" | "valkey" => options.tls,
            other => {
                return Err(SetupError::InvalidUrl(format!(
                    "scheme {other:?}: expected redis:// or rediss://"
                )));
            }
        };
        if tls && matches!(parsed.scheme(), "redis" | "valkey") {
            // REDIS_SSL=true upgrades the URL's scheme.
            let upgraded = format!("{}s", parsed.scheme());
            parsed
                .set_scheme(&upgraded)
                .map_err(|()| SetupError::InvalidUrl("cannot switch the URL to TLS".into()))?;
        }
        if parsed.fragment() == Some("insecure") {
            return Err(SetupError::InvalidUrl(
                "#insecure turns off TLS certificate checks; fab refuses it".into(),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(SetupError::InvalidUrl("no host".into()));
        }
        if let (None, Some(password)) = (parsed.password(), &options.password)
            && !password.is_empty()
            && parsed.set_password(Some(password.expose())).is_err()
        {
            return Err(SetupError::InvalidUrl("cannot carry a password".into()));
        }
        let address = format!(
            "{}://{}:{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(6379),
            match parsed.path() {
                "" | "/" => "/0",
                path => path,
            }
        );
        if tls {
            // rustls needs a process-wide provider; `fab` installs aws-lc-rs at start-up, and
            // this makes a library user's first rediss:// connection work too. An error only
            // says one is installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let password = parsed.password().map(str::to_owned);
        let refused = |e: RedisError| {
            let mut message = e.to_string();
            if let Some(password) = password.as_deref().filter(|p| !p.is_empty()) {
                message = message.replace(password, "[redacted]");
            }
            SetupError::InvalidUrl(format!("{message} ({address})"))
        };
        let client = redis::Client::open(parsed.clone()).map_err(refused)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SetupError::NoRuntime);
        }
        // No retries inside the client: a failed attempt fails the call at once, and the next
        // call tries again. The caller's fail mode, not a queue of waiting requests, covers the
        // outage.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(refused)?;
        Ok(Self {
            manager,
            address,
            bound: options.connect_timeout + options.command_timeout,
        })
    }

    /// Where this client connects, without credentials (`redis://host:6379/0`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The longest any single call waits (connect timeout plus command timeout).
    pub fn call_bound(&self) -> Duration {
        self.bound
    }

    /// Sends `PING`; Ok when Redis answers in time.
    pub async fn ping(&self) -> Result<(), Failure> {
        let mut connection = self.manager();
        let pong: String = self
            .run(async move { redis::cmd("PING").query_async(&mut connection).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Failure::Internal(format!("PING answered {pong:?}")))
        }
    }

    /// A handle on the shared connection, to send commands through [`RedisConnection::run`].
    pub(crate) fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs one Redis exchange within [`RedisConnection::call_bound`], mapping its errors.
    pub(crate) async fn run<T>(
        &self,
        exchange: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.bound, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(&error, &self.address)),
            Err(_) => Err(Failure::Unavailable(format!(
                "Redis at {} did not answer within {} ms",
                self.address,
                self.bound.as_millis()
            ))),
        }
    }
}

/// Unreachable, refusing or not-ready servers are [`Failure::Unavailable`]; the rest is
/// [`Failure::Internal`].
fn classify(error: &RedisError, address: &str) -> Failure {
    let unavailable = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::NoPerm
                )
        )
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "LOADING"));
    let message = format!("Redis at {address}: {error}");
    if unavailable {
        Failure::Unavailable(message)
    } else {
        Failure::Internal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str, options: &RedisOptions) -> Result<RedisConnection, SetupError> {
        RedisConnection::open(&Secret::new(url), options)
    }

    #[tokio::test]
    async fn urls_open_without_touching_the_network() {
        let options = RedisOptions::default();
        // Port 1 on loopback: nothing listens, and opening still succeeds.
        let connection = open("redis://127.0.0.1:1/3", &options).unwrap();
        assert_eq!(connection.address(), "redis://127.0.0.1:1/3");
        let connection = open("redis://:pw@cache.internal", &options).unwrap();
        assert_eq!(connection.address(), "redis://cache.internal:6379/0");
        assert!(!format!("{connection:?}").contains("pw"));
        let tls = RedisOptions {
            tls: true,
            ..RedisOptions::default()
        };
        assert_eq!(
            open("redis://cache.internal:6380/1", &tls)
                .unwrap()
                .address(),
            "rediss://cache.internal:6380/1"
        );
        assert_eq!(
            open("rediss://cache.internal/", &options)
                .unwrap()
                .address(),
            "rediss://cache.internal:6379/0"
        );
    }

    #[tokio::test]
    async fn unusable_urls_are_refused_without_showing_the_password() {
        let options = RedisOptions::default();
        for (url, reason) in [
            ("not a url", "not a URL"),
            ("http://:hunter2@cache/0", "scheme \"http\""),
            ("rediss://:hunter2@cache/0#insecure", "#insecure"),
            ("redis://:hunter2@cache/notanumber", ""),
        ] {
            let error = open(url, &options).unwrap_err().to_string();
            assert!(error.contains(reason), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let error = open("redis://127.0.0.1:1", &RedisOptions::default()).unwrap_err();
        assert_eq!(error, SetupError::NoRuntime);
    }

    #[tokio::test]
    async fn a_dead_redis_fails_fast_as_unavailable() {
        let connection = open("redis://127.0.0.1:1", &RedisOptions::default()).unwrap();
        let started = std::time::Instant::now();
        let failure = connection.ping().await.unwrap_err();
        assert!(matches!(failure, Failure::Unavailable(_)), "{failure:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
