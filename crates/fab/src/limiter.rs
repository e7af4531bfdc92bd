//! The rate limiter `fab serve` runs on: the configured backend behind the configured fail mode,
//! and the watcher that keeps every instance's emergency flag current.
//!
//! [`FailoverLimiter`] asks the primary (Redis) first. When it does not answer (its own timeouts
//! are short, so this takes at most `REDIS_TIMEOUT_MS`), `RATE_LIMIT_FAIL_MODE` decides:
//! `local` answers from this process's memory limiter, `open` lets the request through, `closed`
//! refuses it (503). The first failure is logged and audited as
//! `security.rate_limit_fallback`; while degraded, the primary is tried again at most once per
//! [`RETRY_INTERVAL`] (so a dead Redis costs one slow request per interval, not one per request),
//! and the first answer after an outage is logged and audited as the recovery.

use async_trait::async_trait;
use fab_core::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
use fab_core::clock::Clock;
use fab_core::config::FailMode;
use fab_core::lockout::FlagStore;
use fab_core::ratelimit::{
    Decision, EMERGENCY_MODE_KEY, KeyState, LimiterError, Rate, RateKey, RateLimiter,
    emergency_flag_is_on,
};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a degraded limiter tries its primary again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How often `fab serve` reads the emergency flag; an operator's switch reaches every instance
/// within this.
pub const EMERGENCY_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A primary limiter with a fail mode for when it does not answer.
pub struct FailoverLimiter {
    primary: Arc<dyn RateLimiter>,
    local: Arc<dyn RateLimiter>,
    mode: FailMode,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    /// Since when the primary has not answered, and when it was last tried.
    degraded: Mutex<Option<(Instant, Instant)>>,
}

impl FailoverLimiter {
    /// `primary` with `local` (memory) as the fallback for [`FailMode::Local`].
    pub fn new(
        primary: Arc<dyn RateLimiter>,
        local: Arc<dyn RateLimiter>,
        mode: FailMode,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            primary,
            local,
            mode,
            audit,
            clock,
            degraded: Mutex::new(None),
        }
    }

    /// Whether the primary is currently considered down.
    pub fn is_degraded(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Instant)>> {
        self.degraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether to try the primary now (always when healthy; once per interval when degraded).
    fn should_try_primary(&self) -> bool {
        let mut degraded = self.lock();
        match &mut *degraded {
            None => true,
            Some((_, last_try)) if last_try.elapsed() >= RETRY_INTERVAL => {
                *last_try = Instant::now();
                true
            }
            Some(_) => false,
        }
    }

    async fn note(&self, outcome: Outcome, detail: serde_json::Value) {
        let event = AuditEvent::new(
            AuditKind::SecurityRateLimitFallback,
            outcome,
            self.clock.now(),
        )
        .with_detail(detail);
        if let Err(error) = self.audit.record(&event).await {
            tracing::error!(%error, "could not audit a rate limiter state change");
        }
    }

    async fn primary_failed(&self, error: &LimiterError) {
        let first = {
            let mut degraded = self.lock();
            let first = degraded.is_none();
            if first {
                *degraded = Some((Instant::now(), Instant::now()));
            }
            first
        };
        if first {
            let mode = fail_mode_name(self.mode);
            tracing::error!(%error, mode, "shared rate limiter unavailable; applying the fail mode");
            self.note(
                Outcome::Failure,
                serde_json::json!({ "state": "unavailable", "fail_mode": mode, "error": error.to_string() }),
            )
            .await;
        }
    }

    async fn primary_answered(&self) {
        let was = self.lock().take();
        if let Some((since, _)) = was {
            let seconds = since.elapsed().as_secs();
            tracing::warn!(
                outage_seconds = seconds,
                "shared rate limiter answers again"
            );
            self.note(
                Outcome::Success,
                serde_json::json!({ "state": "recovered", "outage_seconds": seconds }),
            )
            .await;
        }
    }

    async fn fallback<T>(
        &self,
        error: LimiterError,
        local: impl std::future::Future<Output = Result<T, LimiterError>>,
        open: impl FnOnce() -> T,
    ) -> Result<T, LimiterError> {
        match self.mode {
            FailMode::Local => local.await,
            FailMode::Open => Ok(open()),
            FailMode::Closed => Err(error),
        }
    }
}

