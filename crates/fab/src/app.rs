//! Wiring: the concrete backends chosen from the configuration, and the server built on them.
//!
//! This is the one place a backend is picked (`SESSION_BACKEND` chooses the session store), and
//! the one place that decides whether the schema may be changed at start-up: only in development
//! on SQLite. On PostgreSQL or in production `fab serve` never runs DDL; it checks, read-only,
//! that the schema is current and otherwise refuses to start, naming `fab db upgrade`, so the
//! server can run as a database role that may only read and write rows.

use crate::accounts::{self, NewAccount};
use crate::listener::Edge;
use crate::tls::TlsError;
use fab_core::audit::Actor;
use fab_core::clock::Clock;
use fab_core::config::LimiterBackend;
use fab_core::config::{Config, DatabaseUrl, SessionBackend};
use fab_core::password::{HashError, PasswordHasher, PasswordPolicy};
use fab_core::random::{RandomSource, random_password};
use fab_core::ratelimit::RateLimiter;
use fab_core::ratelimit::memory::MemoryRateLimiter;
use fab_core::rbac::{ADMIN_ROLE, PUBLIC_ROLE};
use fab_core::session::SessionStore;
use fab_core::store::SyncReport;
use fab_core::{Secret, StoreError, ValidationError};
use fab_store::{Database, MemorySessionStore};
use fab_web::AppParts;
use std::future::Future;
use std::sync::Arc;

/// The command a backend is being built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// `fab serve`: the schema must be current, declared permissions are synchronised.
    Serve,
    /// An admin command run against the database directly: the schema must be current.
    Command,
}

/// Why the application could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database refused or failed.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    /// The database directory could not be created.
    #[error("{path}: cannot create the database directory: {source}")]
    DatabaseDirectory {
        /// The directory.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Migrations are pending and this start may not apply them.
    #[error(
        "the {backend} schema is not current: {} pending migration(s) ({}); run `fab db upgrade` \
         (with the schema owner's credentials), then start again",
        pending.len(),
        pending.join(", ")
    )]
    SchemaBehind {
        /// `sqlite` or `postgresql`.
        backend: &'static str,
        /// Migrations not yet applied, oldest first.
        pending: Vec<String>,
    },
    /// The database carries migrations this build does not know.
    #[error(
        "the {backend} schema has migrations this fab does not know ({}): a newer fab upgraded it; \
         run that version",
        unknown.join(", ")
    )]
    SchemaAhead {
        /// `sqlite` or `postgresql`.
        backend: &'static str,
        /// The unknown migration names.
        unknown: Vec<String>,
    },
    /// Password hashing could not be set up or failed.
    #[error("{0}")]
    Hash(#[from] HashError),
    /// Input broke a rule.
    #[error("{}", join_validation(.0))]
    Invalid(Vec<ValidationError>),
    /// No user has that username.
    #[error("no user with username `{0}`")]
    NoSuchUser(String),
    /// No user has that id.
    #[error("no user with id {0}")]
    NoSuchUserId(i64),
    /// A role named on the command line does not exist.
    #[error("no role named `{name}` (roles: {})", known.join(", "))]
    NoSuchRole {
        /// The name asked for.
        name: String,
        /// The roles that exist.
        known: Vec<String>,
    },
    /// The web application could not be built (e.g. an unreadable template override).
    #[error("cannot build the web application: {0}")]
    Web(String),
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A blocking task (password hashing) did not finish.
    #[error("background task failed: {0}")]
    Task(String),
}

/// A conflict's message is written for people ("username `alice` is taken"); other store
/// errors say where they come from.
fn store_message(error: &StoreError) -> String {
    match error {
        StoreError::Conflict(message) => message.clone(),
        other => format!("database: {other}"),
    }
}

