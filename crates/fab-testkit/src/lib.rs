//! Test support for fab: real servers on 127.0.0.1:0 with a fresh database, a manual clock and
//! seeded randomness, and the conformance suites every store backend must pass.
//!
//! Tests that need PostgreSQL read `FAB_TEST_POSTGRES_URL` (default: the machine's
//! `postgres://postgres@127.0.0.1:5432/test`) and fail, never skip, when it cannot be reached.

pub mod client;
pub mod conformance;
pub mod database;
pub mod random;
pub mod ratelimit_conformance;
pub mod server;

pub use client::TestClient;
pub use server::{ADMIN_PASSWORD, ADMIN_USERNAME, Backend, TestServer, TestServerOptions};
