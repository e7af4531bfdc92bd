//! The `fab` command line: `fab serve` and every admin command.
//!
//! Each admin command talks to the database directly, so an operator can act when the web
//! application is down (the deployment guide's incident steps: `fab user-disable`, `fab
//! clear-sessions`). Results go to stdout, as a table or, with `--json`, as one JSON document for
//! scripts; an error is one line on stderr and exit status 1. Every command that changes something
//! writes its audit event with the actor `cli:<login name>`.

use crate::accounts::{self, NewAccount, SessionScope};
use crate::app::{self, AdminBootstrap, App, AppError, StartMode};
use crate::listener::Edge;
use crate::logging::{self, LogFilterError};
use crate::settings::{self, SettingsError};
use clap::{Args, Parser, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use fab_core::Secret;
use fab_core::audit::{Actor, AuditKind};
use fab_core::clock::SystemClock;
use fab_core::config::{Config, ConfigReport, InsecureOverride};
use fab_core::random::OsRandom;
use fab_core::rbac::{ADMIN_ROLE, RoleExport, validate_role_name};
use fab_core::store::UserQuery;
use fab_core::user::User;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// fab: a secure-by-default Flask-AppBuilder in Rust: the server and its admin commands.
#[derive(Debug, Parser)]
#[command(name = "fab", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: FAB_CONFIG, else ./fab.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the web application (creates the first admin when there is none).
    Serve(ServeArgs),
    /// Database schema: apply or inspect migrations.
    #[command(subcommand)]
    Db(DbCommand),
    /// Create a user holding the Admin role.
    CreateAdmin(CreateAdminArgs),
    /// Create a user holding the given roles.
    CreateUser(CreateUserArgs),
    /// Set a user's password and end their sessions.
    ResetPassword {
        /// The user.
        #[arg(long)]
        username: String,
        /// The new password (visible in the process list; omit it to be prompted).
        #[arg(long)]
        password: Option<String>,
    },
    /// List users.
    ListUsers {
        /// Only users whose username, name or email contains this.
        #[arg(long)]
        search: Option<String>,
    },
    /// Disable a user and end all their sessions.
    UserDisable {
        /// The user.
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled user.
    UserEnable {
        /// The user.
        #[arg(long)]
        username: String,
    },
    /// End sessions: one user's, or everyone's.
    ClearSessions(ClearSessionsArgs),
    /// Write every role and its permissions to a file (Flask-AppBuilder's JSON format).
    ExportRoles {
        /// The file to write.
        #[arg(long)]
        path: PathBuf,
    },
    /// Create or update roles from a file in Flask-AppBuilder's export format.
    ImportRoles {
        /// The file to read.
        #[arg(long)]
        path: PathBuf,
    },
    /// Remove permissions that no route declares any more.
    SecurityCleanup,
    /// Rate limiting: what is in force, emergency mode, forgetting a key.
    #[command(subcommand)]
    RateLimit(RateLimitCommand),
    /// End an account's lockout (failed-login counters and locks).
    UserUnlock {
        /// The user.
        #[arg(long)]
        username: String,
    },
    /// Print fab's version.
    Version,
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `fab serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default FAB_BIND, else 127.0.0.1:8080).
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (overrides TLS_CERT_FILE; needs --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (overrides TLS_KEY_FILE).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `fab rate-limit ...`.
#[derive(Debug, Subcommand)]
pub enum RateLimitCommand {
    /// Backend, reachability, policies in force, emergency state and the most-limited keys.
    Status {
        /// How many of the most-limited keys to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Switch emergency limits on or off on every instance (each limit divided by
    /// RATE_LIMIT_EMERGENCY_FACTOR unless set).
    Emergency {
        /// `on` or `off`.
        #[arg(value_enum)]
        state: Switch,
    },
    /// Forget a key's state, giving its whole budget back (e.g. rate_limit:login:user:alice).
    Reset {
        /// The key, with or without the `rate_limit:` prefix.
        #[arg(long)]
        key: String,
    },
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Switch on.
    On,
    /// Switch off.
    Off,
}

/// `fab db ...`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (run with the schema owner's credentials).
    Upgrade,
    /// Show applied and pending migrations (read-only).
    Status,
}

/// `fab config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the effective configuration, its warnings and every problem (exit 1 on problems).
    Check,
}

/// `fab create-admin` flags; missing ones default to the configured first admin.
#[derive(Debug, Args)]
pub struct CreateAdminArgs {
    /// Login name (default FAB_ADMIN_USERNAME).
    #[arg(long)]
    pub username: Option<String>,
    /// Given name.
    #[arg(long, default_value = "Admin")]
    pub firstname: String,
    /// Family name.
    #[arg(long, default_value = "User")]
    pub lastname: String,
    /// Email address (default FAB_ADMIN_EMAIL).
    #[arg(long)]
    pub email: Option<String>,
    /// Password (visible in the process list; default FAB_ADMIN_PASSWORD, else prompted).
    #[arg(long)]
    pub password: Option<String>,
}

/// `fab create-user` flags.
#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// Login name.
    #[arg(long)]
    pub username: String,
    /// Given name.
    #[arg(long)]
    pub firstname: String,
    /// Family name.
    #[arg(long)]
    pub lastname: String,
    /// Email address.
    #[arg(long)]
    pub email: String,
    /// A role to hold; repeat for several.
    #[arg(long = "role", required = true, value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Password (visible in the process list; omit it to be prompted).
    #[arg(long)]
    pub password: Option<String>,
}

