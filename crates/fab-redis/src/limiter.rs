//! [`RedisRateLimiter`]: GCRA state shared by every fab instance, in Redis under the deployment
//! guide's key names, so `redis-cli KEYS "rate_limit:*"` shows what is limited and `redis-cli SET
//! rate_limit_emergency_mode 1` switches every instance to the emergency limits.
//!
//! The one thing to know: a decision is one round trip, one atomic Lua script (`EVALSHA`, loaded
//! again by itself after a Redis restart or `SCRIPT FLUSH`), and it runs on Redis' clock
//! (`TIME`), so instances with skewed clocks agree and concurrent requests on any number of
//! instances never exceed the limit. The script applies exactly the rule of
//! [`fab_core::ratelimit::decide`] and this module checks its answer with that function.
//!
//! Each key is a small hash (`tat`, `interval`, `burst`: the TAT in microseconds of Redis' clock
//! and the rate it was last allowed under) with a `PEXPIRE` equal to the time until it holds no
//! state, at most one period: Redis never keeps a key longer than it matters. A refused request
//! writes nothing.
//!
//! The keys of one decision or listing are passed as `KEYS`, but the limiter is meant for one
//! Redis (standalone or behind Sentinel), not Redis Cluster.

use crate::connection::{Failure, RedisConnection};
use async_trait::async_trait;
use fab_core::ratelimit::{
    Decision, EMERGENCY_MODE_KEY, KEY_PREFIX, KeyState, LimiterError, Rate, RateKey, RateLimiter,
    decide, emergency_flag_is_on,
};
use redis::Script;

/// The GCRA decision on Redis' clock. KEYS[1]: the key. ARGV: emission interval, tolerance
/// (both in microseconds) and burst. Returns {allowed, now, had state, stored TAT}.
const DECIDE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = tonumber(redis.call('HGET', KEYS[1], 'tat'))
local had = 0
local tat = now
if stored then
  had = 1
  if stored > now then tat = stored end
else
  stored = 0
end
if tat - now <= tolerance then
  local new_tat = tat + interval
  redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', new_tat),
    'interval', ARGV[1], 'burst', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil((new_tat - now) / 1000)))
  return {1, now, had, stored}
end
return {0, now, had, stored}
";

