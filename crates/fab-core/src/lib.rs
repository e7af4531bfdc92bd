//! fab's domain, kept pure: users, roles, permissions and their evaluation, password hashing and
//! policy, session rules, audit events, configuration types and validation, and the traits every
//! storage backend implements.
//!
//! Nothing here performs IO, speaks HTTP or SQL, or reads the environment: time comes in through
//! [`clock::Clock`] and randomness through [`random::RandomSource`], so every expiry and window is
//! testable without sleeping.

pub mod audit;
pub mod clock;
pub mod config;
pub mod error;
pub mod lockout;
pub mod net;
pub mod password;
pub mod random;
pub mod ratelimit;
pub mod rbac;
pub mod secret;
pub mod session;
pub mod store;
pub mod user;

pub use error::{StoreError, ValidationError};
pub use secret::Secret;