/// `fab clear-sessions` flags: exactly one scope.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ClearSessionsArgs {
    /// End the sessions of the user with this id.
    #[arg(long)]
    pub user_id: Option<i64>,
    /// End the sessions of this user.
    #[arg(long)]
    pub username: Option<String>,
    /// End every session of every user.
    #[arg(long)]
    pub all: bool,
}

/// Why a command failed; displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Loading the configuration failed.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Building or using the application failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The log filter is invalid.
    #[error(transparent)]
    LogFilter(#[from] LogFilterError),
    /// The command cannot run as asked.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read, written or understood.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// `fab config check` found problems (already printed).
    #[error("{0} configuration problem(s); see above")]
    ConfigProblems(usize),
}

/// What a command prints on success.
struct Report {
    human: String,
    json: Value,
}

impl Report {
    fn new(human: impl Into<String>, json: Value) -> Self {
        Self {
            human: human.into(),
            json,
        }
    }
}

/// What every command gets: the global flags and the environment.
struct Context {
    config_path: Option<PathBuf>,
    json: bool,
    env: Vec<(String, String)>,
}

impl Context {
    fn load_config(&self) -> Result<Config, CliError> {
        let config = settings::load(
            self.config_path.as_deref(),
            self.env.iter().cloned(),
            &OsRandom,
        )?;
        logging::init(&config)?;
        Ok(config)
    }

    async fn app(&self, mode: StartMode) -> Result<App, CliError> {
        let config = Arc::new(self.load_config()?);
        Ok(App::build(config, Arc::new(SystemClock), Arc::new(OsRandom), mode).await?)
    }

    fn actor(&self) -> Actor {
        let login = ["USER", "LOGNAME"].iter().find_map(|wanted| {
            self.env
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.as_str())
        });
        accounts::cli_actor(login)
    }
}