fn join_validation(problems: &[ValidationError]) -> String {
    let parts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// The built application: configuration, database and the parts the web layer runs on.
pub struct App {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The database connection (for schema checks and pings).
    pub database: Database,
    /// Store, sessions, hasher, clock, randomness and the rate limiter.
    pub parts: AppParts,
    /// Where `serve` reads the emergency flag.
    pub emergency_source: crate::limiter::EmergencySource,
    /// The web application, built at start-up for [`StartMode::Serve`] so that an unusable
    /// template override stops the start before anything listens or any admin is created.
    pub web: Option<axum::Router>,
}

/// Installs rustls' aws-lc-rs provider as the process default. Every TLS client in the process
/// (PostgreSQL, Redis, HTTP) then agrees on one provider instead of panicking when two are
/// linked; calling it again is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl App {
    /// Connects the database, checks (and in development on SQLite, applies) the schema, and
    /// builds the backends the configuration names. On [`StartMode::Serve`] it also makes every
    /// declared grant exist and the Admin role hold it.
    pub async fn build(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        mode: StartMode,
    ) -> Result<App, AppError> {
        install_crypto_provider();
        let database = connect(&config.database).await?;
        let migrated = ensure_schema(&database, &config).await?;
        if !migrated.is_empty() {
            tracing::info!(migrations = ?migrated, "development: applied pending SQLite migrations");
        }

        let params = config.hash_params;
        let hasher_rng = Arc::clone(&rng);
        let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(params, &*hasher_rng))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;

        let store = database.store();
        let sessions: Arc<dyn SessionStore> = match config.session.backend {
            SessionBackend::Sql => Arc::new(store.clone()),
            SessionBackend::Memory => Arc::new(MemorySessionStore::new()),
            SessionBackend::Redis => Arc::new(fab_redis::RedisSessionStore::new(
                redis_connection(&config)?,
                &config.session.policy,
            )),
        };
        let memory_limiter: Arc<dyn RateLimiter> =
            Arc::new(MemoryRateLimiter::new(Arc::clone(&clock)));
        let (limiter, emergency_source): (Arc<dyn RateLimiter>, _) = match config.rate_limit.backend
        {
            // Each server's memory limiter is its own, so the switch every instance and the CLI
            // share is the database flag.
            LimiterBackend::Memory => (
                Arc::clone(&memory_limiter),
                crate::limiter::EmergencySource::Database(Arc::new(store.clone())),
            ),
            LimiterBackend::Redis => {
                let redis: Arc<dyn RateLimiter> =
                    Arc::new(fab_redis::RedisRateLimiter::new(redis_connection(&config)?));
                let failover = crate::limiter::FailoverLimiter::new(
                    Arc::clone(&redis),
                    memory_limiter,
                    config.rate_limit.fail_mode,
                    Arc::new(store.clone()),
                    Arc::clone(&clock),
                );
                (
                    Arc::new(failover),
                    crate::limiter::EmergencySource::Limiter(redis),
                )
            }
        };
        let lockouts = store.clone();
        let parts = AppParts {
            config: Arc::clone(&config),
            store: Arc::new(store),
            sessions,
            hasher: Arc::new(hasher),
            clock,
            rng,
            limiter,
            emergency: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            lockouts: Arc::new(lockouts),
        };
        let web = match mode {
            StartMode::Serve => {
                Some(fab_web::router(parts.clone()).map_err(|e| AppError::Web(e.to_string()))?)
            }
            StartMode::Command => None,
        };
        let app = App {
            config,
            database,
            parts,
            emergency_source,
            web,
        };
        if mode == StartMode::Serve {
            let report = app.sync_permissions().await?;
            tracing::info!(
                created = report.created,
                granted_to_admin = report.granted_to_admin,
                "declared permissions synchronised"
            );
        }
        Ok(app)
    }

    /// Makes every grant the routes declare exist, the Admin and Public roles exist, and Admin
    /// hold every grant. Idempotent.
    pub async fn sync_permissions(&self) -> Result<SyncReport, AppError> {
        Ok(self
            .parts
            .store
            .sync_permissions(&fab_web::declared_grants(), ADMIN_ROLE, PUBLIC_ROLE)
            .await?)
    }

    /// Whether sessions live in the memory of the serving process, out of reach of a command run
    /// beside it (`SESSION_BACKEND=memory`).
    pub fn sessions_are_process_local(&self) -> bool {
        self.config.session.backend == SessionBackend::Memory
    }

    /// Serves the application on `listener` until `shutdown` completes, then finishes the
    /// requests in flight. TLS and the connection limits come from the configuration (see
    /// [`crate::listener`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let edge = Edge::new(listener, &self.config)?;
        self.serve_on(edge, shutdown).await
    }

    /// Serves the application on a prepared [`Edge`] (bound, certificate loaded) until
    /// `shutdown` completes, then drains it.
    pub async fn serve_on(
        self,
        edge: Edge,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let router = match self.web {
            Some(router) => router,
            None => {
                fab_web::router(self.parts.clone()).map_err(|e| AppError::Web(e.to_string()))?
            }
        };
        let purge = tokio::spawn(purge_expired_sessions(self.parts.clone()));
        let emergency = tokio::spawn(crate::limiter::watch_emergency(
            self.emergency_source,
            Arc::clone(&self.parts.emergency),
            Arc::clone(&self.parts.store) as Arc<dyn fab_core::audit::AuditSink>,
            Arc::clone(&self.parts.clock),
        ));
        edge.serve(router, shutdown).await;
        purge.abort();
        emergency.abort();
        Ok(())
    }
}

