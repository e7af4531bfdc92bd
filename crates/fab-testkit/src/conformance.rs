//! The conformance suites every backend of a core store trait must pass: one check per behaviour
//! the trait documents, the same checks for SQLite, PostgreSQL, memory and whatever comes next.
//!
//! A backend's test file invokes a macro with an `async` block building a fresh store, and gets
//! one `#[tokio::test]` per check (the test crate needs `tokio` as a dependency):
//!
//! ```ignore
//! fab_testkit::security_store_conformance!(async {
//!     let database = fab_testkit::database::fresh_sqlite().await;
//!     let store = database.connect_migrated().await.store();
//!     (database, store)
//! });
//! fab_testkit::session_store_conformance!(async { fab_store::MemorySessionStore::new() });
//! ```
//!
//! The block is evaluated once per check, so every check starts from an empty store. Whatever
//! must outlive the store (a temporary database) travels beside it as a guard and is dropped
//! after it. Checks use fixed timestamps and [`ManualClock`], never the wall clock or a sleep.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "conformance checks are test code: a failed expectation is the test failing"
)]

use crate::database::TestDatabase;
use chrono::{DateTime, Duration, Utc};
use fab_core::StoreError;
use fab_core::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestOrigin};
use fab_core::clock::{Clock, ManualClock};
use fab_core::lockout::{Assessment, FlagStore, LockoutPolicy, LockoutState, LockoutStore};
use fab_core::random::OsRandom;
use fab_core::rbac::{ADMIN_ROLE, Grant, PUBLIC_ROLE, PermissionViewId, RoleExport, RoleId};
use fab_core::secret::Secret;
use fab_core::session::{SessionPolicy, SessionRecord, SessionStage, SessionStore, SessionToken};
use fab_core::store::{SecurityStore, UserQuery};
use fab_core::user::{NewUser, RoleRef, User, UserId, UserProfile};
use fab_store::{MemorySessionStore, SqlStore};
use std::any::Any;
use std::sync::Arc;

/// A security store to check, with the stores that keep state about its users: the session
/// store whose sessions it must end when it deletes or disables a user, the lockout store whose
/// state goes with a deleted user, and the flag store whose changes are audited into its trail.
pub struct SecurityStoreUnderTest {
    /// The store under test.
    pub store: Arc<dyn SecurityStore>,
    /// The sessions `store` clears for deleted and disabled users.
    pub sessions: Arc<dyn SessionStore>,
    /// The lockout state of `store`'s users.
    pub lockout: Arc<dyn LockoutStore>,
    /// Operational flags, audited into `store`'s trail.
    pub flags: Arc<dyn FlagStore>,
    // Declared last: dropped after the stores.
    _guard: Box<dyn Any + Send>,
}

impl SecurityStoreUnderTest {
    /// The stores under test, keeping `guard` alive until all are dropped.
    pub fn new(
        store: Arc<dyn SecurityStore>,
        sessions: Arc<dyn SessionStore>,
        lockout: Arc<dyn LockoutStore>,
        flags: Arc<dyn FlagStore>,
        guard: impl Any + Send,
    ) -> Self {
        Self {
            store,
            sessions,
            lockout,
            flags,
            _guard: Box::new(guard),
        }
    }

    /// Every store on one SQL database, keeping `guard` alive until they are dropped.
    fn sql(store: SqlStore, guard: impl Any + Send) -> Self {
        Self::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(store),
            guard,
        )
    }
}

impl From<SqlStore> for SecurityStoreUnderTest {
    fn from(store: SqlStore) -> Self {
        Self::sql(store, ())
    }
}

impl<G: Any + Send> From<(G, SqlStore)> for SecurityStoreUnderTest {
    fn from((guard, store): (G, SqlStore)) -> Self {
        Self::sql(store, guard)
    }
}

/// A session store to check, with two users sessions may belong to (backends that check user
/// references need them to exist).
pub struct SessionStoreUnderTest {
    /// The store under test.
    pub store: Arc<dyn SessionStore>,
    /// Two distinct existing users.
    pub users: [UserId; 2],
    // Declared last: dropped after the store.
    _guard: Box<dyn Any + Send>,
}

impl SessionStoreUnderTest {
    /// `store` with sessions for `users`, keeping `guard` alive until the store is dropped.
    pub fn new(store: Arc<dyn SessionStore>, users: [UserId; 2], guard: impl Any + Send) -> Self {
        Self {
            store,
            users,
            _guard: Box::new(guard),
        }
    }

    /// The SQL session store on `database` (migrated here), with two users created for the
    /// sessions to belong to.
    pub async fn sql(database: TestDatabase) -> Self {
        let store = database.connect_migrated().await.store();
        Self::sql_with_users(store, database).await
    }

    /// The SQL session store `store`, with two users created in it; `guard` (the database) is
    /// dropped after the store.
    pub async fn sql_with_users(store: SqlStore, guard: impl Any + Send) -> Self {
        let mut users = Vec::new();
        for name in ["session-owner", "session-other"] {
            let user = store
                .create_user(&new_user(name, &[]), &event(AuditKind::AdminUserCreate, 0))
                .await
                .expect("create a user for the session checks");
            users.push(user.id);
        }
        Self::new(Arc::new(store), [users[0], users[1]], guard)
    }
}

impl From<MemorySessionStore> for SessionStoreUnderTest {
    fn from(store: MemorySessionStore) -> Self {
        Self::new(Arc::new(store), [UserId(1), UserId(2)], ())
    }
}

/// Expands to one `#[tokio::test]` per security-store check. The argument is an `async` block
/// evaluating to anything that converts into a [`SecurityStoreUnderTest`]: a `SqlStore`, a
/// `(guard, SqlStore)` pair, or a `SecurityStoreUnderTest` itself.
#[macro_export]
macro_rules! security_store_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests!(security, $crate::conformance::SecurityStoreUnderTest, $factory;
            created_user_is_found_by_id_and_by_login,
            username_differing_only_in_case_is_a_conflict,
            email_differing_only_in_case_is_a_conflict,
            unknown_role_refuses_the_user_without_partial_writes,
            profile_and_roles_are_replaced,
            disabled_user_is_inactive_and_loses_sessions_until_enabled,
            deleted_user_leaves_no_links_or_sessions,
            users_are_paged_in_username_order_and_searched,
            search_wildcards_match_only_themselves,
            login_counters_follow_successes_and_failures,
            password_hash_is_replaced_and_audited_only_when_asked,
            audit_is_written_with_the_change_and_only_then,
            roles_are_created_renamed_and_deleted,
            grants_of_roles_decide_permissions,
            sync_is_idempotent_and_gives_admin_every_grant,
            cleanup_removes_undeclared_grants_and_orphans,
            roles_round_trip_through_fab_export_format,
            oversized_values_are_refused,
            lockout_state_starts_as_the_default,
            lockout_update_applies_the_change_and_stores_it,
            concurrent_lockout_updates_lose_no_increment,
            cleared_lockout_reads_as_the_default,
            deleting_a_user_deletes_their_lockout_state,
            flags_are_set_overwritten_and_cleared_with_an_audit_record_each,
            refused_flag_changes_write_nothing,
        );
    };
}

/// Expands to one `#[tokio::test]` per session-store check. The argument is an `async` block
/// evaluating to anything that converts into a [`SessionStoreUnderTest`]: a
/// `MemorySessionStore`, or a `SessionStoreUnderTest` (e.g. from
/// [`SessionStoreUnderTest::sql`]).
#[macro_export]
macro_rules! session_store_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests!(sessions, $crate::conformance::SessionStoreUnderTest, $factory;
            created_session_is_found_unchanged,
            unknown_session_is_none,
            creating_an_existing_session_is_refused,
            touch_moves_last_seen,
            delete_reports_whether_the_session_existed,
            delete_for_user_removes_only_theirs,
            delete_all_removes_every_session,
            sessions_of_a_user_are_listed_newest_first,
            purge_removes_idle_and_absolutely_expired_sessions,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($suite:ident, $subject:ty, $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test]
            async fn $check() {
                let subject: $subject = ::std::convert::Into::into($factory.await);
                $crate::conformance::$suite::$check(&subject).await;
            }
        )+
    };
}

/// A fixed instant the checks count from.
fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_714_564_800, 0).expect("a valid timestamp")
}

/// An audit event of `kind` at `start() + minutes`.
fn event(kind: AuditKind, minutes: i64) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, start() + Duration::minutes(minutes))
}

fn profile(username: &str, roles: &[RoleId]) -> UserProfile {
    UserProfile {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        username: username.into(),
        email: format!("{username}@example.com"),
        active: true,
        roles: roles.to_vec(),
    }
}