/// Runs the parsed command line with `env` as the environment; the process exit status.
pub async fn run(cli: Cli, env: Vec<(String, String)>) -> ExitCode {
    app::install_crypto_provider();
    let context = Context {
        config_path: cli.config,
        json: cli.json,
        env,
    };
    match dispatch(&context, cli.command).await {
        Ok(Some(report)) => {
            if context.json {
                match serde_json::to_string_pretty(&report.json) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the result as JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else if !report.human.is_empty() {
                println!("{}", report.human.trim_end());
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(context: &Context, command: Command) -> Result<Option<Report>, CliError> {
    let report = match command {
        Command::Serve(args) => {
            serve(context, args).await?;
            return Ok(None);
        }
        Command::Db(DbCommand::Upgrade) => db_upgrade(context).await?,
        Command::Db(DbCommand::Status) => db_status(context).await?,
        Command::CreateAdmin(args) => create_admin(context, args).await?,
        Command::CreateUser(args) => create_user(context, args).await?,
        Command::ResetPassword { username, password } => {
            reset_password(context, &username, password).await?
        }
        Command::ListUsers { search } => list_users(context, search).await?,
        Command::UserDisable { username } => set_active(context, &username, false).await?,
        Command::UserEnable { username } => set_active(context, &username, true).await?,
        Command::ClearSessions(args) => clear_sessions(context, args).await?,
        Command::ExportRoles { path } => export_roles(context, &path).await?,
        Command::ImportRoles { path } => import_roles(context, &path).await?,
        Command::SecurityCleanup => security_cleanup(context).await?,
        Command::RateLimit(RateLimitCommand::Status { top }) => {
            rate_limit_status(&context.app(StartMode::Command).await?, top).await?
        }
        Command::RateLimit(RateLimitCommand::Emergency { state }) => {
            let app = context.app(StartMode::Command).await?;
            set_emergency(&app, state == Switch::On, &context.actor()).await?
        }
        Command::RateLimit(RateLimitCommand::Reset { key }) => {
            reset_key(
                &context.app(StartMode::Command).await?,
                &key,
                &context.actor(),
            )
            .await?
        }
        Command::UserUnlock { username } => {
            unlock(
                &context.app(StartMode::Command).await?,
                &username,
                &context.actor(),
            )
            .await?
        }
        Command::Version => version(),
        Command::Config(ConfigCommand::Check) => config_check(context)?,
    };
    Ok(Some(report))
}

async fn serve(context: &Context, args: ServeArgs) -> Result<(), CliError> {
    let context = with_tls_flags(context, &args)?;
    let mut config = context.load_config()?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    let warnings = startup_warnings(&config);
    for warning in &warnings {
        eprintln!("warning: {warning}");
        tracing::warn!(%warning, "configuration warning");
    }
    let app = App::build(
        Arc::new(config),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
        StartMode::Serve,
    )
    .await?;
    let addr = app.config.bind;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| CliError::Bind { addr, source })?;
    // The certificate is loaded before the first admin is created, for the same reason.
    let edge = Edge::new(listener, &app.config).map_err(AppError::from)?;
    let bootstrap = app::ensure_admin(&app.parts).await?;
    let shutdown = shutdown_signal();
    let url = browser_url(local, edge.is_tls());
    let production = app.config.is_production();
    if !production {
        eprintln!(
            "warning: development mode (FAB_ENV=development): generated SECRET_KEY, cookies \
             without Secure, automatic SQLite migrations; set FAB_ENV=production to deploy"
        );
    }
    let mut admin_json = Value::Null;
    let mut lines = String::new();
    match &bootstrap {
        AdminBootstrap::AlreadyPresent => {}
        AdminBootstrap::Created {
            username,
            generated_password: Some(password),
        } => {
            let _ = writeln!(
                lines,
                "Created the first admin. Username: {username}  Password: {}\n\
                 This password is shown only once: log in and change it.",
                password.expose()
            );
            admin_json = json!({ "username": username, "password": password.expose() });
        }
        AdminBootstrap::Created {
            username,
            generated_password: None,
        } => {
            let _ = writeln!(
                lines,
                "Created the first admin `{username}` with the password in FAB_ADMIN_PASSWORD."
            );
            admin_json = json!({ "username": username });
        }
        AdminBootstrap::NotCreated { username, reason } => eprintln!(
            "warning: no active user holds the Admin role and the first admin was not created \
             ({reason}): enable one with `fab user-enable --username {username}` or create one \
             with `fab create-admin`"
        ),
    }
    let _ = writeln!(lines, "fab is listening on {local}: open {url}");
    if context.json {
        let event = json!({
            "listening": local.to_string(),
            "url": url,
            "environment": if production { "production" } else { "development" },
            "admin_created": admin_json,
            "tls": edge.is_tls(),
            "warnings": warnings,
        });
        println!("{event}");
    } else {
        print!("{lines}");
    }
    tracing::info!(%local, tls = edge.is_tls(), "serving");
    app.serve_on(edge, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// `context` with `--tls-cert`/`--tls-key` in place of `TLS_CERT_FILE`/`TLS_KEY_FILE`. They go in
/// before validation, so the production checks (HTTPS needs TLS or a trusted proxy) see them.
fn with_tls_flags(context: &Context, args: &ServeArgs) -> Result<Context, CliError> {
    let mut env = context.env.clone();
    for (name, flag, path) in [
        ("TLS_CERT_FILE", "--tls-cert", &args.tls_cert),
        ("TLS_KEY_FILE", "--tls-key", &args.tls_key),
    ] {
        let Some(path) = path else { continue };
        let text = path
            .to_str()
            .ok_or_else(|| CliError::Usage(format!("{flag}: the path is not valid UTF-8")))?;
        env.retain(|(existing, _)| existing != name);
        env.push((name.to_owned(), text.to_owned()));
    }
    Ok(Context {
        config_path: context.config_path.clone(),
        json: context.json,
        env,
    })
}

/// What `fab serve` says before it starts: every configuration warning, and every
/// `ALLOW_INSECURE` override in force, whether or not this configuration needed it.
fn startup_warnings(config: &Config) -> Vec<String> {
    let mut warnings = config.warnings.clone();
    for allowed in &config.edge.allow_insecure {
        let name = format!("ALLOW_INSECURE={}", allowed.name());
        if warnings.iter().any(|warning| warning.contains(&name)) {
            continue;
        }
        let what = match allowed {
            InsecureOverride::PlainHttp => {
                "production may serve plain HTTP with no TLS, no trusted proxy and no HTTPS enforcement"
            }
            InsecureOverride::InsecureCookies => {
                "production may send the session cookie without Secure or HttpOnly"
            }
        };
        warnings.push(format!("{name} is in force: {what}"));
    }
    warnings
}

/// The URL a person opens for a listen address: a wildcard address is reached on loopback.
fn browser_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/", SocketAddr::new(ip, addr.port()))
}

/// A future that completes on SIGTERM or ctrl-c. The handlers are installed by this call, not
/// at the first poll, so a signal sent as soon as the server says it listens is not lost to the
/// default action (which would kill the process without finishing requests).
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            // A handler that could not be installed leaves the default action in place.
            let wait = |stream: std::io::Result<tokio::signal::unix::Signal>| async move {
                match stream {
                    Ok(mut stream) => {
                        stream.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let (terminate, interrupt) = signals;
            tokio::select! {
                () = wait(terminate) => {}
                () = wait(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown requested; finishing requests in flight");
    }
}

async fn db_upgrade(context: &Context) -> Result<Report, CliError> {
    let config = context.load_config()?;
    let database = app::connect(&config.database).await?;
    let backend = database.backend_name();
    let applied = database.migrate().await.map_err(AppError::from)?;
    let human = if applied.is_empty() {
        format!("{backend} schema is current; nothing to apply")
    } else {
        let mut text = format!("applied {} migration(s) on {backend}:", applied.len());
        for name in &applied {
            let _ = write!(text, "\n  {name}");
        }
        text
    };
    Ok(Report::new(
        human,
        json!({ "backend": backend, "applied": applied }),
    ))
}

async fn db_status(context: &Context) -> Result<Report, CliError> {
    let config = context.load_config()?;
    let database = app::connect(&config.database).await?;
    let backend = database.backend_name();
    let status = database.schema_status().await.map_err(AppError::from)?;
    let current = status.pending.is_empty() && status.unknown.is_empty();
    let mut table = table(["MIGRATION", "STATE"]);
    for (names, state) in [
        (&status.applied, "applied"),
        (&status.pending, "pending"),
        (&status.unknown, "unknown to this fab"),
    ] {
        for name in names {
            table.add_row([name.as_str(), state]);
        }
    }
    let summary = if current {
        format!("{backend} schema is current")
    } else if !status.unknown.is_empty() {
        format!("{backend} schema was upgraded by a newer fab; run that version")
    } else {
        format!(
            "{backend} schema has {} pending migration(s): run `fab db upgrade`",
            status.pending.len()
        )
    };
    Ok(Report::new(
        format!("{table}\n{summary}"),
        json!({
            "backend": backend,
            "current": current,
            "applied": status.applied,
            "pending": status.pending,
            "unknown": status.unknown,
        }),
    ))
}

/// The password from the flag, else typed twice at the terminal; never read from a pipe.
fn password_from(flag: Option<String>) -> Result<Secret, CliError> {
    if let Some(password) = flag {
        return Ok(Secret::new(password));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "--password is required when stdin is not a terminal".into(),
        ));
    }
    let prompt_error =
        |e: std::io::Error| CliError::Usage(format!("cannot read the password: {e}"));
    let first = Secret::new(rpassword::prompt_password("Password: ").map_err(prompt_error)?);
    let second =
        Secret::new(rpassword::prompt_password("Repeat for confirmation: ").map_err(prompt_error)?);
    if first != second {
        return Err(CliError::Usage("the two passwords differ".into()));
    }
    Ok(first)
}

fn user_json(user: &User) -> Value {
    serde_json::to_value(user).unwrap_or(Value::Null)
}

fn role_names(user: &User) -> String {
    let names: Vec<&str> = user.roles.iter().map(|role| role.name.as_str()).collect();
    names.join(", ")
}

async fn create_admin(context: &Context, args: CreateAdminArgs) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    // The Admin role exists once the declared permissions are synchronised.
    app.sync_permissions().await?;
    let password = match (args.password, &app.config.admin.password) {
        (None, Some(configured)) => configured.clone(),
        (flag, _) => password_from(flag)?,
    };
    let account = NewAccount {
        username: args
            .username
            .unwrap_or_else(|| app.config.admin.username.clone()),
        first_name: args.firstname,
        last_name: args.lastname,
        email: args.email.unwrap_or_else(|| app.config.admin.email.clone()),
        password,
        roles: vec![ADMIN_ROLE.to_owned()],
    };
    let user = accounts::create_user(&app.parts, account, &context.actor()).await?;
    Ok(Report::new(
        format!("created admin `{}` (id {})", user.username, user.id),
        user_json(&user),
    ))
}

async fn create_user(context: &Context, args: CreateUserArgs) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    // Admin and Public exist once the declared permissions are synchronised.
    app.sync_permissions().await?;
    let password = password_from(args.password)?;
    let account = NewAccount {
        username: args.username,
        first_name: args.firstname,
        last_name: args.lastname,
        email: args.email,
        password,
        roles: args.roles,
    };
    let user = accounts::create_user(&app.parts, account, &context.actor()).await?;
    Ok(Report::new(
        format!(
            "created user `{}` (id {}) with role(s) {}",
            user.username,
            user.id,
            role_names(&user)
        ),
        user_json(&user),
    ))
}

/// Says on stderr that sessions held by a running server are out of this command's reach.
fn warn_if_sessions_unreachable(app: &App) {
    if app.sessions_are_process_local() {
        eprintln!(
            "warning: SESSION_BACKEND=memory: sessions live in the serving process and this \
             command cannot end them; restart the server to end them all"
        );
    }
}

async fn reset_password(
    context: &Context,
    username: &str,
    password: Option<String>,
) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    let user = accounts::user_by_username(&app.parts, username).await?;
    let password = password_from(password)?;
    let reset = accounts::reset_password(&app.parts, &user, password, &context.actor()).await?;
    warn_if_sessions_unreachable(&app);
    Ok(Report::new(
        format!(
            "password of `{}` reset; ended {} session(s)",
            reset.username, reset.sessions_ended
        ),
        serde_json::to_value(&reset).unwrap_or(Value::Null),
    ))
}

async fn list_users(context: &Context, search: Option<String>) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    let mut query = UserQuery {
        search,
        page: 0,
        page_size: 500,
    };
    let mut users = Vec::new();
    loop {
        let page = app
            .parts
            .store
            .list_users(&query)
            .await
            .map_err(AppError::from)?;
        let pages = page.page_count();
        users.extend(page.items);
        query.page += 1;
        if query.page >= pages {
            break;
        }
    }
    let json = Value::Array(users.iter().map(user_json).collect());
    if users.is_empty() {
        return Ok(Report::new("no users", json));
    }
    let mut table = table([
        "ID",
        "USERNAME",
        "NAME",
        "EMAIL",
        "ROLES",
        "ACTIVE",
        "LAST LOGIN",
    ]);
    for user in &users {
        table.add_row([
            user.id.to_string(),
            user.username.clone(),
            user.display_name(),
            user.email.clone(),
            role_names(user),
            if user.active { "yes" } else { "no" }.to_owned(),
            user.last_login.map_or_else(
                || "never".to_owned(),
                |at| at.format("%Y-%m-%d %H:%M UTC").to_string(),
            ),
        ]);
    }
    Ok(Report::new(table.to_string(), json))
}

async fn set_active(context: &Context, username: &str, active: bool) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    let user = accounts::user_by_username(&app.parts, username).await?;
    let change = accounts::set_active(&app.parts, &user, active, &context.actor()).await?;
    let human = match (active, change.was_active) {
        (true, true) => format!("`{}` was already enabled", change.username),
        (true, false) => format!("enabled `{}`", change.username),
        (false, was_active) => {
            warn_if_sessions_unreachable(&app);
            format!(
                "{} `{}`; ended {} session(s)",
                if was_active {
                    "disabled"
                } else {
                    "already disabled:"
                },
                change.username,
                change.sessions_ended
            )
        }
    };
    Ok(Report::new(
        human,
        serde_json::to_value(&change).unwrap_or(Value::Null),
    ))
}

async fn clear_sessions(context: &Context, args: ClearSessionsArgs) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    if app.sessions_are_process_local() {
        return Err(CliError::Usage(
            "SESSION_BACKEND=memory: sessions live only in the serving process; restart it to \
             end them all"
                .into(),
        ));
    }
    let scope = match (args.user_id, args.username, args.all) {
        (Some(id), _, _) => {
            SessionScope::User(Box::new(accounts::user_by_id(&app.parts, id).await?))
        }
        (None, Some(username), _) => SessionScope::User(Box::new(
            accounts::user_by_username(&app.parts, &username).await?,
        )),
        (None, None, true) => SessionScope::All,
        (None, None, false) => {
            return Err(CliError::Usage(
                "name one of --user-id, --username or --all".into(),
            ));
        }
    };
    let ended = accounts::end_sessions(&app.parts, &scope, &context.actor()).await?;
    let (human, whose) = match &scope {
        SessionScope::User(user) => (
            format!("ended {ended} session(s) of `{}`", user.username),
            json!(user.username),
        ),
        SessionScope::All => (format!("ended {ended} session(s)"), Value::Null),
    };
    Ok(Report::new(
        human,
        json!({ "sessions_ended": ended, "username": whose }),
    ))
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CliError {
    CliError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

async fn export_roles(context: &Context, path: &Path) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    let roles = app
        .parts
        .store
        .export_roles()
        .await
        .map_err(AppError::from)?;
    let text = serde_json::to_string_pretty(&roles).map_err(|e| file_error(path, e))?;
    std::fs::write(path, format!("{text}\n")).map_err(|e| file_error(path, e))?;
    Ok(Report::new(
        format!("exported {} role(s) to {}", roles.len(), path.display()),
        json!({ "path": path.display().to_string(), "roles": roles.len() }),
    ))
}

async fn import_roles(context: &Context, path: &Path) -> Result<Report, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let roles: Vec<RoleExport> = serde_json::from_str(&text).map_err(|e| {
        file_error(
            path,
            format!("not a Flask-AppBuilder roles export (an array of {{\"name\", \"permissions\"}}): {e}"),
        )
    })?;
    for (index, role) in roles.iter().enumerate() {
        validate_role_name(&role.name)
            .map_err(|e| file_error(path, format!("role {}: {}", index + 1, e)))?;
    }
    let app = context.app(StartMode::Command).await?;
    let names: Vec<&str> = roles.iter().map(|role| role.name.as_str()).collect();
    let audit = accounts::operator_event(
        &app.parts,
        AuditKind::AdminPermissionChange,
        &context.actor(),
    )
    .on("roles import")
    .with_detail(json!({ "file": path.display().to_string(), "roles": names }));
    let touched = app
        .parts
        .store
        .import_roles(&roles, &audit)
        .await
        .map_err(AppError::from)?;
    Ok(Report::new(
        format!("imported {touched} role(s) from {}", path.display()),
        json!({ "path": path.display().to_string(), "roles": touched }),
    ))
}

