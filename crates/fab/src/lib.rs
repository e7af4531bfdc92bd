//! The `fab` binary's library: configuration loading ([`settings`], the only code in the
//! workspace that reads the environment or a file), backend wiring and the server ([`app`], the
//! only place a concrete backend is chosen), how connections reach it ([`listener`]: the accept
//! loop, its limits and graceful shutdown; [`tls`]: the certificate and its reloading), operator
//! actions on accounts ([`accounts`]), logging ([`logging`]) and the command line ([`cli`]).
//!
//! The binary in `main.rs` only parses the arguments and hands them, with the process
//! environment, to [`cli::run`].

pub mod accounts;
pub mod app;
pub mod cli;
pub mod limiter;
pub mod listener;
pub mod logging;
pub mod settings;
pub mod tls;