/// How often `serve` deletes expired sessions. Expired sessions are refused on use whatever
/// this says; purging only keeps the table (and `fab clear-sessions` counts) small.
const SESSION_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes expired sessions now and then every [`SESSION_PURGE_INTERVAL`]; a failure is logged
/// and retried at the next tick.
async fn purge_expired_sessions(parts: AppParts) {
    let mut ticks = tokio::time::interval(SESSION_PURGE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = parts.clock.now();
        match parts
            .sessions
            .purge_expired(now, &parts.config.session.policy)
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired sessions deleted"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
    }
}

/// A client for the configured Redis. Nothing is sent yet, so this works while Redis is down;
/// validation guarantees REDIS_URL is set whenever a Redis backend is chosen.
pub fn redis_connection(config: &Config) -> Result<fab_redis::RedisConnection, AppError> {
    let invalid =
        |message: String| AppError::Invalid(vec![ValidationError::new("REDIS_URL", message)]);
    let redis = config
        .redis
        .as_ref()
        .ok_or_else(|| invalid("is required by the chosen backend".into()))?;
    let timeout = redis
        .timeout
        .to_std()
        .unwrap_or(std::time::Duration::from_millis(250));
    let options = fab_redis::RedisOptions {
        password: redis.password.clone(),
        tls: false,
        connect_timeout: timeout,
        command_timeout: timeout,
    };
    fab_redis::RedisConnection::open(&redis.url, &options).map_err(|e| invalid(e.to_string()))
}

/// Connects to the configured database, creating the directory of an SQLite file first.
pub async fn connect(url: &DatabaseUrl) -> Result<Database, AppError> {
    if let DatabaseUrl::Sqlite { path } = url
        && let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| AppError::DatabaseDirectory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(Database::connect(url).await?)
}

/// Checks the schema; in development on SQLite applies pending migrations and returns their
/// names. Anywhere else a pending migration is an error naming `fab db upgrade`.
async fn ensure_schema(database: &Database, config: &Config) -> Result<Vec<String>, AppError> {
    let status = database.schema_status().await?;
    let backend = database.backend_name();
    if !status.unknown.is_empty() {
        return Err(AppError::SchemaAhead {
            backend,
            unknown: status.unknown,
        });
    }
    if status.pending.is_empty() {
        return Ok(Vec::new());
    }
    let may_migrate =
        !config.is_production() && matches!(config.database, DatabaseUrl::Sqlite { .. });
    if !may_migrate {
        return Err(AppError::SchemaBehind {
            backend,
            pending: status.pending,
        });
    }
    Ok(database.migrate().await?)
}

/// What [`ensure_admin`] found or did.
#[derive(Debug)]
pub enum AdminBootstrap {
    /// An active user already holds the Admin role; nothing was done.
    AlreadyPresent,
    /// The configured admin was created.
    Created {
        /// Its username.
        username: String,
        /// The generated password, to print once; None when `FAB_ADMIN_PASSWORD` gave it.
        generated_password: Option<Secret>,
    },
    /// No active admin exists, but the configured username or email is taken (e.g. by a disabled
    /// admin): nothing was created, the operator decides.
    NotCreated {
        /// The configured username.
        username: String,
        /// Why, for the operator.
        reason: String,
    },
}

/// The actor recorded for the first-run admin creation.
const BOOTSTRAP_ACTOR: &str = "system:first-run";