async fn security_cleanup(context: &Context) -> Result<Report, CliError> {
    let app = context.app(StartMode::Command).await?;
    let audit = accounts::operator_event(
        &app.parts,
        AuditKind::AdminPermissionChange,
        &context.actor(),
    )
    .on("permission cleanup");
    let report = app
        .parts
        .store
        .cleanup_permissions(&fab_web::declared_grants(), &audit)
        .await
        .map_err(AppError::from)?;
    let json = serde_json::to_value(&report).unwrap_or(Value::Null);
    if report.permission_views.is_empty()
        && report.view_menus.is_empty()
        && report.permissions.is_empty()
    {
        return Ok(Report::new(
            "nothing to remove: every stored permission is declared",
            json,
        ));
    }
    let mut table = table(["REMOVED", "NAME"]);
    for grant in &report.permission_views {
        table.add_row(["permission on view".to_owned(), grant.to_string()]);
    }
    for name in &report.view_menus {
        table.add_row(["view menu".to_owned(), name.clone()]);
    }
    for name in &report.permissions {
        table.add_row(["permission".to_owned(), name.clone()]);
    }
    Ok(Report::new(table.to_string(), json))
}

fn version() -> Report {
    let version = env!("CARGO_PKG_VERSION");
    Report::new(
        format!("fab {version}"),
        json!({ "name": "fab", "version": version }),
    )
}

