//! The security-store conformance suite and the schema checks on PostgreSQL: as the schema
//! owner, and through the deployment guide's least-privilege role (rows only, no DDL) the server
//! runs as in production.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use fab_core::StoreError;
use fab_core::audit::{AuditEvent, AuditKind, Outcome};
use fab_core::config::DatabaseUrl;
use fab_core::lockout::{FlagStore, LockoutStore};
use fab_core::store::SecurityStore;
use fab_core::user::{NewUser, UserProfile};
use fab_store::Database;
use fab_testkit::database::{TestDatabase, create_dml_only_role, fresh_postgres};
use sea_orm::{ConnectionTrait, TransactionTrait};

mod owner {
    use super::*;
    fab_testkit::security_store_conformance!(async {
        let database = fresh_postgres().await;
        let store = database.connect_migrated().await.store();
        (database, store)
    });
}

mod dml_only {
    use super::*;
    fab_testkit::security_store_conformance!(async {
        let database = fresh_postgres().await;
        database.connect_migrated().await;
        let url = create_dml_only_role(&database).await;
        let store = Database::connect(&url).await.unwrap().store();
        (database, store)
    });
}

/// Every migration this build knows, oldest first.
const MIGRATIONS: [&str; 2] = ["m0001_security_schema", "m0002_lockout_and_flags"];

async fn raw_connection(database: &TestDatabase) -> sea_orm::DatabaseConnection {
    let DatabaseUrl::Postgres { url } = &database.url else {
        unreachable!("a PostgreSQL test database");
    };
    sea_orm::Database::connect(url.expose()).await.unwrap()
}

fn new_user(username: &str, email: &str) -> NewUser {
    NewUser {
        profile: UserProfile {
            first_name: "Pat".into(),
            last_name: "Race".into(),
            username: username.into(),
            email: email.into(),
            active: true,
            roles: Vec::new(),
        },
        password_hash: fab_core::Secret::new("$argon2id$x"),
        created_by: None,
    }
}

fn create_event() -> AuditEvent {
    AuditEvent::new(
        AuditKind::AdminUserCreate,
        Outcome::Success,
        chrono::Utc::now(),
    )
}

#[tokio::test]
async fn the_least_privileged_role_checks_the_schema_but_cannot_migrate() {
    let database = fresh_postgres().await;
    let owner = database.connect_migrated().await;
    let url = create_dml_only_role(&database).await;
    let server = Database::connect(&url).await.unwrap();
    assert_eq!(server.backend_name(), "postgresql");
    server.ping().await.unwrap();
    let status = server.schema_status().await.unwrap();
    assert_eq!(status.applied, MIGRATIONS);
    assert!(status.is_current());
    let refused = server.migrate().await;
    assert!(
        matches!(&refused, Err(StoreError::Internal(m)) if m.contains("permission denied")),
        "{refused:?}"
    );
    assert_eq!(
        owner.schema_status().await.unwrap(),
        status,
        "the failed attempt changed nothing"
    );
    // And it can do its job: write and read rows.
    let store = server.store();
    store
        .create_user(&new_user("worker", "worker@example.com"), &create_event())
        .await
        .unwrap();
    assert!(store.user_by_login("WORKER").await.unwrap().is_some());
}

#[tokio::test]
async fn schema_status_of_an_empty_database_reads_and_creates_nothing() {
    let database = fresh_postgres().await;
    let db = database.connect().await;
    let status = db.schema_status().await.unwrap();
    assert_eq!(status.pending, MIGRATIONS);
    assert!(status.applied.is_empty() && !status.is_current());
    let tables = raw_connection(&database)
        .await
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        ))
        .await
        .unwrap();
    assert!(tables.is_empty());
    assert_eq!(db.migrate().await.unwrap(), MIGRATIONS);
    assert!(db.migrate().await.unwrap().is_empty());
    assert!(db.schema_status().await.unwrap().is_current());
}