/// Creates the configured first admin on first run, that is when there are no users at all. Its
/// password is `FAB_ADMIN_PASSWORD` (which must pass the password policy) or a generated one,
/// returned so `fab serve` can print it once.
///
/// A database that has users but no active Admin gets none: that state usually follows an
/// incident (admins disabled on purpose), and a server that quietly minted a new admin account
/// with a printed password would undo the operator's containment. `fab create-admin` is the way.
pub async fn ensure_admin(parts: &AppParts) -> Result<AdminBootstrap, AppError> {
    if parts.store.count_active_users_with_role(ADMIN_ROLE).await? > 0 {
        return Ok(AdminBootstrap::AlreadyPresent);
    }
    let admin = &parts.config.admin;
    if parts.store.count_users().await? > 0 {
        return Ok(AdminBootstrap::NotCreated {
            username: admin.username.clone(),
            reason: "users exist but none is an active Admin (run `fab create-admin` to add one)"
                .into(),
        });
    }
    if parts.store.user_by_login(&admin.username).await?.is_some() {
        return Ok(AdminBootstrap::NotCreated {
            username: admin.username.clone(),
            reason: format!(
                "user `{}` exists but is not an active Admin",
                admin.username
            ),
        });
    }
    let policy = &parts.config.password_policy;
    let (password, generated) = match &admin.password {
        Some(given) => {
            policy
                .check(given, &[&admin.username, &admin.email])
                .map_err(|e| {
                    AppError::Invalid(vec![ValidationError::new("FAB_ADMIN_PASSWORD", e.message)])
                })?;
            (given.clone(), false)
        }
        None => (
            generate_password(policy, &[&admin.username, &admin.email], &*parts.rng)?,
            true,
        ),
    };
    let account = NewAccount {
        username: admin.username.clone(),
        first_name: "Admin".into(),
        last_name: "User".into(),
        email: admin.email.clone(),
        password: password.clone(),
        roles: vec![ADMIN_ROLE.to_owned()],
    };
    let actor = Actor {
        user_id: None,
        name: BOOTSTRAP_ACTOR.into(),
    };
    match accounts::create_user(parts, account, &actor).await {
        Ok(user) => Ok(AdminBootstrap::Created {
            username: user.username,
            generated_password: generated.then_some(password),
        }),
        Err(AppError::Store(StoreError::Conflict(reason))) => Ok(AdminBootstrap::NotCreated {
            username: admin.username.clone(),
            reason,
        }),
        Err(other) => Err(other),
    }
}

/// A random password that passes `policy`: at least 20 characters, plus one of Flask-AppBuilder's
/// special characters when its complexity rule is on.
pub fn generate_password(
    policy: &PasswordPolicy,
    context: &[&str],
    rng: &dyn RandomSource,
) -> Result<Secret, AppError> {
    const SPECIALS: &[u8] = b"!@#$&*";
    let length = policy.min_length.max(20).min(policy.max_length);
    let mut last_problem = None;
    // A few draws always suffice for the built-in rules; the bound keeps a policy no random
    // password can meet from looping forever.
    for _ in 0..64 {
        let mut candidate = random_password(rng, length);
        if policy.complexity {
            let mut byte = [0u8; 1];
            rng.fill(&mut byte);
            candidate.pop();
            candidate.push(char::from(SPECIALS[usize::from(byte[0]) % SPECIALS.len()]));
        }
        let candidate = Secret::new(candidate);
        match policy.check(&candidate, context) {
            Ok(()) => return Ok(candidate),
            Err(problem) => last_problem = Some(problem),
        }
    }
    Err(AppError::Invalid(vec![last_problem.unwrap_or_else(|| {
        ValidationError::new("password", "no generated password met the policy")
    })]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::random::OsRandom;

    #[test]
    fn generated_passwords_meet_the_complexity_rule() {
        let policy = PasswordPolicy {
            complexity: true,
            ..PasswordPolicy::default()
        };
        for _ in 0..50 {
            let password = generate_password(&policy, &["admin"], &OsRandom).unwrap();
            assert!(policy.check(&password, &["admin"]).is_ok());
            assert!(password.char_count() >= 20);
        }
    }

    #[test]
    fn generated_passwords_follow_a_long_minimum() {
        let policy = PasswordPolicy {
            min_length: 40,
            ..PasswordPolicy::default()
        };
        let password = generate_password(&policy, &[], &OsRandom).unwrap();
        assert_eq!(password.char_count(), 40);
    }

    #[test]
    fn an_unmeetable_policy_is_an_error_not_a_loop() {
        let policy = PasswordPolicy {
            min_length: 30,
            max_length: 25,
            ..PasswordPolicy::default()
        };
        assert!(generate_password(&policy, &[], &OsRandom).is_err());
    }

    #[test]
    fn schema_errors_name_the_command() {
        let error = AppError::SchemaBehind {
            backend: "postgresql",
            pending: vec!["m0001_security".into(), "m0002_sessions".into()],
        };
        let text = error.to_string();
        assert!(text.contains("`fab db upgrade`"), "{text}");
        assert!(text.contains("m0001_security, m0002_sessions"), "{text}");
    }
}
