//! The security-store conformance suite and the schema checks on SQLite.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use fab_core::audit::{AuditEvent, AuditKind, Outcome};
use fab_core::config::DatabaseUrl;
use fab_core::lockout::{FlagStore, LockoutStore};
use fab_core::store::SecurityStore;
use fab_store::Database;
use fab_testkit::database::{TestDatabase, fresh_sqlite};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

fab_testkit::security_store_conformance!(async {
    let database = fresh_sqlite().await;
    let store = database.connect_migrated().await.store();
    (database, store)
});

/// Every migration this build knows, oldest first.
const MIGRATIONS: [&str; 2] = ["m0001_security_schema", "m0002_lockout_and_flags"];

async fn raw(database: &TestDatabase) -> sea_orm::DatabaseConnection {
    let DatabaseUrl::Sqlite { path } = &database.url else {
        unreachable!("an SQLite test database");
    };
    sea_orm::Database::connect(format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn connect_creates_the_directory_and_a_private_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("nested/deeper/fab.db");
    let database = Database::connect(&DatabaseUrl::Sqlite { path: path.clone() })
        .await
        .unwrap();
    assert_eq!(database.backend_name(), "sqlite");
    database.ping().await.unwrap();
    assert!(path.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database holds password hashes");
        let parent = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent & 0o777, 0o700);
    }
}