/// Reads the state of KEYS without changing anything. Returns Redis' now, then for each key its
/// TAT, interval and burst (empty strings when it holds no usable state).
const READ: &str = r"
local time = redis.call('TIME')
local out = {string.format('%.0f', tonumber(time[1]) * 1000000 + tonumber(time[2]))}
for _, key in ipairs(KEYS) do
  local fields = redis.pcall('HMGET', key, 'tat', 'interval', 'burst')
  if type(fields) == 'table' and not fields.err and fields[1] and fields[2] and fields[3] then
    out[#out + 1] = fields[1]
    out[#out + 1] = fields[2]
    out[#out + 1] = fields[3]
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
";

/// How many keys one `SCAN` step asks for.
const SCAN_BATCH: usize = 500;
/// The most keys [`RateLimiter::hottest`] looks at, so a status request stays cheap on a Redis
/// holding millions of keys.
const SCAN_LIMIT: usize = 100_000;

/// Rate-limit state in Redis, shared by every instance connected to it.
#[derive(Clone, Debug)]
pub struct RedisRateLimiter {
    connection: RedisConnection,
    namespace: String,
    decide: Script,
    read: Script,
}

impl RedisRateLimiter {
    /// A limiter on `connection`, with the deployment guide's key names.
    pub fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            namespace: String::new(),
            decide: Script::new(DECIDE),
            read: Script::new(READ),
        }
    }

    /// Puts `namespace` in front of every key this limiter uses (`t123:rate_limit:...`,
    /// `t123:rate_limit_emergency_mode`), so tests sharing one Redis cannot see each other.
    /// Production uses none: the key names are the deployment guide's.
    pub fn with_key_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The connection this limiter uses.
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// The Redis key holding `key`'s state.
    pub fn redis_key(&self, key: &RateKey) -> String {
        format!("{}{}", self.namespace, key.as_str())
    }

    /// The Redis key of the emergency flag.
    pub fn emergency_key(&self) -> String {
        format!("{}{EMERGENCY_MODE_KEY}", self.namespace)
    }

    /// Reads the state of `keys` (Redis keys of this limiter) in one round trip.
    async fn read_states(&self, keys: &[String]) -> Result<Vec<KeyState>, Failure> {
        let mut invocation = self.read.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        let mut connection = self.connection.manager();
        let reply: Vec<String> = self
            .connection
            .run(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let Some((now, fields)) = reply.split_first() else {
            return Err(Failure::Internal("empty reply to the read script".into()));
        };
        let now: i64 = now
            .parse()
            .map_err(|_| Failure::Internal(format!("Redis TIME gave {now:?}")))?;
        let mut states = Vec::new();
        for (key, field) in keys.iter().zip(fields.chunks(3)) {
            let [tat, interval, burst] = field else {
                return Err(Failure::Internal("short reply to the read script".into()));
            };
            let (Ok(tat), Ok(interval), Ok(burst)) = (
                tat.parse::<i64>(),
                interval.parse::<i64>(),
                burst.parse::<u32>(),
            ) else {
                continue;
            };
            let Some(name) = key.strip_prefix(&self.namespace) else {
                continue;
            };
            let Ok(rate_key) = RateKey::parse(name) else {
                continue;
            };
            states.extend(KeyState::at(rate_key, tat, interval, burst, now));
        }
        Ok(states)
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &RateKey, rate: &Rate) -> Result<Decision, LimiterError> {
        let mut invocation = self.decide.key(self.redis_key(key));
        invocation
            .arg(rate.emission_interval_micros())
            .arg(rate.tolerance_micros())
            .arg(rate.count());
        let mut connection = self.connection.manager();
        let (allowed, now, had, stored): (i64, i64, i64, i64) = self
            .connection
            .run(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let decision = decide((had == 1).then_some(stored), now, rate);
        if decision.allowed != (allowed == 1) {
            return Err(LimiterError::Internal(format!(
                "the Redis script and fab disagree on {key} (stored {stored}, now {now})"
            )));
        }
        Ok(decision)
    }

    async fn peek(&self, key: &RateKey) -> Result<Option<KeyState>, LimiterError> {
        let states = self.read_states(&[self.redis_key(key)]).await?;
        Ok(states.into_iter().next())
    }

    async fn reset(&self, key: &RateKey) -> Result<bool, LimiterError> {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection.manager();
        let deleted: i64 = self
            .connection
            .run(async move {
                redis::cmd("DEL")
                    .arg(&redis_key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn hottest(&self, limit: usize) -> Result<Vec<KeyState>, LimiterError> {
        let pattern = format!("{}{KEY_PREFIX}*", glob_escape(&self.namespace));
        let mut cursor: u64 = 0;
        let mut scanned = 0;
        let mut states = Vec::new();
        loop {
            let mut connection = self.connection.manager();
            let step = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .clone();
            let (next, keys): (u64, Vec<String>) = self
                .connection
                .run(async move { step.query_async(&mut connection).await })
                .await?;
            scanned += keys.len();
            if !keys.is_empty() {
                states.extend(self.read_states(&keys).await?);
            }
            cursor = next;
            if cursor == 0 || scanned >= SCAN_LIMIT {
                break;
            }
        }
        states.sort_by(KeyState::most_limited_first);
        states.truncate(limit);
        Ok(states)
    }

    async fn emergency(&self) -> Result<bool, LimiterError> {
        let key = self.emergency_key();
        let mut connection = self.connection.manager();
        let value: Option<String> = self
            .connection
            .run(async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(emergency_flag_is_on(value.as_deref()))
    }

    async fn set_emergency(&self, on: bool) -> Result<(), LimiterError> {
        let key = self.emergency_key();
        let mut connection = self.connection.manager();
        let command = if on {
            redis::cmd("SET").arg(&key).arg("1").clone()
        } else {
            redis::cmd("DEL").arg(&key).clone()
        };
        self.connection
            .run(async move { command.exec_async(&mut connection).await })
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(self.connection.ping().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("t1:"), "t1:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
