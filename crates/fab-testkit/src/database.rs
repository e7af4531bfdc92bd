//! Fresh databases for tests: an SQLite file in a temporary directory, or a PostgreSQL database
//! of its own, created through `FAB_TEST_POSTGRES_URL` and dropped when the [`TestDatabase`] is.
//!
//! When PostgreSQL cannot be reached the helpers panic with the reason: a test that needs it
//! fails, it never skips silently. [`create_dml_only_role`] sets up the deployment guide's
//! least-privilege login (rows only, no DDL) so tests can run the server the way production does.

use fab_core::config::DatabaseUrl;
use fab_store::Database;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::sync::{Mutex, PoisonError};
use tempfile::TempDir;

/// The admin URL tests create PostgreSQL databases through: `FAB_TEST_POSTGRES_URL`, or the
/// machine's `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_admin_url() -> String {
    // Test support reads its own FAB_TEST_* variables; the server's configuration never does.
    std::env::var("FAB_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for one test and is removed after it.
pub struct TestDatabase {
    /// How to connect to it (as its owner).
    pub url: DatabaseUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The directory holding the SQLite file; deleted on drop.
    Sqlite { _directory: TempDir },
    /// A PostgreSQL database and the roles made for it, dropped on drop.
    Postgres {
        admin_url: String,
        name: String,
        roles: Mutex<Vec<String>>,
    },
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("url", &self.url.redacted())
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Connects as the owner.
    pub async fn connect(&self) -> Database {
        Database::connect(&self.url).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test database {}: {e}",
                self.url.redacted()
            )
        })
    }

    /// Connects as the owner and applies every migration.
    pub async fn connect_migrated(&self) -> Database {
        let database = self.connect().await;
        database
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("cannot migrate the test database: {e}"));
        database
    }

    /// The PostgreSQL URL, or a panic naming the test's mistake.
    fn postgres_url(&self) -> &str {
        match &self.url {
            DatabaseUrl::Postgres { url } => url.expose(),
            DatabaseUrl::Sqlite { .. } => {
                panic!("this helper needs a PostgreSQL test database (fresh_postgres)")
            }
        }
    }
}

/// `bytes` random bytes as lowercase hex, for names nobody else uses.
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .unwrap_or_else(|e| panic!("the operating system random generator failed: {e}"));
    hex::encode(buffer)
}

/// A fresh, empty SQLite database in its own temporary directory (the file is created on first
/// connect).
pub async fn fresh_sqlite() -> TestDatabase {
    let directory = tempfile::Builder::new()
        .prefix("fab-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let path = directory.path().join("fab.db");
    TestDatabase {
        url: DatabaseUrl::Sqlite { path },
        cleanup: Cleanup::Sqlite {
            _directory: directory,
        },
    }
}

async fn admin_connection(url: &str) -> DatabaseConnection {
    let shown = DatabaseUrl::parse(url).map_or_else(|e| e, |u| u.redacted());
    sea_orm::Database::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {shown} ({e}); tests need it: start it or set FAB_TEST_POSTGRES_URL"
        )
    })
}

async fn execute(connection: &DatabaseConnection, sql: &str) {
    if let Err(e) = connection.execute_unprepared(sql).await {
        panic!("test database setup failed ({e}) running: {sql}");
    }
}

/// `url` with its path (the database name) replaced, and its credentials when given.
fn url_for(url: &str, database: &str, login: Option<(&str, &str)>) -> String {
    let mut parsed =
        url::Url::parse(url).unwrap_or_else(|e| panic!("FAB_TEST_POSTGRES_URL is not a URL: {e}"));
    parsed.set_path(&format!("/{database}"));
    if let Some((user, password)) = login {
        let set = parsed
            .set_username(user)
            .and_then(|()| parsed.set_password(Some(password)));
        if set.is_err() {
            panic!("FAB_TEST_POSTGRES_URL cannot carry credentials");
        }
    }
    parsed.to_string()
}

fn postgres_url(text: String) -> DatabaseUrl {
    DatabaseUrl::parse(&text).unwrap_or_else(|e| panic!("unusable PostgreSQL URL: {e}"))
}

/// A fresh, empty PostgreSQL database `fab_t_<random hex>`, created through
/// [`postgres_admin_url`] and dropped (with its connections) when the result is dropped.
/// Panics when PostgreSQL cannot be reached.
pub async fn fresh_postgres() -> TestDatabase {
    let admin_url = postgres_admin_url();
    let name = format!("fab_t_{}", random_hex(8));
    let admin = admin_connection(&admin_url).await;
    execute(&admin, &format!("CREATE DATABASE {name}")).await;
    let _ = admin.close().await;
    TestDatabase {
        url: postgres_url(url_for(&admin_url, &name, None)),
        cleanup: Cleanup::Postgres {
            admin_url,
            name,
            roles: Mutex::new(Vec::new()),
        },
    }
}

/// Creates a login role that may only use rows: CONNECT on the database, USAGE on schema
/// `public`, SELECT/INSERT/UPDATE/DELETE on every table and USAGE/SELECT on every sequence (ids
/// are drawn from sequences), as the deployment guide sets up the server's role. Other roles
/// lose the default CONNECT. Call it after migrating as the owner: the grants cover the tables
/// that exist then. Returns the URL logging in as the new role; the role is dropped with the
/// database.
pub async fn create_dml_only_role(database: &TestDatabase) -> DatabaseUrl {
    let owner_url = database.postgres_url().to_owned();
    let Cleanup::Postgres { name, roles, .. } = &database.cleanup else {
        panic!("create_dml_only_role needs a PostgreSQL test database");
    };
    let role = format!("fab_dml_{}", random_hex(6));
    let password = random_hex(16);
    // Recorded before it exists, so a failure half-way still drops it.
    roles
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(role.clone());
    let owner = admin_connection(&owner_url).await;
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {name} TO {role}"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        execute(&owner, &statement).await;
    }
    let _ = owner.close().await;
    postgres_url(url_for(&owner_url, name, Some((&role, &password))))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::Postgres {
            admin_url,
            name,
            roles,
        } = &self.cleanup
        else {
            return;
        };
        let admin_url = admin_url.clone();
        let name = name.clone();
        let roles = std::mem::take(&mut *roles.lock().unwrap_or_else(PoisonError::into_inner));
        // Drop runs inside the test's tokio runtime, which cannot be blocked on from within;
        // a thread with a runtime of its own can, and joining it keeps the cleanup before the
        // test ends.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())?;
                for role in roles {
                    admin
                        .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop a test database: {e}"),
            Err(_) => eprintln!("warning: the thread dropping a test database panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_server_and_change_the_database_and_login() {
        let url = url_for("postgres://postgres@127.0.0.1:5432/test", "fab_t_1", None);
        assert_eq!(url, "postgres://postgres@127.0.0.1:5432/fab_t_1");
        let url = url_for(
            "postgres://postgres:pw@db:5432/test?sslmode=disable",
            "fab_t_2",
            Some(("fab_dml_x", "secret")),
        );
        assert_eq!(
            url,
            "postgres://fab_dml_x:secret@db:5432/fab_t_2?sslmode=disable"
        );
    }

    #[test]
    fn random_names_differ() {
        assert_ne!(random_hex(8), random_hex(8));
        assert_eq!(random_hex(8).len(), 16);
    }
}
