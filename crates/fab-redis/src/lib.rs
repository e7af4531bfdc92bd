//! Redis for fab: the shared GCRA rate limiter ([`RedisRateLimiter`]), the shared session store
//! ([`RedisSessionStore`]) and the emergency flag, over one self-reconnecting client
//! ([`RedisConnection`]).
//!
//! The one thing to know: Redis is a shared peer that may vanish. Opening a connection never
//! fails because Redis is down, every call is bounded by short timeouts (250 ms to connect, 250 ms
//! per command by default) and fails as *unavailable* rather than hanging, and the client
//! reconnects (and reloads its Lua scripts) by itself when Redis returns. What to do meanwhile
//! (`RATE_LIMIT_FAIL_MODE`) is the caller's choice, not this crate's.
//!
//! Only this crate knows Redis; it depends on fab-core alone and implements its traits
//! ([`fab_core::ratelimit::RateLimiter`], [`fab_core::session::SessionStore`]).

pub mod connection;
pub mod limiter;
pub mod sessions;

pub use connection::{Failure, RedisConnection, RedisOptions, SetupError};
pub use limiter::RedisRateLimiter;
pub use sessions::RedisSessionStore;