#[tokio::test]
async fn connections_use_wal_foreign_keys_and_a_busy_timeout() {
    let database = fresh_sqlite().await;
    let db = database.connect_migrated().await;
    // Every pooled connection is configured: ask through the store's own pool by checking the
    // effect (a foreign key is enforced) and the journal mode the file reports.
    let connection = raw(&database).await;
    let row = connection
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap();
    let mode: String = row.try_get_by_index(0).unwrap();
    assert_eq!(mode, "wal");
    // A session for a user that does not exist breaks the foreign key, which only an enforcing
    // connection notices.
    let store = db.store();
    let record = fab_core::session::SessionPolicy::default().new_record(
        &fab_core::session::SessionToken::generate(&fab_core::random::OsRandom),
        fab_core::user::UserId(12_345),
        fab_core::session::SessionStage::Authenticated,
        chrono::Utc::now(),
        None,
        None,
    );
    let refused = fab_core::session::SessionStore::create(&store, &record).await;
    assert!(
        matches!(refused, Err(fab_core::StoreError::Conflict(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn migrate_applies_once_and_reports_status() {
    let database = fresh_sqlite().await;
    let db = database.connect().await;
    let before = db.schema_status().await.unwrap();
    assert!(before.applied.is_empty() && before.unknown.is_empty());
    assert_eq!(before.pending, MIGRATIONS);
    assert!(!before.is_current());
    assert_eq!(db.migrate().await.unwrap(), MIGRATIONS);
    let after = db.schema_status().await.unwrap();
    assert_eq!(after.applied, MIGRATIONS);
    assert!(after.is_current());
    assert!(
        db.migrate().await.unwrap().is_empty(),
        "nothing left to apply"
    );
}

#[tokio::test]
async fn schema_status_only_reads() {
    let database = fresh_sqlite().await;
    let db = database.connect().await;
    db.schema_status().await.unwrap();
    let connection = raw(&database).await;
    let tables = connection
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'table'",
        ))
        .await
        .unwrap();
    assert!(
        tables.is_empty(),
        "schema_status created {} tables",
        tables.len()
    );
}

#[tokio::test]
async fn a_database_upgraded_by_a_newer_fab_is_not_current_and_not_migrated() {
    let database = fresh_sqlite().await;
    let db = database.connect_migrated().await;
    let connection = raw(&database).await;
    connection
        .execute_unprepared(
            "INSERT INTO fab_migrations (version, applied_at) VALUES ('m9999_from_the_future', 0)",
        )
        .await
        .unwrap();
    let status = db.schema_status().await.unwrap();
    assert_eq!(status.unknown, ["m9999_from_the_future"]);
    assert!(status.pending.is_empty());
    assert!(!status.is_current());
    let refused = db.migrate().await;
    assert!(
        matches!(&refused, Err(fab_core::StoreError::Conflict(m)) if m.contains("m9999_from_the_future")),
        "{refused:?}"
    );
}

/// The tables as Flask-AppBuilder (SQLAlchemy) creates them on SQLite.
const FAB_SQLITE_SCHEMA: &str = "
CREATE TABLE ab_permission (id INTEGER NOT NULL, name VARCHAR(100) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_view_menu (id INTEGER NOT NULL, name VARCHAR(250) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_role (id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_user (id INTEGER NOT NULL, first_name VARCHAR(64) NOT NULL, last_name VARCHAR(64) NOT NULL,
  username VARCHAR(64) NOT NULL, password VARCHAR(256), active BOOLEAN, email VARCHAR(320) NOT NULL,
  last_login DATETIME, login_count INTEGER, fail_login_count INTEGER, created_on DATETIME, changed_on DATETIME,
  created_by_fk INTEGER, changed_by_fk INTEGER, PRIMARY KEY (id), UNIQUE (username), UNIQUE (email),
  FOREIGN KEY(created_by_fk) REFERENCES ab_user (id), FOREIGN KEY(changed_by_fk) REFERENCES ab_user (id));
CREATE TABLE ab_permission_view (id INTEGER NOT NULL, permission_id INTEGER, view_menu_id INTEGER, PRIMARY KEY (id),
  UNIQUE (permission_id, view_menu_id), FOREIGN KEY(permission_id) REFERENCES ab_permission (id),
  FOREIGN KEY(view_menu_id) REFERENCES ab_view_menu (id));
CREATE TABLE ab_permission_view_role (id INTEGER NOT NULL, permission_view_id INTEGER, role_id INTEGER, PRIMARY KEY (id),
  UNIQUE (permission_view_id, role_id), FOREIGN KEY(permission_view_id) REFERENCES ab_permission_view (id),
  FOREIGN KEY(role_id) REFERENCES ab_role (id));
CREATE TABLE ab_user_role (id INTEGER NOT NULL, user_id INTEGER, role_id INTEGER, PRIMARY KEY (id),
  UNIQUE (user_id, role_id), FOREIGN KEY(user_id) REFERENCES ab_user (id), FOREIGN KEY(role_id) REFERENCES ab_role (id));
INSERT INTO ab_role (id, name) VALUES (1, 'Admin');
INSERT INTO ab_user (id, first_name, last_name, username, password, active, email, last_login, login_count,
  fail_login_count, created_on, changed_on)
  VALUES (1, 'Fab', 'Admin', 'admin', 'scrypt:32768:8:1$salt$hash', 1, 'admin@fab.org',
  '2024-01-02 03:04:05.678901', 7, 0, '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000');
INSERT INTO ab_user_role (id, user_id, role_id) VALUES (1, 1, 1);
";

#[tokio::test]
async fn migration_applies_onto_a_database_flask_appbuilder_created() {
    let database = fresh_sqlite().await;
    let db = database.connect().await;
    let connection = raw(&database).await;
    for statement in FAB_SQLITE_SCHEMA
        .split(';')
        .filter(|s| !s.trim().is_empty())
    {
        connection.execute_unprepared(statement).await.unwrap();
    }
    assert_eq!(db.migrate().await.unwrap(), MIGRATIONS);
    let store = db.store();
    let admin = store
        .user_by_login("ADMIN")
        .await
        .unwrap()
        .expect("FAB's user is kept");
    assert_eq!(admin.password_hash.expose(), "scrypt:32768:8:1$salt$hash");
    assert_eq!(admin.login_count, 7);
    assert_eq!(
        admin.last_login.map(|t| t.to_rfc3339()),
        Some("2024-01-02T03:04:05.678901+00:00".to_owned())
    );
    assert!(admin.has_role("Admin"));
    let event = AuditEvent::new(
        AuditKind::AdminUserCreate,
        Outcome::Success,
        chrono::Utc::now(),
    );
    let mut profile = fab_core::user::UserProfile {
        first_name: "New".into(),
        last_name: "User".into(),
        username: "newcomer".into(),
        email: "newcomer@fab.org".into(),
        active: true,
        roles: vec![admin.roles[0].id],
    };
    let user = fab_core::user::NewUser {
        profile: profile.clone(),
        password_hash: fab_core::Secret::new("$argon2id$x"),
        created_by: Some(admin.id),
    };
    let created = store.create_user(&user, &event).await.unwrap();
    assert_eq!(created.id, fab_core::user::UserId(2));
    profile.username = "Admin".into();
    let clash = fab_core::user::NewUser { profile, ..user };
    assert!(
        store.create_user(&clash, &event).await.is_err(),
        "case-insensitive uniqueness now holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_wait_their_turn() {
    let database = fresh_sqlite().await;
    let store = database.connect_migrated().await.store();
    let event = |kind| AuditEvent::new(kind, Outcome::Success, chrono::Utc::now());
    let user = |name: String| fab_core::user::NewUser {
        profile: fab_core::user::UserProfile {
            first_name: "Con".into(),
            last_name: "Current".into(),
            email: format!("{name}@example.com"),
            username: name,
            active: true,
            roles: Vec::new(),
        },
        password_hash: fab_core::Secret::new("$argon2id$x"),
        created_by: None,
    };
    let target = store
        .create_user(&user("target".into()), &event(AuditKind::AdminUserCreate))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let new = user(format!("writer{i}"));
        tasks.push(tokio::spawn(async move {
            store
                .record_login_failure(target.id, &event(AuditKind::UserFailedLogin))
                .await?;
            store
                .create_user(&new, &event(AuditKind::AdminUserCreate))
                .await
                .map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let target = store.user_by_id(target.id).await.unwrap().unwrap();
    assert_eq!(target.fail_login_count, 24, "no increment was lost");
    assert_eq!(store.count_users().await.unwrap(), 25);
    assert_eq!(store.recent_audit(1000, None).await.unwrap().len(), 49);
}

fn new_user(name: &str) -> fab_core::user::NewUser {
    fab_core::user::NewUser {
        profile: fab_core::user::UserProfile {
            first_name: "Lock".into(),
            last_name: "Out".into(),
            email: format!("{name}@example.com"),
            username: name.into(),
            active: true,
            roles: Vec::new(),
        },
        password_hash: fab_core::Secret::new("$argon2id$x"),
        created_by: None,
    }
}

fn at_epoch(kind: AuditKind) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, fab_testkit::server::test_epoch())
}

/// Takes a current database back to what a fab knowing only `m0001_security_schema` left:
/// without the tables `m0002_lockout_and_flags` adds and without its record.
async fn forget_the_lockout_migration(connection: &sea_orm::DatabaseConnection) {
    for statement in [
        "DROP TABLE fab_lockout",
        "DROP TABLE fab_flag",
        "DELETE FROM fab_migrations WHERE version = 'm0002_lockout_and_flags'",
    ] {
        connection.execute_unprepared(statement).await.unwrap();
    }
}

#[tokio::test]
async fn a_database_of_the_first_schema_has_the_lockout_migration_pending_until_upgraded() {
    let database = fresh_sqlite().await;
    let db = database.connect_migrated().await;
    let store = db.store();
    let alice = store
        .create_user(&new_user("alice"), &at_epoch(AuditKind::AdminUserCreate))
        .await
        .unwrap();
    forget_the_lockout_migration(&raw(&database).await).await;

    // What `fab serve` checks at start-up, read-only.
    let status = db.schema_status().await.unwrap();
    assert_eq!(status.applied, ["m0001_security_schema"]);
    assert_eq!(status.pending, ["m0002_lockout_and_flags"]);
    assert!(status.unknown.is_empty() && !status.is_current());
    assert!(
        store.lockout_state(alice.id).await.is_err(),
        "the table is not there yet"
    );

    assert_eq!(db.migrate().await.unwrap(), ["m0002_lockout_and_flags"]);
    assert!(db.schema_status().await.unwrap().is_current());
    let state = store
        .update_lockout(alice.id, &|state| state.other.failures += 1)
        .await
        .unwrap();
    assert_eq!(state.other.failures, 1);
    assert_eq!(
        store
            .user_by_id(alice.id)
            .await
            .unwrap()
            .map(|u| u.username),
        Some("alice".to_owned()),
        "the upgrade keeps what was there"
    );
    assert_eq!(store.recent_audit(10, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_audit_write_undoes_the_flag_change() {
    let database = fresh_sqlite().await;
    let store = database.connect_migrated().await.store();
    let event = at_epoch(AuditKind::SecurityEmergencyMode);
    store.set_flag("mode", Some("on"), &event).await.unwrap();
    let connection = raw(&database).await;
    connection
        .execute_unprepared(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON fab_audit \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        )
        .await
        .unwrap();
    for (name, value) in [("mode", Some("off")), ("mode", None), ("new", Some("x"))] {
        let refused = store.set_flag(name, value, &event).await;
        assert!(
            matches!(&refused, Err(fab_core::StoreError::Internal(m)) if m.contains("audit refused")),
            "{refused:?}"
        );
    }
    assert_eq!(store.flag("mode").await.unwrap().as_deref(), Some("on"));
    assert_eq!(store.flag("new").await.unwrap(), None);
    assert_eq!(store.recent_audit(10, None).await.unwrap().len(), 1);

    connection
        .execute_unprepared("DROP TRIGGER refuse_audit")
        .await
        .unwrap();
    store.set_flag("mode", None, &event).await.unwrap();
    assert_eq!(store.flag("mode").await.unwrap(), None);
    assert_eq!(store.recent_audit(10, None).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockout_updates_from_two_instances_lose_nothing() {
    let database = fresh_sqlite().await;
    let first = database.connect_migrated().await.store();
    // A pool of its own, as a second process on the same file would have.
    let second = database.connect().await.store();
    let alice = first
        .create_user(&new_user("alice"), &at_epoch(AuditKind::AdminUserCreate))
        .await
        .unwrap()
        .id;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .update_lockout(alice, &|state| state.other.failures += 1)
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        second.lockout_state(alice).await.unwrap().other.failures,
        32
    );
}
