//! What the binary's integration tests share: [`Site`], one operator's machine — a temporary
//! directory with an SQLite database and the only environment the `fab` binary sees.

// Each test binary uses its own subset of these helpers.
#![allow(
    dead_code,
    reason = "shared by several test binaries, each using some of it"
)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One operator's machine: a directory with a database and the environment the binary sees.
pub struct Site {
    /// The machine's directory (working directory of every command).
    pub dir: tempfile::TempDir,
    /// The environment, in place of the process's (which is cleared).
    pub env: Vec<(String, String)>,
}

impl Site {
    /// A fresh directory, an SQLite database in it, cheap password hashing and quiet logs.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            (
                "FAB_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("fab.db").display()),
            ),
            ("PASSWORD_HASH_MEMORY_KIB".into(), "1024".into()),
            ("PASSWORD_HASH_ITERATIONS".into(), "1".into()),
            ("FAB_LOG".into(), "warn".into()),
            ("USER".into(), "tester".into()),
        ];
        Self { dir, env }
    }

    /// Sets (or replaces) an environment variable.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.unset(name);
        self.env.push((name.into(), value.into()));
        self
    }

    /// Removes an environment variable.
    pub fn unset(&mut self, name: &str) -> &mut Self {
        self.env.retain(|(existing, _)| existing != name);
        self
    }

    /// A path inside the machine's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.path("fab.db")
    }

    /// `fab <args>` with this machine's environment and no terminal on stdin.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fab"));
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }
}
