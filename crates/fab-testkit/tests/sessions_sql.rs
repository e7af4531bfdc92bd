//! The session-store conformance suite on SQL: SQLite, PostgreSQL as the owner, and PostgreSQL
//! through the deployment guide's least-privilege role.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use fab_core::StoreError;
use fab_core::config::DatabaseUrl;
use fab_core::session::SessionStore;
use fab_core::user::UserId;
use fab_testkit::conformance::SessionStoreUnderTest;
use fab_testkit::database::{TestDatabase, create_dml_only_role, fresh_postgres, fresh_sqlite};

mod sqlite {
    use super::*;
    fab_testkit::session_store_conformance!(async {
        SessionStoreUnderTest::sql(fresh_sqlite().await).await
    });
}

mod postgres {
    use super::*;
    fab_testkit::session_store_conformance!(async {
        SessionStoreUnderTest::sql(fresh_postgres().await).await
    });
}

mod postgres_dml_only {
    use super::*;
    fab_testkit::session_store_conformance!(async {
        let database = fresh_postgres().await;
        database.connect_migrated().await;
        let url = create_dml_only_role(&database).await;
        let store = fab_store::Database::connect(&url).await.unwrap().store();
        SessionStoreUnderTest::sql_with_users(store, database).await
    });
}

/// A connection of the test's own, outside fab (as an operator's SQL shell would be).
async fn raw_connection(database: &TestDatabase) -> sea_orm::DatabaseConnection {
    let url = match &database.url {
        DatabaseUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres { url } => url.expose().to_owned(),
    };
    sea_orm::Database::connect(url).await.unwrap()
}

/// Deleting a user row by hand, outside fab, still ends the user's sessions (ON DELETE CASCADE).
async fn session_ends_with_its_user_row(database: TestDatabase) {
    use fab_core::session::{SessionPolicy, SessionStage, SessionToken};
    use sea_orm::ConnectionTrait;
    let store = database.connect_migrated().await.store();
    let subject = SessionStoreUnderTest::sql_with_users(store, ()).await;
    let [owner, other] = subject.users;
    let session = |user| {
        SessionPolicy::default().new_record(
            &SessionToken::generate(&fab_core::random::OsRandom),
            user,
            SessionStage::Authenticated,
            chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            None,
            None,
        )
    };
    let (gone, kept) = (session(owner), session(other));
    subject.store.create(&gone).await.unwrap();
    subject.store.create(&kept).await.unwrap();
    raw_connection(&database)
        .await
        .execute_unprepared(&format!("DELETE FROM ab_user WHERE id = {}", owner.0))
        .await
        .unwrap();
    assert_eq!(subject.store.find(&gone.id_hash).await.unwrap(), None);
    assert_eq!(subject.store.find(&kept.id_hash).await.unwrap(), Some(kept));
}

/// fab_session references ab_user: a session for a user that does not exist is refused.
async fn session_of_an_unknown_user_is_refused(database: TestDatabase) {
    use fab_core::session::{SessionPolicy, SessionStage, SessionToken};
    let store = database.connect_migrated().await.store();
    for user in [UserId(4_242), UserId(i64::MAX)] {
        let record = SessionPolicy::default().new_record(
            &SessionToken::generate(&fab_core::random::OsRandom),
            user,
            SessionStage::Authenticated,
            chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            None,
            None,
        );
        let refused = store.create(&record).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("does not exist")),
            "{refused:?}"
        );
        assert_eq!(store.find(&record.id_hash).await.unwrap(), None);
    }
}

#[tokio::test]
async fn sqlite_session_ends_with_its_user_row() {
    session_ends_with_its_user_row(fresh_sqlite().await).await;
}

#[tokio::test]
async fn postgres_session_ends_with_its_user_row() {
    session_ends_with_its_user_row(fresh_postgres().await).await;
}

#[tokio::test]
async fn sqlite_session_of_an_unknown_user_is_refused() {
    session_of_an_unknown_user_is_refused(fresh_sqlite().await).await;
}

#[tokio::test]
async fn postgres_session_of_an_unknown_user_is_refused() {
    session_of_an_unknown_user_is_refused(fresh_postgres().await).await;
}