fn fail_mode_name(mode: FailMode) -> &'static str {
    match mode {
        FailMode::Local => "local",
        FailMode::Open => "open",
        FailMode::Closed => "closed",
    }
}

fn open_decision(rate: &Rate) -> Decision {
    Decision {
        allowed: true,
        remaining: rate.count(),
        retry_after: chrono::Duration::zero(),
        reset_after: chrono::Duration::zero(),
        new_tat: 0,
    }
}

#[async_trait]
impl RateLimiter for FailoverLimiter {
    async fn check(&self, key: &RateKey, rate: &Rate) -> Result<Decision, LimiterError> {
        let error = if self.should_try_primary() {
            match self.primary.check(key, rate).await {
                Ok(decision) => {
                    self.primary_answered().await;
                    return Ok(decision);
                }
                Err(error) => {
                    self.primary_failed(&error).await;
                    error
                }
            }
        } else {
            LimiterError::Unavailable("shared rate limiter is down".into())
        };
        self.fallback(error, self.local.check(key, rate), || open_decision(rate))
            .await
    }

    async fn peek(&self, key: &RateKey) -> Result<Option<KeyState>, LimiterError> {
        match self.primary.peek(key).await {
            Ok(state) => Ok(state),
            Err(_) if self.mode == FailMode::Local => self.local.peek(key).await,
            Err(error) => Err(error),
        }
    }

    async fn reset(&self, key: &RateKey) -> Result<bool, LimiterError> {
        let local = self.local.reset(key).await.unwrap_or(false);
        match self.primary.reset(key).await {
            Ok(primary) => Ok(primary || local),
            Err(error) => Err(error),
        }
    }

    async fn hottest(&self, limit: usize) -> Result<Vec<KeyState>, LimiterError> {
        self.primary.hottest(limit).await
    }

    async fn emergency(&self) -> Result<bool, LimiterError> {
        self.primary.emergency().await
    }

    async fn set_emergency(&self, on: bool) -> Result<(), LimiterError> {
        self.primary.set_emergency(on).await
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.primary.ping().await
    }
}

/// Where the emergency flag is read: the limiter itself (Redis: the `rate_limit_emergency_mode`
/// key every instance shares) or, for the memory limiter, the database, so that
/// `fab rate-limit emergency on` from any shell reaches the server.
#[derive(Clone)]
pub enum EmergencySource {
    /// The shared limiter's own flag.
    Limiter(Arc<dyn RateLimiter>),
    /// The database flag of the same name.
    Database(Arc<dyn FlagStore>),
}

impl EmergencySource {
    /// The flag's current value.
    pub async fn read(&self) -> Result<bool, String> {
        match self {
            EmergencySource::Limiter(limiter) => {
                limiter.emergency().await.map_err(|e| e.to_string())
            }
            EmergencySource::Database(flags) => flags
                .flag(EMERGENCY_MODE_KEY)
                .await
                .map(|value| emergency_flag_is_on(value.as_deref()))
                .map_err(|e| e.to_string()),
        }
    }
}

/// Keeps `flag` equal to the source's emergency flag, reading it every
/// [`EMERGENCY_POLL_INTERVAL`]; each change is logged and audited as `security.emergency_mode`.
/// A source that does not answer leaves the flag as it was.
pub async fn watch_emergency(
    source: EmergencySource,
    flag: Arc<AtomicBool>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
) {
    let mut ticks = tokio::time::interval(EMERGENCY_POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        ticks.tick().await;
        match source.read().await {
            Ok(on) => {
                unreadable = false;
                if flag.swap(on, Ordering::SeqCst) != on {
                    if on {
                        tracing::warn!("emergency rate limits ON");
                    } else {
                        tracing::warn!("emergency rate limits off");
                    }
                    let event = AuditEvent::new(
                        AuditKind::SecurityEmergencyMode,
                        Outcome::Success,
                        clock.now(),
                    )
                    .with_detail(serde_json::json!({ "emergency": on }));
                    if let Err(error) = audit.record(&event).await {
                        tracing::error!(%error, "could not audit the emergency mode change");
                    }
                }
            }
            Err(error) => {
                if !unreadable {
                    tracing::warn!(%error, "emergency flag unreadable; keeping the current mode");
                }
                unreadable = true;
            }
        }
    }
}
