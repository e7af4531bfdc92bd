//! [`Database`]: connecting to SQLite or PostgreSQL, migrating, and the read-only schema check.
//!
//! This is the one place that knows which database it talks to; everything above it (the
//! stores) runs the same queries on both. Migrations are applied only by [`Database::migrate`]
//! (`fab db upgrade`, run as the schema owner); the server runs as a role that may only read and
//! write rows and checks with [`Database::schema_status`], which only ever SELECTs.

use crate::error::from_db;
use crate::migration::{MIGRATION_TABLE, Migrator, known_migrations};
use crate::sql_store::SqlStore;
use fab_core::StoreError;
use fab_core::config::DatabaseUrl;
use sea_orm::sea_query::{Order, Query};
use sea_orm::sqlx::ConnectOptions as _;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use sea_orm_migration::{MigratorTrait, SchemaManager};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// How long SQLite waits for another writer before giving up with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite serialises writers anyway; a few connections let reads proceed beside a write.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// PostgreSQL connections per process.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// A connection pool to the configured database. Cheap to clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct Database {
    connection: DatabaseConnection,
}

/// Which migrations a database has, compared with the ones this build of fab knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Known migrations recorded as applied, oldest first.
    pub applied: Vec<String>,
    /// Known migrations not applied yet, oldest first: `fab db upgrade` applies them.
    pub pending: Vec<String>,
    /// Migrations the database records that this build does not know: a newer fab upgraded it.
    pub unknown: Vec<String>,
}

impl SchemaStatus {
    /// Whether the schema is exactly what this build expects: nothing pending and nothing newer.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

impl Database {
    /// Connects to `url`.
    ///
    /// SQLite: creates the parent directory (mode 0700) and the file (mode 0600: it holds
    /// password hashes) when missing, and opens it with the WAL journal, foreign keys enforced
    /// and a 5 s busy timeout. PostgreSQL: opens a pool and one connection to prove the server
    /// answers. Failures are [`StoreError::Unavailable`] with a message that names the database
    /// without its password.
    pub async fn connect(url: &DatabaseUrl) -> Result<Database, StoreError> {
        let connection = match url {
            DatabaseUrl::Sqlite { path } => connect_sqlite(path).await?,
            DatabaseUrl::Postgres { url: secret } => {
                connect_postgres(secret.expose(), &url.redacted()).await?
            }
        };
        Ok(Database { connection })
    }

    /// `"sqlite"` or `"postgresql"`.
    pub fn backend_name(&self) -> &'static str {
        match self.connection.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgresql",
            DbBackend::MySql => "mysql",
            // sea-orm may learn more backends; fab connects to none of them.
            _ => "unknown",
        }
    }

    /// Applies every pending migration and returns the names applied, oldest first.
    ///
    /// Needs the schema owner's rights (CREATE on the schema); under a role limited to rows it
    /// fails, even with nothing pending, because it first makes sure the migrations table
    /// exists. Refuses a database that a newer fab has upgraded.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let status = self.schema_status().await?;
        if !status.unknown.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the database has migrations this fab does not know ({}): it was upgraded by a newer fab",
                status.unknown.join(", ")
            )));
        }
        Migrator::up(&self.connection, None)
            .await
            .map_err(from_db)?;
        Ok(status.pending)
    }

    /// Compares the applied migrations with the known ones. Read-only: it only SELECTs, so the
    /// server's least-privilege role can run it; a missing migrations table means nothing has
    /// been applied.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let manager = SchemaManager::new(&self.connection);
        let recorded = if manager.has_table(MIGRATION_TABLE).await.map_err(from_db)? {
            let query = Query::select()
                .column("version")
                .from(MIGRATION_TABLE)
                .order_by("version", Order::Asc)
                .to_owned();
            let rows = self.connection.query_all(&query).await.map_err(from_db)?;
            rows.iter()
                .map(|row| row.try_get::<String>("", "version"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(from_db)?
        } else {
            Vec::new()
        };
        Ok(compare_migrations(&known_migrations(), &recorded))
    }

    /// A cheap round trip proving the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.connection
            .ping()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// The security and session store on this database.
    pub fn store(&self) -> SqlStore {
        SqlStore::new(self.connection.clone())
    }
}

fn compare_migrations(known: &[String], recorded: &[String]) -> SchemaStatus {
    SchemaStatus {
        applied: known
            .iter()
            .filter(|name| recorded.contains(name))
            .cloned()
            .collect(),
        pending: known
            .iter()
            .filter(|name| !recorded.contains(name))
            .cloned()
            .collect(),
        unknown: recorded
            .iter()
            .filter(|name| !known.contains(name))
            .cloned()
            .collect(),
    }
}

async fn connect_sqlite(path: &Path) -> Result<DatabaseConnection, StoreError> {
    let shown = path.display().to_string();
    prepare_sqlite_file(path).await.map_err(|e| {
        StoreError::Unavailable(format!("cannot create the SQLite database {shown}: {e}"))
    })?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable in WAL mode except for the last transactions before a power loss.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(SQLITE_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open the SQLite database {shown}: {e}"))
        })?;
    Ok(DatabaseConnection::from(pool))
}

/// Creates the directory and an empty file with owner-only permissions, so the WAL and shared
/// memory files SQLite creates beside it inherit them.
async fn prepare_sqlite_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(parent).await?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

async fn connect_postgres(url: &str, shown: &str) -> Result<DatabaseConnection, StoreError> {
    // The pool is built here rather than by sea-orm's `Database::connect`, whose trace-level
    // span records the connection options, URL and password included.
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("unusable PostgreSQL URL {shown}: {e}")))?
        .application_name("fab")
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to {shown}: {e}")))?;
    Ok(DatabaseConnection::from(pool))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn migrations_are_compared_by_name() {
        let status = compare_migrations(&names(&["m1", "m2"]), &names(&["m1", "m9"]));
        assert_eq!(status.applied, names(&["m1"]));
        assert_eq!(status.pending, names(&["m2"]));
        assert_eq!(status.unknown, names(&["m9"]));
        assert!(!status.is_current());
        assert!(compare_migrations(&names(&["m1"]), &names(&["m1"])).is_current());
        assert!(!compare_migrations(&names(&["m1"]), &names(&["m1", "m2"])).is_current());
    }
}