fn config_check(context: &Context) -> Result<Report, CliError> {
    let mut report: ConfigReport = settings::check(
        context.config_path.as_deref(),
        context.env.iter().cloned(),
        &OsRandom,
    )?;
    let log_filter = report.effective.iter().find(|entry| entry.key == "FAB_LOG");
    if let Some(Err(error)) = log_filter.map(|entry| logging::parse_filter(&entry.value)) {
        report.problems.push(fab_core::config::ConfigProblem {
            key: "FAB_LOG".into(),
            message: format!(
                "`{}` is not a valid log filter: {}",
                error.filter, error.reason
            ),
        });
    }

    let mut table = table(["KEY", "VALUE", "SOURCE"]);
    for entry in &report.effective {
        table.add_row([
            entry.key.to_owned(),
            entry.value.clone(),
            entry.origin.to_string(),
        ]);
    }
    let mut human = table.to_string();
    if !report.warnings.is_empty() {
        human.push_str("\nwarnings:");
        for warning in &report.warnings {
            let _ = write!(human, "\n  {warning}");
        }
    }
    if report.problems.is_empty() {
        human.push_str("\nconfiguration is valid");
    } else {
        human.push_str("\nproblems:");
        for problem in &report.problems {
            let _ = write!(human, "\n  {problem}");
        }
    }
    let json = json!({
        "valid": report.problems.is_empty(),
        "effective": report.effective.iter().map(|entry| json!({
            "key": entry.key,
            "value": entry.value,
            "source": entry.origin.to_string(),
        })).collect::<Vec<_>>(),
        "warnings": report.warnings,
        "problems": report.problems.iter().map(|problem| json!({
            "key": problem.key,
            "message": problem.message,
        })).collect::<Vec<_>>(),
    });
    if report.problems.is_empty() {
        return Ok(Report::new(human, json));
    }
    // The report is the useful part: print it, then fail with one line on stderr.
    if context.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        println!("{human}");
    }
    Err(CliError::ConfigProblems(report.problems.len()))
}