#[tokio::test]
async fn unreachable_server_is_unavailable_and_the_message_hides_the_password() {
    let url = DatabaseUrl::parse("postgresql://fab:topsecret@127.0.0.1:1/fab").unwrap();
    let error = Database::connect(&url).await.unwrap_err();
    let StoreError::Unavailable(message) = &error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert!(!message.contains("topsecret"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
}

/// Waits until another session of this database is blocked on a lock.
async fn until_a_session_waits_for_a_lock(watcher: &sea_orm::DatabaseConnection) {
    let query = sea_orm::Statement::from_string(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT count(*) AS waiting FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    for _ in 0..1000 {
        let row = watcher.query_one_raw(query.clone()).await.unwrap().unwrap();
        let waiting: i64 = row.try_get("", "waiting").unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the store's insert never waited for the competing transaction");
}

/// Two writers pass the uniqueness check at once; the database's constraint refuses the second,
/// and the refusal reads the same as the check's.
async fn race_reports(username: &str, email: &str, expected: &str) {
    let database = fresh_postgres().await;
    let store = database.connect_migrated().await.store();
    let competitor = raw_connection(&database).await;
    let watcher = raw_connection(&database).await;
    let transaction = competitor.begin().await.unwrap();
    transaction
        .execute_unprepared(
            "INSERT INTO ab_user (first_name, last_name, username, email, active) \
             VALUES ('First', 'Writer', 'racer', 'racer@example.com', true)",
        )
        .await
        .unwrap();
    let pending = tokio::spawn({
        let store = store.clone();
        let user = new_user(username, email);
        async move { store.create_user(&user, &create_event()).await }
    });
    until_a_session_waits_for_a_lock(&watcher).await;
    transaction.commit().await.unwrap();
    let result = pending.await.unwrap();
    match result {
        Err(StoreError::Conflict(message)) => assert_eq!(message, expected),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        store.recent_audit(10, None).await.unwrap().is_empty(),
        "no audit for the refused insert"
    );
}

#[tokio::test]
async fn a_username_race_is_a_conflict_not_an_internal_error() {
    race_reports(
        "RACER",
        "other@example.com",
        "username `RACER` is already taken",
    )
    .await;
}

#[tokio::test]
async fn an_email_race_is_a_conflict_not_an_internal_error() {
    race_reports(
        "other",
        "Racer@Example.com",
        "email `Racer@Example.com` is already registered",
    )
    .await;
}

/// The tables as Flask-AppBuilder (SQLAlchemy) creates them on PostgreSQL: ids drawn from
/// sequences by SQLAlchemy itself, no column defaults.
const FAB_POSTGRES_SCHEMA: &str = "
CREATE SEQUENCE ab_permission_id_seq;
CREATE SEQUENCE ab_view_menu_id_seq;
CREATE SEQUENCE ab_role_id_seq;
CREATE SEQUENCE ab_user_id_seq;
CREATE SEQUENCE ab_permission_view_id_seq;
CREATE SEQUENCE ab_permission_view_role_id_seq;
CREATE SEQUENCE ab_user_role_id_seq;
CREATE TABLE ab_permission (id INTEGER NOT NULL, name VARCHAR(100) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_view_menu (id INTEGER NOT NULL, name VARCHAR(250) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_role (id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE ab_user (id INTEGER NOT NULL, first_name VARCHAR(64) NOT NULL, last_name VARCHAR(64) NOT NULL,
  username VARCHAR(64) NOT NULL, password VARCHAR(256), active BOOLEAN, email VARCHAR(320) NOT NULL,
  last_login TIMESTAMP WITHOUT TIME ZONE, login_count INTEGER, fail_login_count INTEGER,
  created_on TIMESTAMP WITHOUT TIME ZONE, changed_on TIMESTAMP WITHOUT TIME ZONE,
  created_by_fk INTEGER, changed_by_fk INTEGER, PRIMARY KEY (id), UNIQUE (username), UNIQUE (email),
  FOREIGN KEY(created_by_fk) REFERENCES ab_user (id), FOREIGN KEY(changed_by_fk) REFERENCES ab_user (id));
CREATE TABLE ab_permission_view (id INTEGER NOT NULL, permission_id INTEGER, view_menu_id INTEGER, PRIMARY KEY (id),
  UNIQUE (permission_id, view_menu_id), FOREIGN KEY(permission_id) REFERENCES ab_permission (id),
  FOREIGN KEY(view_menu_id) REFERENCES ab_view_menu (id));
CREATE TABLE ab_permission_view_role (id INTEGER NOT NULL, permission_view_id INTEGER, role_id INTEGER,
  PRIMARY KEY (id), UNIQUE (permission_view_id, role_id),
  FOREIGN KEY(permission_view_id) REFERENCES ab_permission_view (id), FOREIGN KEY(role_id) REFERENCES ab_role (id));
CREATE TABLE ab_user_role (id INTEGER NOT NULL, user_id INTEGER, role_id INTEGER, PRIMARY KEY (id),
  UNIQUE (user_id, role_id), FOREIGN KEY(user_id) REFERENCES ab_user (id), FOREIGN KEY(role_id) REFERENCES ab_role (id));
INSERT INTO ab_role (id, name) VALUES (nextval('ab_role_id_seq'), 'Admin');
INSERT INTO ab_user (id, first_name, last_name, username, password, active, email, login_count, fail_login_count, created_on)
  VALUES (nextval('ab_user_id_seq'), 'Fab', 'Admin', 'admin', 'pbkdf2:sha256:600000$salt$hash', true, 'admin@fab.org', 3, 1,
  '2024-01-01 00:00:00');
INSERT INTO ab_user (id, first_name, last_name, username, email, active)
  VALUES (7, 'Imported', 'Row', 'imported', 'imported@fab.org', true);
INSERT INTO ab_user_role (id, user_id, role_id) VALUES (nextval('ab_user_role_id_seq'), 1, 1);
";

#[tokio::test]
async fn migration_applies_onto_a_database_flask_appbuilder_created() {
    let database = fresh_postgres().await;
    let raw = raw_connection(&database).await;
    for statement in FAB_POSTGRES_SCHEMA
        .split(';')
        .filter(|s| !s.trim().is_empty())
    {
        raw.execute_unprepared(statement).await.unwrap();
    }
    let db = database.connect().await;
    assert_eq!(db.migrate().await.unwrap(), MIGRATIONS);
    // The least-privilege role works on the adopted tables too.
    let url = create_dml_only_role(&database).await;
    let store = Database::connect(&url).await.unwrap().store();
    let admin = store
        .user_by_login("Admin@FAB.org")
        .await
        .unwrap()
        .expect("FAB's user is kept");
    assert_eq!(
        admin.password_hash.expose(),
        "pbkdf2:sha256:600000$salt$hash"
    );
    assert_eq!((admin.login_count, admin.fail_login_count), (3, 1));
    assert!(admin.has_role("Admin"));

    let mut user = new_user("newcomer", "newcomer@fab.org");
    user.profile.roles = vec![admin.roles[0].id];
    let created = store.create_user(&user, &create_event()).await.unwrap();
    // The sequence was moved past the row inserted with an explicit id.
    assert_eq!(created.id, fab_core::user::UserId(8));
    assert!(created.has_role("Admin"));
    let report = store
        .sync_permissions(
            &[fab_core::rbac::Grant::new("can_list", "UserDBModelView")],
            fab_core::rbac::ADMIN_ROLE,
            fab_core::rbac::PUBLIC_ROLE,
        )
        .await
        .unwrap();
    assert_eq!((report.created, report.granted_to_admin), (1, 1));
    let clash = new_user("ADMIN", "someone@fab.org");
    assert!(
        matches!(
            store.create_user(&clash, &create_event()).await,
            Err(StoreError::Conflict(_))
        ),
        "case-insensitive uniqueness now holds"
    );
    assert!(db.migrate().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_sync_the_same_grants_once() {
    use fab_core::rbac::{ADMIN_ROLE, Grant, PUBLIC_ROLE};
    let database = fresh_postgres().await;
    database.connect_migrated().await;
    let declared: Vec<Grant> = (0..20)
        .map(|i| Grant::new(format!("can_{i}"), format!("View{}", i % 4)))
        .collect();
    let mut instances = Vec::new();
    for _ in 0..4 {
        // Each instance has a pool of its own, as separate processes would.
        let store = database.connect().await.store();
        let declared = declared.clone();
        instances.push(tokio::spawn(async move {
            store
                .sync_permissions(&declared, ADMIN_ROLE, PUBLIC_ROLE)
                .await
        }));
    }
    let mut created = 0;
    let mut granted = 0;
    for instance in instances {
        let report = instance.await.unwrap().unwrap();
        created += report.created;
        granted += report.granted_to_admin;
    }
    assert_eq!(
        (created, granted),
        (20, 20),
        "every row was made exactly once"
    );
    let store = database.connect().await.store();
    let admin = store.role_by_name(ADMIN_ROLE).await.unwrap().unwrap();
    assert_eq!(store.role_grants(admin.id).await.unwrap().len(), 20);
    assert_eq!(store.list_roles().await.unwrap().len(), 2);
}

/// The login name in a PostgreSQL URL.
fn role_of(url: &DatabaseUrl) -> String {
    let DatabaseUrl::Postgres { url } = url else {
        unreachable!("a PostgreSQL URL");
    };
    url::Url::parse(url.expose()).unwrap().username().to_owned()
}

/// Takes a current database back to what a fab knowing only `m0001_security_schema` left:
/// without the tables `m0002_lockout_and_flags` adds and without its record.
async fn forget_the_lockout_migration(owner: &sea_orm::DatabaseConnection) {
    for statement in [
        "DROP TABLE fab_lockout",
        "DROP TABLE fab_flag",
        "DELETE FROM fab_migrations WHERE version = 'm0002_lockout_and_flags'",
    ] {
        owner.execute_unprepared(statement).await.unwrap();
    }
}

#[tokio::test]
async fn the_lockout_migration_is_pending_for_the_server_role_until_the_owner_upgrades() {
    let database = fresh_postgres().await;
    let owner = database.connect_migrated().await;
    let raw = raw_connection(&database).await;
    forget_the_lockout_migration(&raw).await;
    let url = create_dml_only_role(&database).await;
    let server = Database::connect(&url).await.unwrap();
    let alice = server
        .store()
        .create_user(&new_user("alice", "alice@example.com"), &create_event())
        .await
        .unwrap()
        .id;

    // What `fab serve` checks at start-up, read-only, as the server's role.
    let status = server.schema_status().await.unwrap();
    assert_eq!(status.applied, ["m0001_security_schema"]);
    assert_eq!(status.pending, ["m0002_lockout_and_flags"]);
    assert!(!status.is_current());
    assert!(
        server.migrate().await.is_err(),
        "the server's role cannot upgrade"
    );

    assert_eq!(owner.migrate().await.unwrap(), ["m0002_lockout_and_flags"]);
    assert!(server.schema_status().await.unwrap().is_current());
    // Tables made after the grants are not covered by them: the deployment steps grant again
    // after an upgrade (README, "Deploying to production").
    let store = server.store();
    let refused = store.lockout_state(alice).await;
    assert!(
        matches!(&refused, Err(StoreError::Internal(m)) if m.contains("permission denied")),
        "{refused:?}"
    );
    let role = role_of(&url);
    raw.execute_unprepared(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .await
    .unwrap();
    let state = store
        .update_lockout(alice, &|state| state.other.failures += 1)
        .await
        .unwrap();
    assert_eq!(state.other.failures, 1);
    store
        .set_flag("mode", Some("on"), &create_event())
        .await
        .unwrap();
    assert_eq!(store.flag("mode").await.unwrap().as_deref(), Some("on"));
}

#[tokio::test]
async fn a_failed_audit_write_undoes_the_flag_change() {
    let database = fresh_postgres().await;
    database.connect_migrated().await;
    let url = create_dml_only_role(&database).await;
    let store = Database::connect(&url).await.unwrap().store();
    let event = AuditEvent::new(
        AuditKind::SecurityEmergencyMode,
        Outcome::Success,
        chrono::Utc::now(),
    );
    store.set_flag("mode", Some("on"), &event).await.unwrap();
    // The flag write is allowed, the audit write after it is not.
    raw_connection(&database)
        .await
        .execute_unprepared(&format!(
            "REVOKE INSERT ON fab_audit FROM {}",
            role_of(&url)
        ))
        .await
        .unwrap();
    for (name, value) in [("mode", Some("off")), ("mode", None), ("new", Some("x"))] {
        let refused = store.set_flag(name, value, &event).await;
        assert!(
            matches!(&refused, Err(StoreError::Internal(m)) if m.contains("permission denied")),
            "{refused:?}"
        );
    }
    assert_eq!(store.flag("mode").await.unwrap().as_deref(), Some("on"));
    assert_eq!(store.flag("new").await.unwrap(), None);
    assert_eq!(store.recent_audit(10, None).await.unwrap().len(), 1);
}

/// `other_failures` of `user`, read outside the store.
async fn stored_failures(connection: &sea_orm::DatabaseConnection, user: i64) -> i32 {
    let row = connection
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT other_failures FROM fab_lockout WHERE user_id = {user}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "other_failures").unwrap()
}

#[tokio::test]
async fn a_first_lockout_write_racing_another_is_applied_on_top_of_it() {
    let database = fresh_postgres().await;
    let store = database.connect_migrated().await.store();
    let alice = store
        .create_user(&new_user("alice", "alice@example.com"), &create_event())
        .await
        .unwrap()
        .id;
    let competitor = raw_connection(&database).await;
    let watcher = raw_connection(&database).await;
    // Another instance writes the account's first state and has not committed yet: the store
    // reads no row, and its insert must wait for the competitor's.
    let transaction = competitor.begin().await.unwrap();
    transaction
        .execute_unprepared(&format!(
            "INSERT INTO fab_lockout (user_id, known_failures, other_failures, changed_at) \
             VALUES ({alice}, 0, 5, LOCALTIMESTAMP)"
        ))
        .await
        .unwrap();
    let pending = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_lockout(alice, &|state| state.other.failures += 1)
                .await
        }
    });
    until_a_session_waits_for_a_lock(&watcher).await;
    transaction.commit().await.unwrap();
    let state = pending.await.unwrap().unwrap();
    assert_eq!(state.other.failures, 6, "the competitor's write is kept");
    assert_eq!(stored_failures(&watcher, alice.0).await, 6);
}

#[tokio::test]
async fn a_lockout_update_waits_for_a_competing_one_and_applies_on_top_of_it() {
    let database = fresh_postgres().await;
    let store = database.connect_migrated().await.store();
    let alice = store
        .create_user(&new_user("alice", "alice@example.com"), &create_event())
        .await
        .unwrap()
        .id;
    store
        .update_lockout(alice, &|state| state.other.failures = 1)
        .await
        .unwrap();
    let competitor = raw_connection(&database).await;
    let watcher = raw_connection(&database).await;
    let transaction = competitor.begin().await.unwrap();
    transaction
        .execute_unprepared(&format!(
            "UPDATE fab_lockout SET other_failures = other_failures + 10 WHERE user_id = {alice}"
        ))
        .await
        .unwrap();
    let pending = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_lockout(alice, &|state| state.other.failures += 1)
                .await
        }
    });
    until_a_session_waits_for_a_lock(&watcher).await;
    transaction.commit().await.unwrap();
    let state = pending.await.unwrap().unwrap();
    assert_eq!(state.other.failures, 12);
    assert_eq!(stored_failures(&watcher, alice.0).await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockout_updates_from_four_instances_lose_nothing() {
    let database = fresh_postgres().await;
    let first = database.connect_migrated().await.store();
    let alice = first
        .create_user(&new_user("alice", "alice@example.com"), &create_event())
        .await
        .unwrap()
        .id;
    let mut instances = vec![first];
    for _ in 0..3 {
        // Each instance has a pool of its own, as separate processes would.
        instances.push(database.connect().await.store());
    }
    // No row yet: the first writes race to insert it.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = instances[i % instances.len()].clone();
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
        instances[0]
            .lockout_state(alice)
            .await
            .unwrap()
            .other
            .failures,
        64
    );
}
