//! [`TestServer`]: a real fab server on 127.0.0.1:0 with a fresh database, a [`ManualClock`] and
//! seeded randomness, built through the same `fab::app::App` wiring as `fab serve`.
//!
//! Passwords are hashed with cheap argon2 parameters (development mode allows them) so a test
//! suite stays fast; everything else is the production code path.

use crate::database::{self, TestDatabase};
use crate::random::SeededRandom;
use chrono::{DateTime, Utc};
use fab::app::{App, StartMode};
use fab_core::clock::ManualClock;
use fab_core::config::{Config, DatabaseUrl, Origin, RawConfig, RawValue};
use fab_core::session::SessionStore;
use fab_core::store::SecurityStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database, served as its owner.
    Postgres,
    /// A fresh PostgreSQL database, migrated by its owner and served by a role holding only
    /// CONNECT, USAGE and SELECT/INSERT/UPDATE/DELETE (the deployment guide's least privilege).
    PostgresDmlOnly,
}

/// Password of the first admin every test server creates.
pub const ADMIN_PASSWORD: &str = "admin-test-password-42";
/// Username of that admin.
pub const ADMIN_USERNAME: &str = "admin";

/// The instant test clocks start at.
pub fn test_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

/// A running server and handles on its insides.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` (`https://` when the settings name a TLS certificate).
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// The server's clock: move it instead of sleeping.
    pub clock: ManualClock,
    /// The server's validated configuration.
    pub config: Arc<Config>,
    /// The server's security store (for assertions and set-up).
    pub store: Arc<dyn SecurityStore>,
    /// The server's session store.
    pub sessions: Arc<dyn SessionStore>,
    /// The database URL the server uses (for running the CLI against the same data).
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _database: TestDatabase,
}

/// Options for [`TestServer::start_with`].
#[derive(Debug, Clone)]
pub struct TestServerOptions {
    /// The database.
    pub backend: Backend,
    /// Extra configuration, by key (as environment variables would give it).
    pub settings: Vec<(String, String)>,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            settings: Vec::new(),
        }
    }
}

impl TestServerOptions {
    /// Options for `backend`.
    pub fn on(backend: Backend) -> Self {
        Self {
            backend,
            settings: Vec::new(),
        }
    }

    /// Adds a configuration value.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The URL text for a database URL.
pub fn url_text(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres { url } => url.expose().to_owned(),
    }
}

impl TestServer {
    /// A server on a fresh SQLite database with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(TestServerOptions::default()).await
    }

    /// A server on `backend` with default settings.
    pub async fn start_on(backend: Backend) -> TestServer {
        Self::start_with(TestServerOptions::on(backend)).await
    }

    /// A server with `options`.
    #[allow(
        clippy::expect_used,
        reason = "test support: a server that cannot start fails the test loudly"
    )]
    pub async fn start_with(options: TestServerOptions) -> TestServer {
        fab::app::install_crypto_provider();
        let test_database = match options.backend {
            Backend::Sqlite => database::fresh_sqlite().await,
            Backend::Postgres | Backend::PostgresDmlOnly => database::fresh_postgres().await,
        };
        let owner = fab_store::Database::connect(&test_database.url)
            .await
            .expect("connect the test database as its owner");
        owner.migrate().await.expect("migrate the test database");
        let serve_url = match options.backend {
            Backend::PostgresDmlOnly => database::create_dml_only_role(&test_database).await,
            Backend::Sqlite | Backend::Postgres => test_database.url.clone(),
        };
        let database_url = url_text(&serve_url);

        let mut raw = RawConfig::new();
        let origin = Origin::Env("test".into());
        let defaults = [
            (
                "SECRET_KEY",
                "test-secret-key-that-is-long-enough-0123456789",
            ),
            ("FAB_ENV", "development"),
            ("PASSWORD_HASH_MEMORY_KIB", "1024"),
            ("PASSWORD_HASH_ITERATIONS", "1"),
            ("FAB_ADMIN_USERNAME", ADMIN_USERNAME),
            ("FAB_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("FAB_LOG", "warn"),
            // Every test client comes from 127.0.0.1: generous limits keep suites that are not
            // about rate limiting clear of them; the rate-limit tests set their own.
            ("RATE_LIMIT_DEFAULT", "100000/hour"),
            ("RATE_LIMIT_LOGIN_ATTEMPTS", "10000/minute"),
            ("RATE_LIMIT_API_CALLS", "100000/hour"),
        ];
        for (key, value) in defaults {
            raw.set(key, RawValue::Text(value.into()), origin.clone());
        }
        raw.set(
            "DATABASE_URL",
            RawValue::Text(database_url.clone()),
            origin.clone(),
        );
        for (key, value) in &options.settings {
            raw.set(key, RawValue::Text(value.clone()), origin.clone());
        }
        let config = Arc::new(Config::from_raw(&raw).expect("valid test configuration"));

        let clock = ManualClock::new(test_epoch());
        let app = App::build(
            Arc::clone(&config),
            Arc::new(clock.clone()),
            Arc::new(SeededRandom::new(0x5eed)),
            StartMode::Serve,
        )
        .await
        .expect("build the app");
        fab::app::ensure_admin(&app.parts)
            .await
            .expect("first admin");
        let store = Arc::clone(&app.parts.store);
        let sessions = Arc::clone(&app.parts.sessions);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        // TLS_CERT_FILE/TLS_KEY_FILE in the settings make it an HTTPS server, as in `fab serve`.
        let edge = fab::listener::Edge::new(listener, &config).expect("usable TLS files");
        let scheme = if edge.is_tls() { "https" } else { "http" };
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = app
                .serve_on(edge, async move {
                    let _ = stop.await;
                })
                .await;
            if let Err(error) = served {
                eprintln!("test server failed: {error}");
            }
        });
        TestServer {
            url: format!("{scheme}://{addr}"),
            addr,
            clock,
            config,
            store,
            sessions,
            database_url,
            shutdown: Some(shutdown),
            task: Some(task),
            _database: test_database,
        }
    }

    /// A fresh client (a new browser profile) for this server.
    pub fn client(&self) -> crate::client::TestClient {
        crate::client::TestClient::new(&self.url)
    }

    /// A client already logged in as the first admin.
    pub async fn admin_client(&self) -> crate::client::TestClient {
        let client = self.client();
        let response = client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), 303, "admin login should redirect");
        client
    }

    /// Stops the server, letting requests in flight finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