fn limiter_error(error: fab_core::ratelimit::LimiterError) -> CliError {
    CliError::Usage(format!("the rate limiter did not answer: {error}"))
}

fn store_error(error: fab_core::StoreError) -> CliError {
    CliError::App(AppError::Store(error))
}

async fn rate_limit_status(app: &App, top: usize) -> Result<Report, CliError> {
    use fab_core::config::LimiterBackend;
    let limits = &app.config.rate_limit;
    let backend = match limits.backend {
        LimiterBackend::Memory => "memory",
        LimiterBackend::Redis => "redis",
    };
    let reachable = app.parts.limiter.ping().await;
    let emergency = app.emergency_source.read().await;
    let policies = [
        ("default (per IP)", limits.default, limits.emergency_default),
        (
            "login (per username and per IP)",
            limits.login,
            limits.emergency_login,
        ),
        ("api (per principal)", limits.api, limits.emergency_api),
    ];
    let hottest = match limits.backend {
        // The memory limiter's counters live inside each server process, not here.
        LimiterBackend::Memory => Vec::new(),
        // Unreachable is already said above; the status still shows the rest.
        LimiterBackend::Redis => app.parts.limiter.hottest(top).await.unwrap_or_default(),
    };
    let mut human = format!(
        "backend: {backend} ({})\nenabled: {}\nemergency mode: {}\nfail mode: {:?}\n",
        match &reachable {
            Ok(()) => "reachable".to_owned(),
            Err(e) => format!("NOT reachable: {e}"),
        },
        limits.enabled,
        match &emergency {
            Ok(true) => "ON".to_owned(),
            Ok(false) => "off".to_owned(),
            Err(e) => format!("unknown ({e})"),
        },
        limits.fail_mode,
    );
    let mut policy_table = table(["policy", "limit", "emergency limit"]);
    for (name, normal, strict) in &policies {
        policy_table.add_row([(*name).to_owned(), normal.to_string(), strict.to_string()]);
    }
    for (path, rate) in &limits.routes {
        policy_table.add_row([
            format!("route {path} (per IP)"),
            rate.to_string(),
            rate.divided(limits.emergency_factor).to_string(),
        ]);
    }
    human.push_str(&format!("{policy_table}\n"));
    if limits.backend == LimiterBackend::Memory {
        human.push_str("keys: the memory limiter keeps its counters inside each server process\n");
    } else if hottest.is_empty() {
        human.push_str("keys: none is limited\n");
    } else {
        let mut keys = table([
            "key",
            "used",
            "remaining",
            "retry after (s)",
            "reset after (s)",
        ]);
        for key in &hottest {
            keys.add_row([
                key.key.as_str().to_owned(),
                key.used.to_string(),
                key.remaining.to_string(),
                key.retry_after.num_seconds().to_string(),
                key.reset_after.num_seconds().to_string(),
            ]);
        }
        human.push_str(&format!("{keys}\n"));
    }
    let json = serde_json::json!({
        "backend": backend,
        "enabled": limits.enabled,
        "reachable": reachable.is_ok(),
        "emergency": emergency.as_ref().ok(),
        "fail_mode": format!("{:?}", limits.fail_mode).to_lowercase(),
        "policies": policies.iter().map(|(name, normal, strict)| serde_json::json!({
            "policy": name, "limit": normal.to_string(), "emergency_limit": strict.to_string(),
        })).collect::<Vec<_>>(),
        "routes": limits.routes.iter().map(|(p, r)| serde_json::json!({"path": p, "limit": r.to_string()})).collect::<Vec<_>>(),
        "hottest": hottest.iter().map(|k| serde_json::json!({
            "key": k.key.as_str(), "used": k.used, "remaining": k.remaining,
            "retry_after_seconds": k.retry_after.num_seconds(), "reset_after_seconds": k.reset_after.num_seconds(),
        })).collect::<Vec<_>>(),
    });
    Ok(Report::new(human, json))
}

