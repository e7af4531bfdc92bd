//! Server-side session rules and the [`SessionStore`] trait.
//!
//! The browser holds a 256-bit random token; stores keep only its SHA-256 ([`SessionIdHash`]), so
//! a leaked session table cannot be replayed as cookies. A session expires after
//! [`SessionPolicy::idle_timeout`] without use and after [`SessionPolicy::absolute_lifetime`]
//! whatever happens. A session in [`SessionStage::AwaitingSecondFactor`] proves only the password
//! and grants no permission; completing the second factor replaces it by a new session (new id).

use crate::error::StoreError;
use crate::random::{RandomSource, random_token};
use crate::secret::Secret;
use crate::user::UserId;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// The token a client presents (the cookie value). Never stored.
#[derive(Debug, Clone)]
pub struct SessionToken(Secret);

impl SessionToken {
    /// A fresh 256-bit token.
    pub fn generate(rng: &dyn RandomSource) -> Self {
        Self(Secret::new(random_token(rng, 32)))
    }

    /// Wraps a value read from a cookie; None when it cannot be a token (wrong length or
    /// alphabet), so forged junk costs no store lookup.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(Secret::new(value)))
    }

    /// The cookie value.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The hash under which stores keep the session.
    pub fn id_hash(&self) -> SessionIdHash {
        let digest = Sha256::digest(self.0.expose().as_bytes());
        SessionIdHash(hex::encode(digest))
    }
}

/// SHA-256 of a session token, hex-encoded: the session's key in every store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionIdHash(pub String);

impl SessionIdHash {
    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How far a session's holder has authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStage {
    /// Fully logged in.
    Authenticated,
    /// Password checked, a second factor still owed: no permission is granted.
    AwaitingSecondFactor,
}

impl SessionStage {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStage::Authenticated => "authenticated",
            SessionStage::AwaitingSecondFactor => "awaiting_second_factor",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "authenticated" => Some(SessionStage::Authenticated),
            "awaiting_second_factor" => Some(SessionStage::AwaitingSecondFactor),
            _ => None,
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Key: hash of the token.
    pub id_hash: SessionIdHash,
    /// Whose session.
    pub user_id: UserId,
    /// How far authentication has got.
    pub stage: SessionStage,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last time a request used it (updated at most every [`SessionPolicy::touch_interval`]).
    pub last_seen_at: DateTime<Utc>,
    /// Hard end, set at creation from the absolute lifetime.
    pub expires_at: DateTime<Utc>,
    /// Client IP at creation.
    pub ip: Option<String>,
    /// Client user agent at creation (truncated).
    pub user_agent: Option<String>,
}

/// Idle and absolute expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long is over (`SESSION_TIMEOUT`).
    pub idle_timeout: Duration,
    /// A session this old is over, used or not (`PERMANENT_SESSION_LIFETIME`).
    pub absolute_lifetime: Duration,
    /// How stale `last_seen_at` may get before a request writes it again: saves a write per
    /// request at the cost of this much imprecision in the idle timeout.
    pub touch_interval: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::seconds(3600),
            absolute_lifetime: Duration::hours(8),
            touch_interval: Duration::seconds(60),
        }
    }
}

/// What a session check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// Still valid; `touch` asks the caller to record use.
    Valid {
        /// Whether to write `last_seen_at`.
        touch: bool,
    },
    /// Unused for longer than the idle timeout.
    IdleExpired,
    /// Past its absolute lifetime.
    AbsoluteExpired,
}

impl SessionPolicy {
    /// A new record for `user_id`, starting at `now`.
    pub fn new_record(
        &self,
        token: &SessionToken,
        user_id: UserId,
        stage: SessionStage,
        now: DateTime<Utc>,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> SessionRecord {
        SessionRecord {
            id_hash: token.id_hash(),
            user_id,
            stage,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.absolute_lifetime,
            ip,
            user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
        }
    }

    /// Whether `record` is still usable at `now`.
    pub fn check(&self, record: &SessionRecord, now: DateTime<Utc>) -> SessionCheck {
        if now >= record.expires_at {
            return SessionCheck::AbsoluteExpired;
        }
        let idle = now - record.last_seen_at;
        if idle >= self.idle_timeout {
            return SessionCheck::IdleExpired;
        }
        SessionCheck::Valid {
            touch: idle >= self.touch_interval,
        }
    }

    /// The instant after which a record is certainly expired, for purging and store TTLs.
    pub fn idle_deadline(&self, record: &SessionRecord) -> DateTime<Utc> {
        (record.last_seen_at + self.idle_timeout).min(record.expires_at)
    }
}

/// Where sessions live. Every backend (SQL, memory, Redis) passes the same conformance suite.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session.
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError>;
    /// The session with this id hash, if any (expired ones may still be returned; callers check
    /// them with [`SessionPolicy::check`]).
    async fn find(&self, id_hash: &SessionIdHash) -> Result<Option<SessionRecord>, StoreError>;
    /// Records use at `at`.
    async fn touch(&self, id_hash: &SessionIdHash, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Deletes one session; true when it existed.
    async fn delete(&self, id_hash: &SessionIdHash) -> Result<bool, StoreError>;
    /// Deletes every session of a user; the count deleted.
    async fn delete_for_user(&self, user_id: UserId) -> Result<u64, StoreError>;
    /// Deletes every session; the count deleted.
    async fn delete_all(&self) -> Result<u64, StoreError>;
    /// The sessions of a user, newest first.
    async fn list_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError>;
    /// Deletes sessions expired at `now` under `policy`; the count deleted.
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: &SessionPolicy,
    ) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn token_round_trips_and_hashes() {
        let token = SessionToken::generate(&OsRandom);
        let parsed = SessionToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.id_hash(), token.id_hash());
        assert_eq!(token.id_hash().as_str().len(), 64);
        assert_ne!(token.id_hash().as_str(), token.expose());
    }

    #[test]
    fn forged_cookie_values_are_not_tokens() {
        for junk in [
            "",
            "abc",
            "../../etc/passwd",
            &"a".repeat(44),
            &"é".repeat(43),
        ] {
            assert!(SessionToken::parse(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let policy = SessionPolicy {
            idle_timeout: Duration::minutes(30),
            absolute_lifetime: Duration::hours(2),
            touch_interval: Duration::minutes(1),
        };
        let token = SessionToken::generate(&OsRandom);
        let mut record = policy.new_record(
            &token,
            UserId(1),
            SessionStage::Authenticated,
            start(),
            None,
            None,
        );
        assert_eq!(
            policy.check(&record, start()),
            SessionCheck::Valid { touch: false }
        );
        assert_eq!(
            policy.check(&record, start() + Duration::minutes(5)),
            SessionCheck::Valid { touch: true }
        );
        assert_eq!(
            policy.check(&record, start() + Duration::minutes(30)),
            SessionCheck::IdleExpired
        );
        record.last_seen_at = start() + Duration::minutes(119);
        assert_eq!(
            policy.check(&record, start() + Duration::hours(2)),
            SessionCheck::AbsoluteExpired
        );
    }
}
