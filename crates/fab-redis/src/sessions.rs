//! [`RedisSessionStore`]: sessions shared by every fab instance (`SESSION_BACKEND=redis`), with
//! the per-user index `fab clear-sessions --user-id` needs.
//!
//! Layout (prefix `fab:` by default):
//! - `fab:session:<id hash>` — a hash: `user_id`, `stage`, `created_us`, `last_seen_us`,
//!   `expires_us` (microseconds since the epoch, the precision the SQL stores keep), and `ip`,
//!   `user_agent` when known.
//! - `fab:user_sessions:<user id>` — a set of that user's session id hashes. Members whose
//!   session has expired are removed when the set is read, by `purge_expired`, and the set itself
//!   expires with the user's last session.
//!
//! The one thing to know: Redis drops a session by itself once it is certainly over. Its TTL is
//! the time left until the earlier of the idle deadline (last use plus the idle timeout) and the
//! absolute expiry, counted from the write's own timestamp (creation or `touch`), and set again
//! on every touch. Counting from the write rather than setting `PEXPIREAT` keeps the TTL right
//! even when fab's clock and Redis' disagree. The idle and absolute rules are still checked by
//! the caller on every request ([`SessionPolicy::check`]); the TTL only saves the memory.
//!
//! Every change that touches a session and its index is one Lua script, so concurrent logins,
//! logouts and `clear-sessions` never leave a session behind. `delete_all` walks the keys with
//! `SCAN` (never `KEYS` or `FLUSHDB`: the database may hold other data). Meant for one Redis
//! (standalone or behind Sentinel), not Redis Cluster.

use crate::connection::{Failure, RedisConnection};
use crate::limiter::glob_escape;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fab_core::StoreError;
use fab_core::session::{SessionIdHash, SessionPolicy, SessionRecord, SessionStage, SessionStore};
use fab_core::user::UserId;
use redis::Script;
use std::collections::HashMap;

/// KEYS: session, index. ARGV: TTL (ms), id hash, then the hash's field/value pairs.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
";

/// KEYS: session. ARGV: at (us), idle timeout (us), index prefix, id hash.
const TOUCH: &str = r"
local fields = redis.call('HMGET', KEYS[1], 'expires_us', 'user_id')
if not fields[1] or not fields[2] then return 0 end
redis.call('HSET', KEYS[1], 'last_seen_us', ARGV[1])
local left = math.min(tonumber(ARGV[2]), tonumber(fields[1]) - tonumber(ARGV[1]))
local ttl = string.format('%.0f', math.max(1, math.ceil(left / 1000)))
redis.call('PEXPIRE', KEYS[1], ttl)
local index = ARGV[3] .. fields[2]
redis.call('SADD', index, ARGV[4])
if redis.call('PTTL', index) < tonumber(ttl) then redis.call('PEXPIRE', index, ttl) end
return 1
";

/// KEYS: session. ARGV: index prefix, id hash.
const DELETE: &str = r"
local user = redis.call('HGET', KEYS[1], 'user_id')
if not user then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. user, ARGV[2])
return 1
";

/// KEYS: index. ARGV: session prefix, user id.
const DELETE_FOR_USER: &str = r"
local deleted = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'user_id') == ARGV[2] then
    deleted = deleted + redis.call('DEL', key)
  end
end
redis.call('DEL', KEYS[1])
return deleted
";

/// Deletes a session only if it was not used since it was read. KEYS: session. ARGV: index
/// prefix, id hash, the `last_seen_us` read.
const DELETE_UNCHANGED: &str = r"
local fields = redis.call('HMGET', KEYS[1], 'last_seen_us', 'user_id')
if fields[1] ~= ARGV[3] or not fields[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. fields[2], ARGV[2])
return 1
";

/// Removes index members whose session is gone. KEYS: index. ARGV: session prefix.
const CLEAN_INDEX: &str = r"
local removed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    removed = removed + redis.call('SREM', KEYS[1], id)
  end
end
return removed
";

/// How many keys one `SCAN` step asks for.
const SCAN_BATCH: usize = 500;

/// Sessions in Redis. Clones share the connection.
#[derive(Clone, Debug)]
pub struct RedisSessionStore {
    connection: RedisConnection,
    prefix: String,
    idle_timeout_micros: i64,
    scripts: Scripts,
}

#[derive(Clone, Debug)]
struct Scripts {
    create: Script,
    touch: Script,
    delete: Script,
    delete_for_user: Script,
    delete_unchanged: Script,
    clean_index: Script,
}