async fn set_emergency(app: &App, on: bool, actor: &Actor) -> Result<Report, CliError> {
    use fab_core::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
    use fab_core::config::LimiterBackend;
    use fab_core::lockout::FlagStore;
    use fab_core::ratelimit::EMERGENCY_MODE_KEY;
    let event = AuditEvent::new(
        AuditKind::SecurityEmergencyMode,
        Outcome::Success,
        app.parts.clock.now(),
    )
    .by(Some(actor.clone()))
    .with_detail(serde_json::json!({ "emergency": on, "by": "cli" }));
    let store = app.database.store();
    match app.config.rate_limit.backend {
        LimiterBackend::Redis => {
            app.parts
                .limiter
                .set_emergency(on)
                .await
                .map_err(limiter_error)?;
            store.record(&event).await.map_err(store_error)?;
        }
        // Every server watches the database flag when its limiter is in memory.
        LimiterBackend::Memory => store
            .set_flag(EMERGENCY_MODE_KEY, on.then_some("1"), &event)
            .await
            .map_err(store_error)?,
    }
    let state = if on { "ON" } else { "off" };
    Ok(Report::new(
        format!("emergency rate limits {state}; every instance follows within a second"),
        serde_json::json!({ "emergency": on }),
    ))
}

async fn reset_key(app: &App, key: &str, actor: &Actor) -> Result<Report, CliError> {
    use fab_core::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
    use fab_core::config::LimiterBackend;
    let key =
        fab_core::ratelimit::RateKey::parse(key).map_err(|e| CliError::Usage(e.to_string()))?;
    if app.config.rate_limit.backend == LimiterBackend::Memory {
        return Err(CliError::Usage(
            "RATE_LIMIT_BACKEND=memory keeps its counters inside each server process; restart the server to reset them, or use redis".into(),
        ));
    }
    let had_state = app.parts.limiter.reset(&key).await.map_err(limiter_error)?;
    let event = AuditEvent::new(
        AuditKind::AdminRateLimitReset,
        Outcome::Success,
        app.parts.clock.now(),
    )
    .by(Some(actor.clone()))
    .on(key.as_str().to_owned())
    .with_detail(serde_json::json!({ "had_state": had_state }));
    app.database
        .store()
        .record(&event)
        .await
        .map_err(store_error)?;
    let human = if had_state {
        format!("reset `{}`", key.as_str())
    } else {
        format!("`{}` held no state", key.as_str())
    };
    Ok(Report::new(
        human,
        serde_json::json!({ "key": key.as_str(), "had_state": had_state }),
    ))
}