fn new_user(username: &str, roles: &[RoleId]) -> NewUser {
    NewUser {
        profile: profile(username, roles),
        password_hash: Secret::new(format!("$argon2id$v=19$m=1024,t=1,p=1$hash-of-{username}")),
        created_by: None,
    }
}

fn conflict_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_not_found(result: Result<impl std::fmt::Debug, StoreError>) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

fn role_names(user: &User) -> Vec<&str> {
    user.roles.iter().map(|r| r.name.as_str()).collect()
}

async fn audit_count(store: &dyn SecurityStore) -> usize {
    store.recent_audit(10_000, None).await.unwrap().len()
}

async fn session_for(
    sessions: &dyn SessionStore,
    user: UserId,
    at: DateTime<Utc>,
) -> SessionRecord {
    let token = SessionToken::generate(&OsRandom);
    let record = SessionPolicy::default().new_record(
        &token,
        user,
        SessionStage::Authenticated,
        at,
        Some("192.0.2.7".into()),
        Some("conformance".into()),
    );
    sessions.create(&record).await.unwrap();
    record
}

/// The security-store checks.
pub mod security {
    use super::*;

    async fn role(store: &dyn SecurityStore, name: &str) -> RoleId {
        store
            .create_role(name, &event(AuditKind::AdminPermissionChange, 0))
            .await
            .unwrap()
            .id
    }

    async fn user(store: &dyn SecurityStore, username: &str, roles: &[RoleId]) -> User {
        store
            .create_user(
                &new_user(username, roles),
                &event(AuditKind::AdminUserCreate, 0),
            )
            .await
            .unwrap()
    }

    /// Every field is stored, and lookups by id, username or email (any case) find the user.
    pub async fn created_user_is_found_by_id_and_by_login(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let viewer = role(store, "Viewer").await;
        let at = start() + Duration::minutes(3);
        let mut alice = new_user("alice", &[viewer]);
        alice.profile.email = "Alice@Example.com".into();
        let created = store
            .create_user(
                &alice,
                &AuditEvent::new(AuditKind::AdminUserCreate, Outcome::Success, at),
            )
            .await
            .unwrap();
        assert_eq!(created.username, "alice");
        assert_eq!(created.email, "Alice@Example.com");
        assert_eq!(
            (created.first_name.as_str(), created.last_name.as_str()),
            ("Ada", "Lovelace")
        );
        assert!(created.active);
        assert_eq!(created.password_hash.expose(), alice.password_hash.expose());
        assert_eq!((created.login_count, created.fail_login_count), (0, 0));
        assert_eq!(created.last_login, None);
        assert_eq!(
            (created.created_on, created.changed_on),
            (Some(at), Some(at))
        );
        assert_eq!((created.created_by, created.changed_by), (None, None));
        assert_eq!(
            created.roles,
            vec![RoleRef {
                id: viewer,
                name: "Viewer".into()
            }]
        );

        let found = store
            .user_by_id(created.id)
            .await
            .unwrap()
            .expect("found by id");
        assert_eq!(found.username, "alice");
        assert_eq!(found.roles, created.roles);
        assert_eq!(found.created_on, Some(at));
        for login in [
            "alice",
            "ALICE",
            " Alice ",
            "alice@example.com",
            "ALICE@EXAMPLE.COM",
        ] {
            let found = store.user_by_login(login).await.unwrap();
            assert_eq!(found.map(|u| u.id), Some(created.id), "login {login:?}");
        }
        for login in ["alic", "nobody", "", "alice@example", "%"] {
            assert!(
                store.user_by_login(login).await.unwrap().is_none(),
                "login {login:?}"
            );
        }
        assert!(
            store
                .user_by_id(UserId(created.id.0 + 1000))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.user_by_id(UserId(i64::MAX)).await.unwrap().is_none());

        let mut bob = new_user("bob", &[]);
        bob.created_by = Some(created.id);
        let bob = store
            .create_user(&bob, &event(AuditKind::AdminUserCreate, 4))
            .await
            .unwrap();
        assert_eq!(
            (bob.created_by, bob.changed_by),
            (Some(created.id), Some(created.id))
        );
        assert!(bob.roles.is_empty());
        assert_eq!(store.count_users().await.unwrap(), 2);
    }

    /// `Alice` cannot join `alice`; the refusal names the username and writes nothing.
    pub async fn username_differing_only_in_case_is_a_conflict(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        user(store, "alice", &[]).await;
        let before = audit_count(store).await;
        let mut clash = new_user("ALICE", &[]);
        clash.profile.email = "other@example.com".into();
        let message = conflict_message(
            store
                .create_user(&clash, &event(AuditKind::AdminUserCreate, 1))
                .await,
        );
        assert_eq!(message, "username `ALICE` is already taken");
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert_eq!(
            audit_count(store).await,
            before,
            "a refused change writes no audit record"
        );
    }

    /// An email differing only in case is taken too.
    pub async fn email_differing_only_in_case_is_a_conflict(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let mut first = new_user("first", &[]);
        first.profile.email = "a@x.io".into();
        store
            .create_user(&first, &event(AuditKind::AdminUserCreate, 0))
            .await
            .unwrap();
        let mut clash = new_user("second", &[]);
        clash.profile.email = "A@X.IO".into();
        let message = conflict_message(
            store
                .create_user(&clash, &event(AuditKind::AdminUserCreate, 1))
                .await,
        );
        assert_eq!(message, "email `A@X.IO` is already registered");
        assert!(store.user_by_login("second").await.unwrap().is_none());
        assert_eq!(audit_count(store).await, 1);
    }

    /// A profile naming a role that does not exist is refused whole: no user, no links, no audit.
    pub async fn unknown_role_refuses_the_user_without_partial_writes(
        subject: &SecurityStoreUnderTest,
    ) {
        let store = subject.store.as_ref();
        let viewer = role(store, "Viewer").await;
        let before = audit_count(store).await;
        for roles in [vec![RoleId(99_999)], vec![viewer, RoleId(99_999)]] {
            let message = conflict_message(
                store
                    .create_user(
                        &new_user("carol", &roles),
                        &event(AuditKind::AdminUserCreate, 1),
                    )
                    .await,
            );
            assert_eq!(message, "role 99999 does not exist");
        }
        assert!(store.user_by_login("carol").await.unwrap().is_none());
        assert_eq!(store.count_users().await.unwrap(), 0);
        assert_eq!(
            store.count_active_users_with_role("Viewer").await.unwrap(),
            0
        );
        assert_eq!(audit_count(store).await, before);
    }

    /// An update replaces every field and the role set, and checks uniqueness against others only.
    pub async fn profile_and_roles_are_replaced(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let (viewer, editor) = (role(store, "Viewer").await, role(store, "Editor").await);
        let admin = user(store, "admin", &[]).await;
        let dave = user(store, "dave", &[viewer]).await;
        let changed_at = start() + Duration::minutes(10);
        let update = AuditEvent::new(AuditKind::AdminUserUpdate, Outcome::Success, changed_at);

        let mut changed = profile("David", &[editor, viewer]);
        changed.first_name = "Dave".into();
        changed.last_name = "Bowman".into();
        changed.email = "dave@discovery.one".into();
        let updated = store
            .update_user(dave.id, &changed, Some(admin.id), &update)
            .await
            .unwrap();
        assert_eq!(updated.id, dave.id);
        assert_eq!(updated.username, "David");
        assert_eq!(
            (updated.first_name.as_str(), updated.last_name.as_str()),
            ("Dave", "Bowman")
        );
        assert_eq!(updated.email, "dave@discovery.one");
        assert_eq!(role_names(&updated), ["Editor", "Viewer"]);
        assert_eq!(updated.changed_on, Some(changed_at));
        assert_eq!(updated.changed_by, Some(admin.id));
        assert_eq!(updated.created_on, dave.created_on, "creation time is kept");
        assert_eq!(updated.password_hash.expose(), dave.password_hash.expose());

        changed.roles = vec![editor];
        changed.username = "DAVID".into();
        let again = store
            .update_user(dave.id, &changed, None, &update)
            .await
            .unwrap();
        assert_eq!(
            again.username, "DAVID",
            "a user may change the case of their own name"
        );
        assert_eq!(role_names(&again), ["Editor"]);

        let mut taken = changed.clone();
        taken.username = "Admin".into();
        let message = conflict_message(store.update_user(dave.id, &taken, None, &update).await);
        assert_eq!(message, "username `Admin` is already taken");
        let mut taken = changed.clone();
        taken.email = "ADMIN@example.com".into();
        let message = conflict_message(store.update_user(dave.id, &taken, None, &update).await);
        assert_eq!(message, "email `ADMIN@example.com` is already registered");

        let mut unknown_role = changed.clone();
        unknown_role.roles = vec![viewer, RoleId(424_242)];
        let message = conflict_message(
            store
                .update_user(dave.id, &unknown_role, None, &update)
                .await,
        );
        assert_eq!(message, "role 424242 does not exist");
        let unchanged = store.user_by_id(dave.id).await.unwrap().unwrap();
        assert_eq!(
            role_names(&unchanged),
            ["Editor"],
            "a refused update changes nothing"
        );

        assert_not_found(
            store
                .update_user(UserId(987_654), &changed, None, &update)
                .await,
        );
        assert_not_found(
            store
                .update_user(UserId(i64::MIN), &changed, None, &update)
                .await,
        );
    }