impl RedisSessionStore {
    /// A store on `connection` under the prefix `fab:`; TTLs follow `policy`'s idle timeout.
    pub fn new(connection: RedisConnection, policy: &SessionPolicy) -> Self {
        Self {
            connection,
            prefix: "fab:".to_owned(),
            idle_timeout_micros: policy.idle_timeout.num_microseconds().unwrap_or(i64::MAX),
            scripts: Scripts {
                create: Script::new(CREATE),
                touch: Script::new(TOUCH),
                delete: Script::new(DELETE),
                delete_for_user: Script::new(DELETE_FOR_USER),
                delete_unchanged: Script::new(DELETE_UNCHANGED),
                clean_index: Script::new(CLEAN_INDEX),
            },
        }
    }

    /// Uses `prefix` instead of `fab:` for every key (tests give each store its own).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn session_prefix(&self) -> String {
        format!("{}session:", self.prefix)
    }

    fn index_prefix(&self) -> String {
        format!("{}user_sessions:", self.prefix)
    }

    /// The Redis key of a session.
    pub fn session_key(&self, id_hash: &SessionIdHash) -> String {
        format!("{}{}", self.session_prefix(), id_hash.as_str())
    }

    /// The Redis key of a user's session index.
    pub fn index_key(&self, user_id: UserId) -> String {
        format!("{}{}", self.index_prefix(), user_id.0)
    }

    /// The idle-or-absolute deadline of `record`, as a TTL in milliseconds counted from `from`
    /// (at least 1: a record already over lives a millisecond).
    fn ttl_millis(&self, expires_us: i64, from_us: i64) -> i64 {
        let left = self
            .idle_timeout_micros
            .min(expires_us.saturating_sub(from_us));
        (left.saturating_add(999) / 1_000).max(1)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, Failure> {
        let mut connection = self.connection.manager();
        self.connection
            .run(async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Every key matching `pattern`, collected one `SCAN` step at a time.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, Failure> {
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let mut connection = self.connection.manager();
            let step = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .clone();
            let (next, batch): (u64, Vec<String>) = self
                .connection
                .run(async move { step.query_async(&mut connection).await })
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn parse_record(
        &self,
        id_hash: &str,
        fields: &HashMap<String, String>,
    ) -> Result<SessionRecord, Failure> {
        let corrupt = |what: &str| {
            Failure::Internal(format!(
                "session {}{id_hash}: unreadable {what}",
                self.session_prefix()
            ))
        };
        let number = |name: &str| -> Result<i64, Failure> {
            fields
                .get(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(name))
        };
        let time = |name: &str| -> Result<DateTime<Utc>, Failure> {
            DateTime::from_timestamp_micros(number(name)?).ok_or_else(|| corrupt(name))
        };
        let stage = fields
            .get("stage")
            .and_then(|s| SessionStage::parse(s))
            .ok_or_else(|| corrupt("stage"))?;
        Ok(SessionRecord {
            id_hash: SessionIdHash(id_hash.to_owned()),
            user_id: UserId(number("user_id")?),
            stage,
            created_at: time("created_us")?,
            last_seen_at: time("last_seen_us")?,
            expires_at: time("expires_us")?,
            ip: fields.get("ip").cloned(),
            user_agent: fields.get("user_agent").cloned(),
        })
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let expires = record.expires_at.timestamp_micros();
        let last_seen = record.last_seen_at.timestamp_micros();
        let mut invocation = self.scripts.create.prepare_invoke();
        invocation
            .key(self.session_key(&record.id_hash))
            .key(self.index_key(record.user_id))
            .arg(self.ttl_millis(expires, last_seen))
            .arg(record.id_hash.as_str())
            .arg("user_id")
            .arg(record.user_id.0)
            .arg("stage")
            .arg(record.stage.as_str())
            .arg("created_us")
            .arg(record.created_at.timestamp_micros())
            .arg("last_seen_us")
            .arg(last_seen)
            .arg("expires_us")
            .arg(expires);
        if let Some(ip) = &record.ip {
            invocation.arg("ip").arg(ip);
        }
        if let Some(user_agent) = &record.user_agent {
            invocation.arg("user_agent").arg(user_agent);
        }
        let created: i64 = self.invoke(invocation).await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("the session already exists".into()))
        }
    }

    async fn find(&self, id_hash: &SessionIdHash) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(id_hash);
        let mut connection = self.connection.manager();
        let fields: HashMap<String, String> = self
            .connection
            .run(async move {
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.parse_record(id_hash.as_str(), &fields)?))
    }

    async fn touch(&self, id_hash: &SessionIdHash, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut invocation = self.scripts.touch.key(self.session_key(id_hash));
        invocation
            .arg(at.timestamp_micros())
            .arg(self.idle_timeout_micros)
            .arg(self.index_prefix())
            .arg(id_hash.as_str());
        let _: i64 = self.invoke(invocation).await?;
        Ok(())
    }

    async fn delete(&self, id_hash: &SessionIdHash) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.delete.key(self.session_key(id_hash));
        invocation.arg(self.index_prefix()).arg(id_hash.as_str());
        let deleted: i64 = self.invoke(invocation).await?;
        Ok(deleted == 1)
    }

    async fn delete_for_user(&self, user_id: UserId) -> Result<u64, StoreError> {
        let mut invocation = self.scripts.delete_for_user.key(self.index_key(user_id));
        invocation.arg(self.session_prefix()).arg(user_id.0);
        let deleted: u64 = self.invoke(invocation).await?;
        Ok(deleted)
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let sessions = self
            .scan(&format!("{}*", glob_escape(&self.session_prefix())))
            .await?;
        let indexes = self
            .scan(&format!("{}*", glob_escape(&self.index_prefix())))
            .await?;
        for (batch, counts) in [(sessions, true), (indexes, false)] {
            for chunk in batch.chunks(SCAN_BATCH) {
                let mut connection = self.connection.manager();
                let command = redis::cmd("DEL").arg(chunk).clone();
                let removed: u64 = self
                    .connection
                    .run(async move { command.query_async(&mut connection).await })
                    .await?;
                if counts {
                    deleted += removed;
                }
            }
        }
        Ok(deleted)
    }

    async fn list_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.index_key(user_id);
        let mut connection = self.connection.manager();
        let members: Vec<String> = {
            let index = index.clone();
            self.connection
                .run(async move {
                    redis::cmd("SMEMBERS")
                        .arg(&index)
                        .query_async(&mut connection)
                        .await
                })
                .await?
        };
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for member in &members {
            pipeline
                .cmd("HGETALL")
                .arg(format!("{}{member}", self.session_prefix()));
        }
        let mut connection = self.connection.manager();
        let hashes: Vec<HashMap<String, String>> = self
            .connection
            .run(async move { pipeline.query_async(&mut connection).await })
            .await?;
        let mut found = Vec::new();
        let mut stale = Vec::new();
        for (member, fields) in members.iter().zip(&hashes) {
            if fields.is_empty() {
                stale.push(member.clone());
                continue;
            }
            let record = self.parse_record(member, fields)?;
            if record.user_id == user_id {
                found.push(record);
            }
        }
        if !stale.is_empty() {
            let mut connection = self.connection.manager();
            let command = redis::cmd("SREM").arg(&index).arg(&stale).clone();
            self.connection
                .run(async move { command.exec_async(&mut connection).await })
                .await?;
        }
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id_hash.cmp(&b.id_hash))
        });
        Ok(found)
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: &SessionPolicy,
    ) -> Result<u64, StoreError> {
        let now_us = now.timestamp_micros();
        let idle_us = policy.idle_timeout.num_microseconds().unwrap_or(i64::MAX);
        let session_prefix = self.session_prefix();
        let keys = self
            .scan(&format!("{}*", glob_escape(&session_prefix)))
            .await?;
        let mut purged = 0;
        for chunk in keys.chunks(SCAN_BATCH) {
            let mut pipeline = redis::pipe();
            for key in chunk {
                pipeline
                    .cmd("HMGET")
                    .arg(key)
                    .arg("last_seen_us")
                    .arg("expires_us");
            }
            let mut connection = self.connection.manager();
            let times: Vec<(Option<String>, Option<String>)> = self
                .connection
                .run(async move { pipeline.query_async(&mut connection).await })
                .await?;
            for (key, (last_seen, expires)) in chunk.iter().zip(times) {
                let (Some(last_seen), Some(expires)) = (last_seen, expires) else {
                    continue;
                };
                let (Ok(last_seen_us), Ok(expires_us)) =
                    (last_seen.parse::<i64>(), expires.parse::<i64>())
                else {
                    continue;
                };
                let live = expires_us > now_us && last_seen_us.saturating_add(idle_us) > now_us;
                if live {
                    continue;
                }
                let id_hash = key.strip_prefix(&session_prefix).unwrap_or(key);
                let mut invocation = self.scripts.delete_unchanged.key(key);
                invocation
                    .arg(self.index_prefix())
                    .arg(id_hash)
                    .arg(&last_seen);
                let deleted: u64 = self.invoke(invocation).await?;
                purged += deleted;
            }
        }
        let indexes = self
            .scan(&format!("{}*", glob_escape(&self.index_prefix())))
            .await?;
        for index in indexes {
            let mut invocation = self.scripts.clean_index.key(&index);
            invocation.arg(&session_prefix);
            let _: u64 = self.invoke(invocation).await?;
        }
        Ok(purged)
    }
}