async fn unlock(app: &App, username: &str, actor: &Actor) -> Result<Report, CliError> {
    use fab_core::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
    use fab_core::lockout::LockoutStore;
    let user = accounts::user_by_username(&app.parts, username).await?;
    let store = app.database.store();
    let state = store.lockout_state(user.id).await.map_err(store_error)?;
    let was_locked = state.locked_anywhere(app.parts.clock.now());
    store.clear_lockout(user.id).await.map_err(store_error)?;
    let event = AuditEvent::new(
        AuditKind::AdminUserUnlock,
        Outcome::Success,
        app.parts.clock.now(),
    )
    .by(Some(actor.clone()))
    .on(user.audit_target())
    .with_detail(serde_json::json!({ "was_locked": was_locked }));
    store.record(&event).await.map_err(store_error)?;
    let human = if was_locked {
        format!("unlocked `{}`", user.username)
    } else {
        format!(
            "`{}` was not locked; its failure counters are cleared",
            user.username
        )
    };
    Ok(Report::new(
        human,
        serde_json::json!({ "username": user.username, "was_locked": was_locked }),
    ))
}

fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn clear_sessions_takes_exactly_one_scope() {
        assert!(Cli::try_parse_from(["fab", "clear-sessions"]).is_err());
        assert!(Cli::try_parse_from(["fab", "clear-sessions", "--all", "--user-id", "3"]).is_err());
        assert!(Cli::try_parse_from(["fab", "clear-sessions", "--user-id", "3"]).is_ok());
    }

    #[test]
    fn create_user_requires_a_role() {
        let base = [
            "fab",
            "create-user",
            "--username",
            "bob",
            "--firstname",
            "Bob",
            "--lastname",
            "B",
            "--email",
            "bob@example.com",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        let with_roles = base.iter().chain(&["--role", "Public", "--role", "Viewer"]);
        let cli = Cli::try_parse_from(with_roles).unwrap();
        let Command::CreateUser(args) = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(args.roles, ["Public", "Viewer"]);
    }

    #[test]
    fn wildcard_listen_addresses_open_on_loopback() {
        assert_eq!(
            browser_url("0.0.0.0:8080".parse().unwrap(), false),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            browser_url("[::]:80".parse().unwrap(), false),
            "http://[::1]:80/"
        );
        assert_eq!(
            browser_url("192.0.2.7:8443".parse().unwrap(), true),
            "https://192.0.2.7:8443/"
        );
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let only_cert = Cli::try_parse_from(["fab", "serve", "--tls-cert", "c.pem"]);
        assert!(only_cert.is_err(), "--tls-cert needs --tls-key");
        let only_key = Cli::try_parse_from(["fab", "serve", "--tls-key", "k.pem"]);
        assert!(only_key.is_err(), "--tls-key needs --tls-cert");
        let both =
            Cli::try_parse_from(["fab", "serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .unwrap();
        let Command::Serve(args) = both.command else {
            panic!("parsed {:?}", both.command);
        };
        assert_eq!(args.tls_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(args.tls_key.as_deref(), Some(Path::new("k.pem")));
    }

    #[test]
    fn tls_flags_replace_the_environment_before_validation() {
        let context = Context {
            config_path: None,
            json: false,
            env: vec![
                ("TLS_CERT_FILE".into(), "/etc/old/cert.pem".into()),
                ("TLS_KEY_FILE".into(), "/etc/old/key.pem".into()),
                ("FAB_ENV".into(), "development".into()),
            ],
        };
        let args = ServeArgs {
            bind: None,
            tls_cert: Some("/etc/new/cert.pem".into()),
            tls_key: Some("/etc/new/key.pem".into()),
        };
        let replaced = with_tls_flags(&context, &args).unwrap();
        let value = |name: &str| -> Vec<&str> {
            replaced
                .env
                .iter()
                .filter(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
                .collect()
        };
        assert_eq!(value("TLS_CERT_FILE"), ["/etc/new/cert.pem"]);
        assert_eq!(value("TLS_KEY_FILE"), ["/etc/new/key.pem"]);
        assert_eq!(value("FAB_ENV"), ["development"]);
    }

    #[test]
    fn startup_warnings_name_every_insecure_override_in_force() {
        let mut raw = fab_core::config::RawConfig::new();
        let origin = fab_core::config::Origin::Env("test".into());
        for (key, value) in [
            ("FAB_ENV", "development"),
            ("SECRET_KEY", "a-development-secret-key-long-enough-0123"),
            ("ALLOW_INSECURE", "plain-http,insecure-cookies"),
        ] {
            raw.set(
                key,
                fab_core::config::RawValue::Text(value.into()),
                origin.clone(),
            );
        }
        let config = Config::from_raw(&raw).unwrap();
        let warnings = startup_warnings(&config);
        for name in [
            "ALLOW_INSECURE=plain-http",
            "ALLOW_INSECURE=insecure-cookies",
        ] {
            assert_eq!(
                warnings.iter().filter(|w| w.contains(name)).count(),
                1,
                "{name} once in {warnings:?}"
            );
        }
    }
}
