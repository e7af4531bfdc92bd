//! The `fab` binary's library: configuration loading ([`settings`], the only code in the
//! workspace that reads the environment or a file) and logging ([`logging`]).

pub mod logging;
pub mod settings;
