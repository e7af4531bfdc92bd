//! The session-store conformance suite on the in-memory store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

fab_testkit::session_store_conformance!(async { fab_store::MemorySessionStore::new() });

#[tokio::test]
async fn clones_share_their_sessions() {
    use fab_core::session::{SessionPolicy, SessionStage, SessionStore, SessionToken};
    let store = fab_store::MemorySessionStore::new();
    let clone = store.clone();
    let record = SessionPolicy::default().new_record(
        &SessionToken::generate(&fab_core::random::OsRandom),
        fab_core::user::UserId(1),
        SessionStage::Authenticated,
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        None,
        None,
    );
    store.create(&record).await.unwrap();
    assert_eq!(clone.find(&record.id_hash).await.unwrap(), Some(record));
    assert_eq!(clone.delete_all().await.unwrap(), 1);
}
