//! The `fab` binary's library: configuration loading ([`settings`], the only code in the
//! workspace that reads the environment or a file), backend wiring and the server ([`app`], the
//! only place a concrete backend is chosen), operator actions on accounts ([`accounts`]) and
//! logging ([`logging`]).

pub mod accounts;
pub mod app;
pub mod logging;
pub mod settings;
