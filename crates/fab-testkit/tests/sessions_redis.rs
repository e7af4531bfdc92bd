//! The session-store conformance suite on Redis, and what only Redis must show: TTLs at the idle
//! or absolute deadline, the per-user index cleaned of expired members, `delete_all` leaving
//! other data alone, and sessions shared by instances.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use chrono::{DateTime, Duration, SubsecRound, Utc};
use fab_core::random::OsRandom;
use fab_core::session::{SessionPolicy, SessionRecord, SessionStage, SessionStore, SessionToken};
use fab_core::user::UserId;
use fab_testkit::conformance::SessionStoreUnderTest;
use fab_testkit::ratelimit_conformance::RedisNamespace;
use std::sync::Arc;

/// The conformance suite's own policy (30 minutes idle, 2 hours absolute).
fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_timeout: Duration::minutes(30),
        absolute_lifetime: Duration::hours(2),
        touch_interval: Duration::minutes(1),
    }
}

fab_testkit::session_store_conformance!(async {
    let namespace = RedisNamespace::fresh().await;
    let store = namespace.session_store(&policy());
    SessionStoreUnderTest::new(Arc::new(store), [UserId(1), UserId(2)], namespace)
});

/// Now at microsecond precision, the precision every session store keeps (as the SQL ones do).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn record(user: UserId, at: DateTime<Utc>) -> SessionRecord {
    policy().new_record(
        &SessionToken::generate(&OsRandom),
        user,
        SessionStage::Authenticated,
        at,
        Some("192.0.2.1".into()),
        None,
    )
}

async fn pttl(namespace: &RedisNamespace, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut namespace.raw().await)
        .await
        .unwrap()
}

/// A session key lives until the earlier of its idle deadline and its absolute expiry, counted
/// from its last write; the user's index lives at least as long.
#[tokio::test]
async fn session_keys_expire_at_the_idle_or_absolute_deadline() {
    let namespace = RedisNamespace::fresh().await;
    let store = namespace.session_store(&policy());
    let now = now();
    let fresh = record(UserId(1), now);
    store.create(&fresh).await.unwrap();
    let key = store.session_key(&fresh.id_hash);
    let ttl = pttl(&namespace, &key).await;
    assert!(
        (29 * 60_000..=30 * 60_000).contains(&ttl),
        "idle deadline: {ttl} ms"
    );
    let index_ttl = pttl(&namespace, &store.index_key(UserId(1))).await;
    assert!(
        index_ttl >= ttl - 1_000,
        "index {index_ttl} ms, session {ttl} ms"
    );

    // Created 1 h 50 min ago and used just now: 10 minutes of absolute lifetime are left.
    let mut old = record(UserId(1), now - Duration::minutes(110));
    old.last_seen_at = now;
    store.create(&old).await.unwrap();
    let ttl = pttl(&namespace, &store.session_key(&old.id_hash)).await;
    assert!(
        (9 * 60_000..=10 * 60_000).contains(&ttl),
        "absolute deadline: {ttl} ms"
    );

    // A touch moves the idle deadline, never past the absolute one.
    store
        .touch(&fresh.id_hash, now + Duration::minutes(20))
        .await
        .unwrap();
    let ttl = pttl(&namespace, &key).await;
    assert!(
        (29 * 60_000..=30 * 60_000).contains(&ttl),
        "after touch: {ttl} ms"
    );
    store
        .touch(&old.id_hash, now + Duration::minutes(5))
        .await
        .unwrap();
    let ttl = pttl(&namespace, &store.session_key(&old.id_hash)).await;
    assert!(
        (4 * 60_000..=5 * 60_000).contains(&ttl),
        "touch near the end: {ttl} ms"
    );
}

/// A session Redis expired leaves its id in the user's index; reading the index and purging
/// remove it.
#[tokio::test]
async fn stale_index_members_are_cleaned() {
    let namespace = RedisNamespace::fresh().await;
    let store = namespace.session_store(&policy());
    let now = now();
    let (gone, kept, later) = (
        record(UserId(5), now),
        record(UserId(5), now),
        record(UserId(6), now),
    );
    for session in [&gone, &kept, &later] {
        store.create(session).await.unwrap();
    }
    let mut raw = namespace.raw().await;
    let members = |user| {
        let index = store.index_key(UserId(user));
        let namespace = &namespace;
        async move {
            let mut members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(index)
                .query_async(&mut namespace.raw().await)
                .await
                .unwrap();
            members.sort();
            members
        }
    };
    // As if their TTL had run out.
    let _: () = redis::cmd("DEL")
        .arg(store.session_key(&gone.id_hash))
        .arg(store.session_key(&later.id_hash))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members(5).await.len(), 2);
    assert_eq!(
        store.list_for_user(UserId(5)).await.unwrap(),
        vec![kept.clone()]
    );
    assert_eq!(members(5).await, vec![kept.id_hash.0.clone()]);

    assert_eq!(members(6).await.len(), 1);
    assert_eq!(store.purge_expired(now, &policy()).await.unwrap(), 0);
    assert!(members(6).await.is_empty(), "purge cleans index sets");
}

/// `delete_all` removes sessions and indexes under its prefix and nothing else.
#[tokio::test]
async fn delete_all_leaves_other_data_alone() {
    let namespace = RedisNamespace::fresh().await;
    let store = namespace.session_store(&policy());
    let neighbour = namespace
        .session_store(&policy())
        .with_key_prefix(format!("{}other:", namespace.prefix));
    let now = now();
    store.create(&record(UserId(1), now)).await.unwrap();
    let theirs = record(UserId(1), now);
    neighbour.create(&theirs).await.unwrap();
    let unrelated = format!("{}rate_limit:login:user:alice", namespace.prefix);
    let _: () = redis::cmd("SET")
        .arg(&unrelated)
        .arg("x")
        .query_async(&mut namespace.raw().await)
        .await
        .unwrap();
    assert_eq!(store.delete_all().await.unwrap(), 1);
    assert_eq!(neighbour.find(&theirs.id_hash).await.unwrap(), Some(theirs));
    let keys = namespace.keys().await;
    assert!(keys.contains(&unrelated), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with(&format!("{}session:", namespace.prefix)))
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with(&format!("{}user_sessions:", namespace.prefix)))
    );
}

/// Two instances see the same sessions: one logs in, the other ends the user's sessions
/// (`fab clear-sessions --user-id`), and the first no longer finds it.
#[tokio::test]
async fn instances_share_sessions() {
    let namespace = RedisNamespace::fresh().await;
    let (first, second) = (
        namespace.session_store(&policy()),
        namespace.session_store(&policy()),
    );
    let session = record(UserId(123), now());
    first.create(&session).await.unwrap();
    assert_eq!(
        second.find(&session.id_hash).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(second.delete_for_user(UserId(123)).await.unwrap(), 1);
    assert_eq!(first.find(&session.id_hash).await.unwrap(), None);
}
