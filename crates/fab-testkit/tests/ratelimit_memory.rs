//! The rate-limiter conformance suite on the in-memory limiter (on a manual clock: no check
//! sleeps).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use fab_testkit::ratelimit_conformance::RateLimiterUnderTest;

fab_testkit::rate_limiter_conformance!(async { RateLimiterUnderTest::memory() });