    /// Disabling makes a user inactive (no longer counted for their roles) and ends their sessions.
    pub async fn disabled_user_is_inactive_and_loses_sessions_until_enabled(
        subject: &SecurityStoreUnderTest,
    ) {
        let store = subject.store.as_ref();
        let viewer = role(store, "Viewer").await;
        let erin = user(store, "erin", &[viewer]).await;
        let frank = user(store, "frank", &[viewer]).await;
        let session = session_for(subject.sessions.as_ref(), erin.id, start()).await;
        let kept = session_for(subject.sessions.as_ref(), frank.id, start()).await;
        assert_eq!(
            store.count_active_users_with_role("Viewer").await.unwrap(),
            2
        );

        let disable = event(AuditKind::AdminUserDisable, 5);
        store
            .set_user_active(erin.id, false, Some(frank.id), &disable)
            .await
            .unwrap();
        let disabled = store.user_by_id(erin.id).await.unwrap().unwrap();
        assert!(!disabled.active);
        assert_eq!(disabled.changed_by, Some(frank.id));
        assert_eq!(disabled.changed_on, Some(disable.at));
        assert_eq!(
            store.count_active_users_with_role("Viewer").await.unwrap(),
            1
        );
        assert_eq!(
            store.count_active_users_with_role("Nobody").await.unwrap(),
            0
        );
        assert!(
            subject
                .sessions
                .find(&session.id_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            subject
                .sessions
                .find(&kept.id_hash)
                .await
                .unwrap()
                .is_some()
        );

        store
            .set_user_active(erin.id, true, None, &event(AuditKind::AdminUserEnable, 6))
            .await
            .unwrap();
        assert!(store.user_by_id(erin.id).await.unwrap().unwrap().active);
        assert_eq!(
            store.count_active_users_with_role("Viewer").await.unwrap(),
            2
        );
        assert_not_found(
            store
                .set_user_active(
                    UserId(55_555),
                    false,
                    None,
                    &event(AuditKind::AdminUserDisable, 7),
                )
                .await,
        );
        let kinds: Vec<AuditKind> = store
            .recent_audit(2, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.kind)
            .collect();
        assert_eq!(
            kinds,
            [AuditKind::AdminUserEnable, AuditKind::AdminUserDisable]
        );
    }

    /// Deleting a user removes their role links and sessions, and the users they created forget
    /// who did.
    pub async fn deleted_user_leaves_no_links_or_sessions(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let viewer = role(store, "Viewer").await;
        let creator = user(store, "creator", &[viewer]).await;
        let mut created = new_user("created", &[viewer]);
        created.created_by = Some(creator.id);
        let created = store
            .create_user(&created, &event(AuditKind::AdminUserCreate, 1))
            .await
            .unwrap();
        let gone = session_for(subject.sessions.as_ref(), creator.id, start()).await;
        let kept = session_for(subject.sessions.as_ref(), created.id, start()).await;

        store
            .delete_user(creator.id, &event(AuditKind::AdminUserDelete, 2))
            .await
            .unwrap();
        assert!(store.user_by_id(creator.id).await.unwrap().is_none());
        assert!(store.user_by_login("creator").await.unwrap().is_none());
        let survivor = store.user_by_id(created.id).await.unwrap().unwrap();
        assert_eq!((survivor.created_by, survivor.changed_by), (None, None));
        assert_eq!(role_names(&survivor), ["Viewer"]);
        assert!(
            subject
                .sessions
                .find(&gone.id_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            subject
                .sessions
                .list_for_user(creator.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            subject
                .sessions
                .find(&kept.id_hash)
                .await
                .unwrap()
                .is_some()
        );
        let roles = store.list_roles().await.unwrap();
        assert_eq!(
            roles[0].user_count, 1,
            "the deleted user's role link is gone"
        );
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert_eq!(
            store.recent_audit(1, None).await.unwrap()[0].event.kind,
            AuditKind::AdminUserDelete
        );

        assert_not_found(
            store
                .delete_user(creator.id, &event(AuditKind::AdminUserDelete, 3))
                .await,
        );
        // The username is free again.
        user(store, "Creator", &[]).await;
    }

    /// Pages come in username order, sized as asked within 1..=500; search is a case-insensitive
    /// substring of username, names or email; roles come with every user.
    pub async fn users_are_paged_in_username_order_and_searched(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let viewer = role(store, "Viewer").await;
        // Created out of order, so the listing's order is the store's doing.
        for i in [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4] {
            let roles = if i % 3 == 0 { vec![viewer] } else { Vec::new() };
            let mut u = new_user(&format!("u{i:02}"), &roles);
            u.profile.first_name = if i % 2 == 0 {
                "Ann".into()
            } else {
                "Bob".into()
            };
            u.profile.last_name = format!("Smith{i}");
            store
                .create_user(&u, &event(AuditKind::AdminUserCreate, 0))
                .await
                .unwrap();
        }
        let list = |search: Option<&str>, page: u64, page_size: u64| UserQuery {
            search: search.map(str::to_owned),
            page,
            page_size,
        };
        let names = |users: &[User]| users.iter().map(|u| u.username.clone()).collect::<Vec<_>>();

        let first = store.list_users(&list(None, 0, 5)).await.unwrap();
        assert_eq!(names(&first.items), ["u00", "u01", "u02", "u03", "u04"]);
        assert_eq!(
            (first.total, first.page, first.page_size, first.page_count()),
            (12, 0, 5, 3)
        );
        assert_eq!(role_names(&first.items[0]), ["Viewer"]);
        assert!(first.items[1].roles.is_empty());
        assert_eq!(role_names(&first.items[3]), ["Viewer"]);
        let second = store.list_users(&list(None, 1, 5)).await.unwrap();
        assert_eq!(names(&second.items), ["u05", "u06", "u07", "u08", "u09"]);
        let last = store.list_users(&list(None, 2, 5)).await.unwrap();
        assert_eq!(names(&last.items), ["u10", "u11"]);
        assert!(
            store
                .list_users(&list(None, 3, 5))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let beyond = store.list_users(&list(None, u64::MAX, 500)).await.unwrap();
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, 12);

        let tiny = store.list_users(&list(None, 0, 0)).await.unwrap();
        assert_eq!((tiny.items.len(), tiny.page_size), (1, 1));
        let huge = store.list_users(&list(None, 0, 100_000)).await.unwrap();
        assert_eq!((huge.items.len(), huge.page_size), (12, 500));

        let bobs = store.list_users(&list(Some("BOB"), 0, 25)).await.unwrap();
        assert_eq!(
            names(&bobs.items),
            ["u01", "u03", "u05", "u07", "u09", "u11"]
        );
        assert_eq!(bobs.total, 6);
        let smith1 = store
            .list_users(&list(Some("smith1"), 0, 25))
            .await
            .unwrap();
        assert_eq!(names(&smith1.items), ["u01", "u10", "u11"]);
        let by_email = store
            .list_users(&list(Some("9@EXAMPLE.COM"), 0, 25))
            .await
            .unwrap();
        assert_eq!(names(&by_email.items), ["u09"]);
        let paged_search = store.list_users(&list(Some("ann"), 1, 4)).await.unwrap();
        assert_eq!(names(&paged_search.items), ["u08", "u10"]);
        assert_eq!(paged_search.total, 6);
        let blank = store.list_users(&list(Some("   "), 0, 25)).await.unwrap();
        assert_eq!(blank.total, 12, "a blank search lists everyone");
        let none = store.list_users(&list(Some("zzz"), 0, 25)).await.unwrap();
        assert_eq!((none.total, none.items.len(), none.page_count()), (0, 0, 1));
    }

    /// `%`, `_` and `!` in a search are literal characters, not LIKE wildcards.
    pub async fn search_wildcards_match_only_themselves(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        for (username, first_name) in [
            ("plain", "Plain"),
            ("percent", "100%"),
            ("under_score", "Under"),
            ("bang", "Hey!"),
        ] {
            let mut u = new_user(username, &[]);
            u.profile.first_name = first_name.into();
            store
                .create_user(&u, &event(AuditKind::AdminUserCreate, 0))
                .await
                .unwrap();
        }
        let search = |text: &str| UserQuery {
            search: Some(text.into()),
            ..UserQuery::default()
        };
        for (text, expected) in [
            ("%", vec!["percent"]),
            ("0%", vec!["percent"]),
            ("_", vec!["under_score"]),
            ("r_s", vec!["under_score"]),
            ("!", vec!["bang"]),
            ("y!", vec!["bang"]),
            ("p%t", vec![]),
        ] {
            let page = store.list_users(&search(text)).await.unwrap();
            let names: Vec<_> = page.items.iter().map(|u| u.username.as_str()).collect();
            assert_eq!(names, expected, "search {text:?}");
            assert_eq!(page.total, expected.len() as u64, "search {text:?}");
        }
    }

    /// Failures count up, a success counts, stamps the time and resets the failures.
    pub async fn login_counters_follow_successes_and_failures(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let grace = user(store, "grace", &[]).await;
        let failed = event(AuditKind::UserFailedLogin, 1);
        store.record_login_failure(grace.id, &failed).await.unwrap();
        store.record_login_failure(grace.id, &failed).await.unwrap();
        let now = store.user_by_id(grace.id).await.unwrap().unwrap();
        assert_eq!(
            (now.login_count, now.fail_login_count, now.last_login),
            (0, 2, None)
        );

        let at = start() + Duration::minutes(2);
        store
            .record_login_success(grace.id, at, &event(AuditKind::UserLogin, 2))
            .await
            .unwrap();
        let now = store.user_by_id(grace.id).await.unwrap().unwrap();
        assert_eq!(
            (now.login_count, now.fail_login_count, now.last_login),
            (1, 0, Some(at))
        );

        let later = at + Duration::hours(1);
        store
            .record_login_success(grace.id, later, &event(AuditKind::UserLogin, 62))
            .await
            .unwrap();
        store.record_login_failure(grace.id, &failed).await.unwrap();
        let now = store.user_by_id(grace.id).await.unwrap().unwrap();
        assert_eq!(
            (now.login_count, now.fail_login_count, now.last_login),
            (2, 1, Some(later))
        );
        assert_eq!(audit_count(store).await, 1 + 5);

        assert_not_found(store.record_login_failure(UserId(31_337), &failed).await);
        assert_not_found(
            store
                .record_login_success(UserId(31_337), at, &event(AuditKind::UserLogin, 3))
                .await,
        );
    }

    /// A password change is audited and stamped; a silent rehash changes only the hash.
    pub async fn password_hash_is_replaced_and_audited_only_when_asked(
        subject: &SecurityStoreUnderTest,
    ) {
        let store = subject.store.as_ref();
        let heidi = user(store, "heidi", &[]).await;
        let admin = user(store, "admin", &[]).await;
        let reset = event(AuditKind::AdminPasswordReset, 9);
        store
            .set_password_hash(
                heidi.id,
                &Secret::new("$argon2id$new"),
                Some(admin.id),
                Some(&reset),
            )
            .await
            .unwrap();
        let now = store.user_by_id(heidi.id).await.unwrap().unwrap();
        assert_eq!(now.password_hash.expose(), "$argon2id$new");
        assert_eq!(
            (now.changed_on, now.changed_by),
            (Some(reset.at), Some(admin.id))
        );
        assert_eq!(store.recent_audit(1, None).await.unwrap()[0].event, reset);

        let before = audit_count(store).await;
        store
            .set_password_hash(heidi.id, &Secret::new("$argon2id$rehashed"), None, None)
            .await
            .unwrap();
        let now = store.user_by_id(heidi.id).await.unwrap().unwrap();
        assert_eq!(now.password_hash.expose(), "$argon2id$rehashed");
        assert_eq!(
            (now.changed_on, now.changed_by),
            (Some(reset.at), Some(admin.id))
        );
        assert_eq!(audit_count(store).await, before, "a rehash is not audited");
        assert_not_found(
            store
                .set_password_hash(UserId(77_777), &Secret::new("x"), None, Some(&reset))
                .await,
        );
        assert_eq!(audit_count(store).await, before);
    }

    /// The audit record is stored exactly as given, with its change; listing is newest first and
    /// filters by event name.
    pub async fn audit_is_written_with_the_change_and_only_then(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        assert!(store.recent_audit(10, None).await.unwrap().is_empty());
        let create = AuditEvent::new(AuditKind::AdminUserCreate, Outcome::Success, start())
            .by(Some(Actor {
                user_id: Some(UserId(1)),
                name: "root".into(),
            }))
            .on("user ivan")
            .from_origin(RequestOrigin {
                ip: Some("2001:db8::1".into()),
                user_agent: Some("Mozilla/5.0 (conformance)".into()),
            })
            .with_detail(serde_json::json!({"roles": ["Viewer"], "active": true}));
        let ivan = store
            .create_user(&new_user("ivan", &[]), &create)
            .await
            .unwrap();
        let stored = store.recent_audit(10, None).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].event, create);

        // A refused change leaves no record.
        let duplicate = event(AuditKind::AdminUserCreate, 1);
        assert!(
            store
                .create_user(&new_user("IVAN", &[]), &duplicate)
                .await
                .is_err()
        );
        assert_not_found(
            store
                .delete_user(UserId(4_040_404), &event(AuditKind::AdminUserDelete, 1))
                .await,
        );
        assert_eq!(audit_count(store).await, 1);

        // A standalone event (failed login of an unknown user), from the CLI without a user id.
        let failed = AuditEvent::new(
            AuditKind::UserFailedLogin,
            Outcome::Failure,
            start() + Duration::minutes(2),
        )
        .by(Some(Actor {
            user_id: None,
            name: "cli:ops".into(),
        }))
        .on("login nobody");
        store.record(&failed).await.unwrap();
        // Over-long text is cut to the column, never a reason to fail the change.
        let long = event(AuditKind::AdminUserDisable, 3).from_origin(RequestOrigin {
            ip: None,
            user_agent: Some("x".repeat(5000)),
        });
        store
            .set_user_active(ivan.id, false, None, &long)
            .await
            .unwrap();

        let all = store.recent_audit(10, None).await.unwrap();
        let kinds: Vec<_> = all.iter().map(|e| e.event.kind).collect();
        assert_eq!(
            kinds,
            [
                AuditKind::AdminUserDisable,
                AuditKind::UserFailedLogin,
                AuditKind::AdminUserCreate
            ]
        );
        assert!(
            all[0].id > all[1].id && all[1].id > all[2].id,
            "ids grow with time"
        );
        assert_eq!(all[1].event, failed);
        let agent = all[0].event.origin.user_agent.as_deref().unwrap();
        assert!(
            agent.len() <= 256 && agent.starts_with("xxx"),
            "{}",
            agent.len()
        );

        let only_failed = store
            .recent_audit(10, Some("user.failed_login"))
            .await
            .unwrap();
        assert_eq!(only_failed.len(), 1);
        assert_eq!(only_failed[0].event, failed);
        assert!(
            store
                .recent_audit(10, Some("no.such_event"))
                .await
                .unwrap()
                .is_empty()
        );
        let newest = store.recent_audit(1, None).await.unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].event.kind, AuditKind::AdminUserDisable);
        assert!(store.recent_audit(0, None).await.unwrap().is_empty());
    }

    /// Roles are unique by name; renaming and deleting work and report missing roles.
    pub async fn roles_are_created_renamed_and_deleted(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let change = event(AuditKind::AdminPermissionChange, 1);
        let viewer = store.create_role("Viewer", &change).await.unwrap();
        assert_eq!(viewer.name, "Viewer");
        assert_eq!(
            store.role_by_id(viewer.id).await.unwrap(),
            Some(viewer.clone())
        );
        assert_eq!(
            store.role_by_name("Viewer").await.unwrap(),
            Some(viewer.clone())
        );
        assert_eq!(
            store.role_by_name("viewer").await.unwrap(),
            None,
            "role names are exact"
        );
        assert_eq!(store.role_by_id(RoleId(9_999_999_999)).await.unwrap(), None);
        let before = audit_count(store).await;
        assert_eq!(
            conflict_message(store.create_role("Viewer", &change).await),
            "role `Viewer` already exists"
        );
        assert!(matches!(
            store.create_role("  ", &change).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(audit_count(store).await, before);

        let editor = store.create_role("Editor", &change).await.unwrap();
        store
            .rename_role(viewer.id, "Reader", &change)
            .await
            .unwrap();
        assert_eq!(
            store.role_by_name("Reader").await.unwrap().map(|r| r.id),
            Some(viewer.id)
        );
        assert_eq!(store.role_by_name("Viewer").await.unwrap(), None);
        store
            .rename_role(viewer.id, "Reader", &change)
            .await
            .unwrap();
        assert_eq!(
            conflict_message(store.rename_role(editor.id, "Reader", &change).await),
            "role `Reader` already exists"
        );
        assert_not_found(store.rename_role(RoleId(123_456), "Ghost", &change).await);

        let member = user(store, "judy", &[viewer.id, editor.id]).await;
        let summaries = store.list_roles().await.unwrap();
        let names: Vec<_> = summaries.iter().map(|s| s.role.name.as_str()).collect();
        assert_eq!(names, ["Editor", "Reader"]);
        assert_eq!((summaries[1].user_count, summaries[1].grant_count), (1, 0));

        store.delete_role(viewer.id, &change).await.unwrap();
        assert_eq!(store.role_by_id(viewer.id).await.unwrap(), None);
        let member = store.user_by_id(member.id).await.unwrap().unwrap();
        assert_eq!(role_names(&member), ["Editor"]);
        assert_not_found(store.delete_role(viewer.id, &change).await);
        assert_eq!(store.list_roles().await.unwrap().len(), 1);
    }

    fn declared() -> Vec<Grant> {
        vec![
            Grant::new("can_list", "UserDBModelView"),
            Grant::new("can_add", "UserDBModelView"),
            Grant::new("can_list", "RoleModelView"),
        ]
    }

    async fn grant_id(store: &dyn SecurityStore, grant: &Grant) -> PermissionViewId {
        store
            .list_permission_views()
            .await
            .unwrap()
            .into_iter()
            .find(|pv| &pv.grant == grant)
            .unwrap_or_else(|| panic!("{grant} exists"))
            .id
    }

    /// A role's grants are what it may do; Admin may do everything; no role, nothing.
    pub async fn grants_of_roles_decide_permissions(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        store
            .sync_permissions(&declared(), ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        let change = event(AuditKind::AdminPermissionChange, 1);
        let viewer = store.create_role("Viewer", &change).await.unwrap().id;
        let list_users = Grant::new("can_list", "UserDBModelView");
        let add_users = Grant::new("can_add", "UserDBModelView");
        let list_roles = Grant::new("can_list", "RoleModelView");
        let list_users_id = grant_id(store, &list_users).await;
        let list_roles_id = grant_id(store, &list_roles).await;

        store
            .set_role_grants(
                viewer,
                &[list_users_id, list_roles_id, list_users_id],
                &change,
            )
            .await
            .unwrap();
        let held: Vec<_> = store
            .role_grants(viewer)
            .await
            .unwrap()
            .into_iter()
            .map(|pv| pv.grant)
            .collect();
        assert_eq!(
            held,
            [list_roles.clone(), list_users.clone()],
            "ordered by view menu"
        );
        store
            .set_role_grants(viewer, &[list_users_id], &change)
            .await
            .unwrap();
        let grants = store.role_grants(viewer).await.unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(
            (grants[0].id, &grants[0].grant),
            (list_users_id, &list_users)
        );

        let viewer_set = store.permissions_of_roles(&[viewer]).await.unwrap();
        assert!(viewer_set.allows(&list_users));
        assert!(viewer_set.allows_names("can_list", "UserDBModelView"));
        assert!(!viewer_set.allows(&add_users));
        assert!(!viewer_set.is_admin());

        let admin = store.role_by_name(ADMIN_ROLE).await.unwrap().unwrap().id;
        let admin_set = store.permissions_of_roles(&[viewer, admin]).await.unwrap();
        assert!(admin_set.is_admin());
        assert!(admin_set.allows(&Grant::new("can_anything", "Undeclared")));
        assert!(
            !store
                .permissions_of_roles(&[])
                .await
                .unwrap()
                .allows(&list_users)
        );
        assert!(
            !store
                .permissions_of_roles(&[RoleId(8_888)])
                .await
                .unwrap()
                .allows(&list_users)
        );

        let public = store.role_by_name(PUBLIC_ROLE).await.unwrap().unwrap().id;
        let anonymous = store.permissions_of_role_name(PUBLIC_ROLE).await.unwrap();
        assert!(!anonymous.allows(&list_users) && !anonymous.is_admin());
        store
            .set_role_grants(public, &[list_roles_id], &change)
            .await
            .unwrap();
        let anonymous = store.permissions_of_role_name(PUBLIC_ROLE).await.unwrap();
        assert!(anonymous.allows(&list_roles) && !anonymous.allows(&list_users));
        assert!(
            store
                .permissions_of_role_name(ADMIN_ROLE)
                .await
                .unwrap()
                .is_admin()
        );
        assert_eq!(
            store
                .permissions_of_role_name("Missing")
                .await
                .unwrap()
                .grants()
                .count(),
            0
        );

        let before = audit_count(store).await;
        let message = conflict_message(
            store
                .set_role_grants(viewer, &[list_roles_id, PermissionViewId(777_777)], &change)
                .await,
        );
        assert_eq!(message, "grant 777777 does not exist");
        assert_eq!(
            store.role_grants(viewer).await.unwrap().len(),
            1,
            "a refused change changes nothing"
        );
        assert_eq!(audit_count(store).await, before);
        assert_not_found(store.role_grants(RoleId(5_151)).await);
        assert_not_found(store.set_role_grants(RoleId(5_151), &[], &change).await);
        store.set_role_grants(viewer, &[], &change).await.unwrap();
        assert!(store.role_grants(viewer).await.unwrap().is_empty());
    }

    /// Sync creates what is missing, the built-in roles, and gives Admin every declared grant;
    /// the second run changes nothing.
    pub async fn sync_is_idempotent_and_gives_admin_every_grant(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let mut twice = declared();
        twice.extend(declared());
        let report = store
            .sync_permissions(&twice, ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        assert_eq!((report.created, report.granted_to_admin), (3, 3));
        let admin = store
            .role_by_name(ADMIN_ROLE)
            .await
            .unwrap()
            .expect("Admin exists");
        let public = store
            .role_by_name(PUBLIC_ROLE)
            .await
            .unwrap()
            .expect("Public exists");
        let mut held: Vec<_> = store
            .role_grants(admin.id)
            .await
            .unwrap()
            .into_iter()
            .map(|pv| pv.grant)
            .collect();
        held.sort();
        let mut expected = declared();
        expected.sort();
        assert_eq!(held, expected);
        assert!(store.role_grants(public.id).await.unwrap().is_empty());
        let permissions: Vec<_> = store
            .list_permissions()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(permissions, ["can_add", "can_list"]);
        let view_menus: Vec<_> = store
            .list_view_menus()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(view_menus, ["RoleModelView", "UserDBModelView"]);

        let again = store
            .sync_permissions(&declared(), ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        assert_eq!((again.created, again.granted_to_admin), (0, 0));
        assert_eq!(store.list_permission_views().await.unwrap().len(), 3);
        assert_eq!(store.list_roles().await.unwrap().len(), 2);

        // A grant taken from Admin by hand is given back; a new declaration is added.
        let list_roles = grant_id(store, &Grant::new("can_list", "RoleModelView")).await;
        let others: Vec<_> = store
            .role_grants(admin.id)
            .await
            .unwrap()
            .into_iter()
            .map(|pv| pv.id)
            .filter(|id| *id != list_roles)
            .collect();
        store
            .set_role_grants(
                admin.id,
                &others,
                &event(AuditKind::AdminPermissionChange, 1),
            )
            .await
            .unwrap();
        let mut more = declared();
        more.push(Grant::new("menu_access", "Security"));
        let report = store
            .sync_permissions(&more, ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        assert_eq!((report.created, report.granted_to_admin), (1, 2));
        assert_eq!(store.role_grants(admin.id).await.unwrap().len(), 4);
    }

    /// Cleanup removes grants no route declares (and their role links), then permissions and
    /// view menus left unused.
    pub async fn cleanup_removes_undeclared_grants_and_orphans(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let mut old = declared();
        old.push(Grant::new("can_list", "OldView"));
        old.push(Grant::new("can_export", "UserDBModelView"));
        store
            .sync_permissions(&old, ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        let change = event(AuditKind::AdminPermissionChange, 1);
        let viewer = store.create_role("Viewer", &change).await.unwrap().id;
        let old_list = grant_id(store, &Grant::new("can_list", "OldView")).await;
        let list_users = grant_id(store, &Grant::new("can_list", "UserDBModelView")).await;
        store
            .set_role_grants(viewer, &[old_list, list_users], &change)
            .await
            .unwrap();

        let before = audit_count(store).await;
        let cleanup = event(AuditKind::AdminPermissionChange, 2).on("security-cleanup");
        let report = store
            .cleanup_permissions(&declared(), &cleanup)
            .await
            .unwrap();
        assert_eq!(
            report.permission_views,
            [
                Grant::new("can_export", "UserDBModelView"),
                Grant::new("can_list", "OldView")
            ]
        );
        assert_eq!(report.view_menus, ["OldView"]);
        assert_eq!(report.permissions, ["can_export"]);
        assert_eq!(audit_count(store).await, before + 1);
        assert_eq!(store.recent_audit(1, None).await.unwrap()[0].event, cleanup);

        let held: Vec<_> = store
            .role_grants(viewer)
            .await
            .unwrap()
            .into_iter()
            .map(|pv| pv.grant)
            .collect();
        assert_eq!(held, [Grant::new("can_list", "UserDBModelView")]);
        let admin = store.role_by_name(ADMIN_ROLE).await.unwrap().unwrap().id;
        assert_eq!(store.role_grants(admin).await.unwrap().len(), 3);
        assert_eq!(store.list_permission_views().await.unwrap().len(), 3);
        let view_menus: Vec<_> = store
            .list_view_menus()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(view_menus, ["RoleModelView", "UserDBModelView"]);

        let again = store
            .cleanup_permissions(&declared(), &cleanup)
            .await
            .unwrap();
        assert!(
            again.permission_views.is_empty()
                && again.view_menus.is_empty()
                && again.permissions.is_empty()
        );
    }

    /// Export writes FAB's `export-roles` JSON; import reads it, creating what is missing and
    /// adding grants without duplicating any.
    pub async fn roles_round_trip_through_fab_export_format(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        store
            .sync_permissions(&declared()[..1], ADMIN_ROLE, PUBLIC_ROLE)
            .await
            .unwrap();
        let change = event(AuditKind::AdminPermissionChange, 1);
        let viewer = store.create_role("Viewer", &change).await.unwrap().id;
        let list_users = grant_id(store, &Grant::new("can_list", "UserDBModelView")).await;
        store
            .set_role_grants(viewer, &[list_users], &change)
            .await
            .unwrap();

        let exported = serde_json::to_value(store.export_roles().await.unwrap()).unwrap();
        let grant = serde_json::json!({"permission": {"name": "can_list"}, "view_menu": {"name": "UserDBModelView"}});
        assert_eq!(
            exported,
            serde_json::json!([
                {"name": "Admin", "permissions": [grant.clone()]},
                {"name": "Public", "permissions": []},
                {"name": "Viewer", "permissions": [grant]},
            ])
        );

        // What `flask fab export-roles` writes, as a file would hold it.
        let fab_file = r#"[
            {"name": "Auditor", "permissions": [
                {"permission": {"name": "can_show"}, "view_menu": {"name": "AuditView"}},
                {"permission": {"name": "can_list"}, "view_menu": {"name": "UserDBModelView"}}
            ]},
            {"name": "Viewer", "permissions": [
                {"permission": {"name": "can_show"}, "view_menu": {"name": "AuditView"}},
                {"permission": {"name": "can_list"}, "view_menu": {"name": "UserDBModelView"}}
            ]}
        ]"#;
        let roles: Vec<RoleExport> = serde_json::from_str(fab_file).unwrap();
        let before = audit_count(store).await;
        assert_eq!(store.import_roles(&roles, &change).await.unwrap(), 2);
        assert_eq!(audit_count(store).await, before + 1);
        let auditor = store
            .role_by_name("Auditor")
            .await
            .unwrap()
            .expect("Auditor created")
            .id;
        let grants = |role: RoleId| async move {
            store
                .role_grants(role)
                .await
                .unwrap()
                .into_iter()
                .map(|pv| pv.grant)
                .collect::<Vec<_>>()
        };
        let both = vec![
            Grant::new("can_show", "AuditView"),
            Grant::new("can_list", "UserDBModelView"),
        ];
        assert_eq!(grants(auditor).await, both);
        assert_eq!(grants(viewer).await, both);

        // Importing an export again changes nothing.
        let export = store.export_roles().await.unwrap();
        assert_eq!(store.import_roles(&export, &change).await.unwrap(), 4);
        assert_eq!(store.export_roles().await.unwrap(), export);
        assert_eq!(store.list_permission_views().await.unwrap().len(), 2);

        let bad: Vec<RoleExport> =
            serde_json::from_str(r#"[{"name": "", "permissions": []}]"#).unwrap();
        assert!(matches!(
            store.import_roles(&bad, &change).await,
            Err(StoreError::Conflict(_))
        ));
    }

    /// Values longer than FAB's columns are refused the same way on every backend.
    pub async fn oversized_values_are_refused(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let long = "a".repeat(65);
        let create = event(AuditKind::AdminUserCreate, 0);
        let message = conflict_message(store.create_user(&new_user(&long, &[]), &create).await);
        assert_eq!(message, "username is longer than 64 characters");
        let mut long_name = new_user("kim", &[]);
        long_name.profile.first_name = "é".repeat(65);
        assert!(matches!(
            store.create_user(&long_name, &create).await,
            Err(StoreError::Conflict(_))
        ));
        let mut fits = new_user(&"b".repeat(64), &[]);
        fits.profile.first_name = "é".repeat(64);
        store.create_user(&fits, &create).await.unwrap();
        let change = event(AuditKind::AdminPermissionChange, 0);
        assert!(matches!(
            store.create_role(&long, &change).await,
            Err(StoreError::Conflict(_))
        ));
        let too_long = vec![Grant::new("can_list", "v".repeat(251))];
        assert!(matches!(
            store
                .sync_permissions(&too_long, ADMIN_ROLE, PUBLIC_ROLE)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert!(
            store.list_roles().await.unwrap().is_empty(),
            "a refused sync creates no role"
        );
    }

    fn lockout_policy() -> LockoutPolicy {
        LockoutPolicy {
            threshold: 3,
            duration: Duration::minutes(15),
            delay_after: 1,
        }
    }

    /// An account with nothing stored, and an id no account has, read as the default state.
    pub async fn lockout_state_starts_as_the_default(subject: &SecurityStoreUnderTest) {
        let lockout = subject.lockout.as_ref();
        let alice = user(subject.store.as_ref(), "alice", &[]).await;
        for id in [alice.id, UserId(alice.id.0 + 1000), UserId(i64::MAX)] {
            assert_eq!(
                lockout.lockout_state(id).await.unwrap(),
                LockoutState::default(),
                "user {id}"
            );
        }
    }

    /// An update applies the change to the stored state, stores the result and returns it as
    /// stored; other accounts keep theirs, and an account that does not exist is not found.
    pub async fn lockout_update_applies_the_change_and_stores_it(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let lockout = subject.lockout.as_ref();
        let policy = lockout_policy();
        let alice = user(store, "alice", &[]).await.id;
        let bob = user(store, "bob", &[]).await.id;
        let owner = Some("198.51.100.7");
        let attacker = Some("203.0.113.9");
        // Microseconds are what every backend keeps.
        let at = start() + Duration::microseconds(123_456);

        let after_login = lockout
            .update_lockout(alice, &|state| policy.record_success(state, owner, at))
            .await
            .unwrap();
        assert_eq!(after_login.known_ip.as_deref(), owner);
        assert_eq!(after_login.known_ip_at, Some(at));
        assert_eq!(lockout.lockout_state(alice).await.unwrap(), after_login);

        let mut now = at;
        let mut state = after_login;
        for failure in 1..=3 {
            now += Duration::minutes(1);
            state = lockout
                .update_lockout(alice, &|state| {
                    policy.record_failure(state, attacker, now);
                })
                .await
                .unwrap();
            assert_eq!(
                state.other.locked_until.is_some(),
                failure == 3,
                "the third failure locks, and the returned state says so"
            );
        }
        assert_eq!(state.other.failures, 3);
        assert_eq!(state.other.last_failure_at, Some(now));
        assert_eq!(state.other.locked_until, Some(now + Duration::minutes(15)));
        assert_eq!(state.known.failures, 0, "the owner's counter is kept apart");
        assert_eq!(state.known_ip.as_deref(), owner, "the login is remembered");
        let stored = lockout.lockout_state(alice).await.unwrap();
        assert_eq!(stored, state, "what was returned is what is stored");
        assert_eq!(
            policy.assess(&stored, attacker, now),
            Assessment::Locked(now + Duration::minutes(15))
        );
        assert_eq!(policy.assess(&stored, owner, now), Assessment::Allowed);
        assert_eq!(
            lockout.lockout_state(bob).await.unwrap(),
            LockoutState::default()
        );

        // The owner logs in from the known address: their counter resets, the lock on
        // everywhere else stays.
        let after_owner = lockout
            .update_lockout(alice, &|state| policy.record_success(state, owner, now))
            .await
            .unwrap();
        assert_eq!(after_owner.other, stored.other);
        assert_eq!(lockout.lockout_state(alice).await.unwrap(), after_owner);

        // An address too long to store is not remembered, so it never counts as the owner's.
        let long = "2001:db8::1%".to_owned() + &"e".repeat(60);
        let after_long = lockout
            .update_lockout(alice, &|state| {
                policy.record_success(state, Some(&long), now)
            })
            .await
            .unwrap();
        assert_eq!(after_long.known_ip, None);
        assert_eq!(lockout.lockout_state(alice).await.unwrap(), after_long);

        for missing in [UserId(bob.0 + 1000), UserId(i64::MAX)] {
            assert_not_found(
                lockout
                    .update_lockout(missing, &|state| state.other.failures += 1)
                    .await,
            );
            assert_eq!(
                lockout.lockout_state(missing).await.unwrap(),
                LockoutState::default()
            );
        }
    }

    /// Concurrent updates of one account are serialised: 32 logins failing at once count 32
    /// failures, each sees the count before it, and none is lost. (A read, then a separate
    /// write, is how a lockout is sidestepped: send the guesses in parallel.)
    pub async fn concurrent_lockout_updates_lose_no_increment(subject: &SecurityStoreUnderTest) {
        let alice = user(subject.store.as_ref(), "alice", &[]).await.id;
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let lockout = Arc::clone(&subject.lockout);
                tokio::spawn(async move {
                    lockout
                        .update_lockout(alice, &|state| state.other.failures += 1)
                        .await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap().unwrap().other.failures);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=32).collect::<Vec<u32>>(),
            "each update saw the one before it"
        );
        let stored = subject.lockout.lockout_state(alice).await.unwrap();
        assert_eq!(stored.other.failures, 32, "no update was lost");
    }

    /// Clearing (`fab user-unlock`) forgets the account's state and nobody else's; clearing
    /// what is not there is not an error.
    pub async fn cleared_lockout_reads_as_the_default(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let lockout = subject.lockout.as_ref();
        let policy = lockout_policy();
        let alice = user(store, "alice", &[]).await.id;
        let bob = user(store, "bob", &[]).await.id;
        for id in [alice, bob] {
            for minute in 0..3 {
                lockout
                    .update_lockout(id, &|state| {
                        policy.record_failure(state, None, start() + Duration::minutes(minute));
                    })
                    .await
                    .unwrap();
            }
        }
        lockout.clear_lockout(alice).await.unwrap();
        assert_eq!(
            lockout.lockout_state(alice).await.unwrap(),
            LockoutState::default()
        );
        let kept = lockout.lockout_state(bob).await.unwrap();
        assert_eq!(kept.other.failures, 3);
        assert!(kept.locked_anywhere(start() + Duration::minutes(3)));

        lockout.clear_lockout(alice).await.unwrap();
        lockout.clear_lockout(UserId(bob.0 + 1000)).await.unwrap();
        lockout.clear_lockout(UserId(i64::MAX)).await.unwrap();
        let fresh = lockout
            .update_lockout(alice, &|state| state.other.failures += 1)
            .await
            .unwrap();
        assert_eq!(fresh.other.failures, 1, "counting starts again from zero");
    }

    /// A deleted user's lockout state goes with them, and does not stand in the way of the
    /// deletion.
    pub async fn deleting_a_user_deletes_their_lockout_state(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let lockout = subject.lockout.as_ref();
        let alice = user(store, "alice", &[]).await.id;
        let bob = user(store, "bob", &[]).await.id;
        for id in [alice, bob] {
            lockout
                .update_lockout(id, &|state| {
                    lockout_policy().record_success(state, Some("192.0.2.1"), start());
                    state.other.failures = 2;
                })
                .await
                .unwrap();
        }
        store
            .delete_user(alice, &event(AuditKind::AdminUserDelete, 1))
            .await
            .unwrap();
        assert_eq!(
            lockout.lockout_state(alice).await.unwrap(),
            LockoutState::default()
        );
        assert_not_found(
            lockout
                .update_lockout(alice, &|state| state.other.failures += 1)
                .await,
        );
        assert_eq!(lockout.lockout_state(bob).await.unwrap().other.failures, 2);
    }

    /// A flag is unset until set; setting, overwriting and clearing each write one audit record
    /// with the change; names are exact and flags independent.
    pub async fn flags_are_set_overwritten_and_cleared_with_an_audit_record_each(
        subject: &SecurityStoreUnderTest,
    ) {
        let store = subject.store.as_ref();
        let flags = subject.flags.as_ref();
        const EMERGENCY: &str = "rate_limit_emergency_mode";
        assert_eq!(flags.flag(EMERGENCY).await.unwrap(), None);

        let switch_on =
            AuditEvent::new(AuditKind::SecurityEmergencyMode, Outcome::Success, start())
                .by(Some(Actor {
                    user_id: None,
                    name: "cli:ops".into(),
                }))
                .on(EMERGENCY)
                .with_detail(serde_json::json!({"enabled": true}));
        flags
            .set_flag(EMERGENCY, Some("on"), &switch_on)
            .await
            .unwrap();
        assert_eq!(flags.flag(EMERGENCY).await.unwrap().as_deref(), Some("on"));
        let trail = store.recent_audit(10, None).await.unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].event, switch_on);
        assert_eq!(flags.flag("RATE_LIMIT_EMERGENCY_MODE").await.unwrap(), None);
        assert_eq!(flags.flag("rate_limit").await.unwrap(), None);

        let value = "é".repeat(256);
        flags
            .set_flag(
                EMERGENCY,
                Some(&value),
                &event(AuditKind::SecurityEmergencyMode, 1),
            )
            .await
            .unwrap();
        assert_eq!(flags.flag(EMERGENCY).await.unwrap(), Some(value.clone()));
        flags
            .set_flag(
                "maintenance",
                Some(""),
                &event(AuditKind::SecurityEmergencyMode, 2),
            )
            .await
            .unwrap();
        assert_eq!(
            flags.flag("maintenance").await.unwrap().as_deref(),
            Some("")
        );
        assert_eq!(audit_count(store).await, 3);

        for minute in [3, 4] {
            flags
                .set_flag(
                    EMERGENCY,
                    None,
                    &event(AuditKind::SecurityEmergencyMode, minute),
                )
                .await
                .unwrap();
            assert_eq!(flags.flag(EMERGENCY).await.unwrap(), None);
        }
        assert_eq!(
            audit_count(store).await,
            5,
            "clearing an unset flag is still an operator's act, recorded"
        );
        assert_eq!(
            flags.flag("maintenance").await.unwrap().as_deref(),
            Some("")
        );
        flags
            .set_flag(
                EMERGENCY,
                Some("on"),
                &event(AuditKind::SecurityEmergencyMode, 5),
            )
            .await
            .unwrap();
        assert_eq!(flags.flag(EMERGENCY).await.unwrap().as_deref(), Some("on"));
    }

    /// A flag change the store refuses (a name or value longer than the columns, an empty name)
    /// changes nothing and leaves no audit record.
    pub async fn refused_flag_changes_write_nothing(subject: &SecurityStoreUnderTest) {
        let store = subject.store.as_ref();
        let flags = subject.flags.as_ref();
        flags
            .set_flag(
                "mode",
                Some("on"),
                &event(AuditKind::SecurityEmergencyMode, 0),
            )
            .await
            .unwrap();
        let before = audit_count(store).await;
        let change = event(AuditKind::SecurityEmergencyMode, 1);
        let long_name = "n".repeat(65);
        let long_value = "v".repeat(257);
        for (name, value) in [
            (long_name.as_str(), Some("on")),
            (long_name.as_str(), None),
            ("mode", Some(long_value.as_str())),
            ("", Some("on")),
        ] {
            conflict_message(flags.set_flag(name, value, &change).await);
        }
        assert_eq!(flags.flag("mode").await.unwrap().as_deref(), Some("on"));
        assert_eq!(flags.flag(&long_name).await.unwrap(), None);
        assert_eq!(flags.flag("").await.unwrap(), None);
        assert_eq!(
            audit_count(store).await,
            before,
            "a refused change writes no audit record"
        );
        flags
            .set_flag(&"n".repeat(64), Some("fits"), &change)
            .await
            .unwrap();
        assert_eq!(
            flags.flag(&"n".repeat(64)).await.unwrap().as_deref(),
            Some("fits")
        );
    }
}

/// The session-store checks.
pub mod sessions {
    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            idle_timeout: Duration::minutes(30),
            absolute_lifetime: Duration::hours(2),
            touch_interval: Duration::minutes(1),
        }
    }

    fn record(user: UserId, at: DateTime<Utc>) -> SessionRecord {
        policy().new_record(
            &SessionToken::generate(&OsRandom),
            user,
            SessionStage::Authenticated,
            at,
            Some("198.51.100.4".into()),
            Some("Mozilla/5.0 (conformance)".into()),
        )
    }

    /// What was stored is what is found, for both stages and with or without client details.
    pub async fn created_session_is_found_unchanged(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let full = record(subject.users[0], start());
        store.create(&full).await.unwrap();
        assert_eq!(store.find(&full.id_hash).await.unwrap(), Some(full.clone()));

        let bare = policy().new_record(
            &SessionToken::generate(&OsRandom),
            subject.users[1],
            SessionStage::AwaitingSecondFactor,
            start() + Duration::seconds(1),
            None,
            None,
        );
        store.create(&bare).await.unwrap();
        assert_eq!(store.find(&bare.id_hash).await.unwrap(), Some(bare));
        assert_eq!(store.find(&full.id_hash).await.unwrap(), Some(full));
    }

    /// A token nobody was given finds nothing.
    pub async fn unknown_session_is_none(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        store
            .create(&record(subject.users[0], start()))
            .await
            .unwrap();
        let stranger = SessionToken::generate(&OsRandom).id_hash();
        assert_eq!(store.find(&stranger).await.unwrap(), None);
        assert!(!store.delete(&stranger).await.unwrap());
        store.touch(&stranger, start()).await.unwrap();
        assert_eq!(
            store.find(&stranger).await.unwrap(),
            None,
            "touch creates nothing"
        );
    }

    /// A session id is never overwritten: the first session keeps its owner.
    pub async fn creating_an_existing_session_is_refused(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let first = record(subject.users[0], start());
        store.create(&first).await.unwrap();
        let mut hijack = record(subject.users[1], start());
        hijack.id_hash = first.id_hash.clone();
        assert!(matches!(
            store.create(&hijack).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.find(&first.id_hash).await.unwrap(), Some(first));
    }

    /// Touch records use and nothing else.
    pub async fn touch_moves_last_seen(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let clock = ManualClock::new(start());
        let session = record(subject.users[0], clock.now());
        store.create(&session).await.unwrap();
        clock.advance(Duration::minutes(5));
        store.touch(&session.id_hash, clock.now()).await.unwrap();
        let touched = store.find(&session.id_hash).await.unwrap().unwrap();
        assert_eq!(touched.last_seen_at, start() + Duration::minutes(5));
        assert_eq!(
            SessionRecord {
                last_seen_at: session.last_seen_at,
                ..touched
            },
            session,
            "only last_seen_at changes"
        );
    }

    /// Delete says whether there was something to delete.
    pub async fn delete_reports_whether_the_session_existed(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let session = record(subject.users[0], start());
        let other = record(subject.users[0], start());
        store.create(&session).await.unwrap();
        store.create(&other).await.unwrap();
        assert!(store.delete(&session.id_hash).await.unwrap());
        assert!(!store.delete(&session.id_hash).await.unwrap());
        assert_eq!(store.find(&session.id_hash).await.unwrap(), None);
        assert!(store.find(&other.id_hash).await.unwrap().is_some());
    }

    /// Ending a user's sessions leaves everyone else's.
    pub async fn delete_for_user_removes_only_theirs(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let [owner, other] = subject.users;
        for _ in 0..2 {
            store.create(&record(owner, start())).await.unwrap();
        }
        let kept = record(other, start());
        store.create(&kept).await.unwrap();
        assert_eq!(store.delete_for_user(owner).await.unwrap(), 2);
        assert_eq!(store.delete_for_user(owner).await.unwrap(), 0);
        assert!(store.list_for_user(owner).await.unwrap().is_empty());
        assert_eq!(store.list_for_user(other).await.unwrap(), vec![kept]);
        assert_eq!(store.delete_for_user(UserId(i64::MAX)).await.unwrap(), 0);
    }

    /// Ending every session (`fab clear-sessions`) counts them.
    pub async fn delete_all_removes_every_session(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let sessions = [
            record(subject.users[0], start()),
            record(subject.users[1], start()),
            record(subject.users[1], start()),
        ];
        for session in &sessions {
            store.create(session).await.unwrap();
        }
        assert_eq!(store.delete_all().await.unwrap(), 3);
        for session in &sessions {
            assert_eq!(store.find(&session.id_hash).await.unwrap(), None);
        }
        assert_eq!(store.delete_all().await.unwrap(), 0);
    }

    /// A user's sessions come newest first, and only theirs.
    pub async fn sessions_of_a_user_are_listed_newest_first(subject: &SessionStoreUnderTest) {
        let store = subject.store.as_ref();
        let [owner, other] = subject.users;
        let clock = ManualClock::new(start());
        let mut created = Vec::new();
        for _ in 0..3 {
            let session = record(owner, clock.now());
            store.create(&session).await.unwrap();
            created.push(session);
            store.create(&record(other, clock.now())).await.unwrap();
            clock.advance(Duration::minutes(1));
        }
        created.reverse();
        assert_eq!(store.list_for_user(owner).await.unwrap(), created);
        assert_eq!(store.list_for_user(other).await.unwrap().len(), 3);
        assert!(
            store
                .list_for_user(UserId(424_242))
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Purging removes exactly the sessions the policy calls expired, idle or past their absolute
    /// lifetime, at the boundary included, and agrees with [`SessionPolicy::check`].
    pub async fn purge_removes_idle_and_absolutely_expired_sessions(
        subject: &SessionStoreUnderTest,
    ) {
        let store = subject.store.as_ref();
        let policy = policy();
        let clock = ManualClock::new(start());
        let idle = record(subject.users[0], clock.now());
        let busy = record(subject.users[0], clock.now());
        store.create(&idle).await.unwrap();
        store.create(&busy).await.unwrap();
        clock.advance(Duration::minutes(20));
        let young = record(subject.users[1], clock.now());
        store.create(&young).await.unwrap();
        store.touch(&busy.id_hash, clock.now()).await.unwrap();

        // 30 minutes after its last use, exactly: `idle` is over, the others are not.
        clock.advance(Duration::minutes(10));
        assert_eq!(store.purge_expired(clock.now(), &policy).await.unwrap(), 1);
        assert_eq!(store.find(&idle.id_hash).await.unwrap(), None);
        for session in [&busy, &young] {
            let stored = store
                .find(&session.id_hash)
                .await
                .unwrap()
                .expect("still stored");
            assert!(matches!(
                policy.check(&stored, clock.now()),
                fab_core::session::SessionCheck::Valid { .. }
            ));
        }

        // Used every 20 minutes, `busy` still ends at its absolute lifetime (2 h after creation).
        for _ in 0..4 {
            clock.advance(Duration::minutes(20));
            store.touch(&busy.id_hash, clock.now()).await.unwrap();
            store.touch(&young.id_hash, clock.now()).await.unwrap();
        }
        clock.set(start() + Duration::hours(2) - Duration::seconds(1));
        assert_eq!(store.purge_expired(clock.now(), &policy).await.unwrap(), 0);
        clock.set(start() + Duration::hours(2));
        assert_eq!(store.purge_expired(clock.now(), &policy).await.unwrap(), 1);
        assert_eq!(store.find(&busy.id_hash).await.unwrap(), None);
        let young_now = store
            .find(&young.id_hash)
            .await
            .unwrap()
            .expect("young is kept");
        assert!(matches!(
            policy.check(&young_now, clock.now()),
            fab_core::session::SessionCheck::Valid { .. }
        ));
        assert_eq!(store.purge_expired(clock.now(), &policy).await.unwrap(), 0);

        clock.advance(Duration::days(1));
        assert_eq!(store.purge_expired(clock.now(), &policy).await.unwrap(), 1);
        assert!(
            store
                .list_for_user(subject.users[1])
                .await
                .unwrap()
                .is_empty()
        );
    }
}
