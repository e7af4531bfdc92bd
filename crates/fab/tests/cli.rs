//! The real `fab` binary against a fresh SQLite database in a temporary directory.
//!
//! Each test gets its own directory, database and environment (the process environment is
//! cleared), runs commands the way an operator would (no terminal on stdin), and checks stdout,
//! stderr, the exit status and, where a command must have changed stored state, the database.

// Helpers outside #[test] functions unwrap too; clippy.toml's allow-unwrap-in-tests covers only
// the test functions themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot unwrap should fail loudly"
)]

mod support;

use chrono::Utc;
use fab_core::config::DatabaseUrl;
use fab_core::random::OsRandom;
use fab_core::session::{SessionPolicy, SessionStage, SessionStore as _, SessionToken};
use fab_core::store::SecurityStore as _;
use fab_core::user::UserId;
use fab_store::{Database, SqlStore};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::Site;

const GOOD_PASSWORD: &str = "tranquil-otter-42";

impl Site {
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "fab {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command with `--json` that must succeed; its parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let stdout = self.ok(&with_json);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs a command that must fail with status 1 and one `error:` line on stderr; that line.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "fab {args:?} should fail with 1:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
        errors[0].to_owned()
    }

    fn create_user(&self, username: &str, roles: &[&str]) -> Value {
        let email = format!("{username}@example.com");
        let mut args = vec![
            "create-user",
            "--username",
            username,
            "--firstname",
            "Test",
            "--lastname",
            "User",
            "--email",
            &email,
            "--password",
            GOOD_PASSWORD,
        ];
        for role in roles {
            args.extend(["--role", role]);
        }
        self.json(&args)
    }

    async fn store(&self) -> SqlStore {
        let url = DatabaseUrl::Sqlite {
            path: self.database_path(),
        };
        Database::connect(&url).await.unwrap().store()
    }

    /// Gives `user_id` `count` live sessions, as logins through the web would.
    fn open_sessions(&self, user_id: i64, count: usize) {
        block_on(async {
            let store = self.store().await;
            for _ in 0..count {
                let token = SessionToken::generate(&OsRandom);
                let record = SessionPolicy::default().new_record(
                    &token,
                    UserId(user_id),
                    SessionStage::Authenticated,
                    Utc::now(),
                    Some("127.0.0.1".into()),
                    None,
                );
                store.create(&record).await.unwrap();
            }
        });
    }

    fn session_count(&self, user_id: i64) -> usize {
        block_on(async {
            self.store()
                .await
                .list_for_user(UserId(user_id))
                .await
                .unwrap()
                .len()
        })
    }

    /// The newest audit records of `kind`: (actor name, target).
    fn audit(&self, kind: &str) -> Vec<(String, String)> {
        block_on(async {
            let events = self
                .store()
                .await
                .recent_audit(50, Some(kind))
                .await
                .unwrap();
            events
                .into_iter()
                .map(|stored| {
                    (
                        stored.event.actor.map(|a| a.name).unwrap_or_default(),
                        stored.event.target.unwrap_or_default(),
                    )
                })
                .collect()
        })
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn id_of(user: &Value) -> i64 {
    user["id"].as_i64().unwrap()
}

fn users(site: &Site) -> Vec<Value> {
    site.json(&["list-users"]).as_array().unwrap().clone()
}

fn role_names(user: &Value) -> Vec<String> {
    user["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|role| role["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn db_upgrade_makes_the_schema_current() {
    let site = Site::new();
    let before = site.json(&["db", "status"]);
    assert_eq!(before["backend"], "sqlite");
    assert_eq!(before["current"], false);
    assert!(!before["pending"].as_array().unwrap().is_empty());

    let applied = site.json(&["db", "upgrade"]);
    assert_eq!(applied["applied"], before["pending"]);

    let after = site.json(&["db", "status"]);
    assert_eq!(after["current"], true);
    assert_eq!(after["pending"], Value::Array(Vec::new()));
    assert_eq!(after["applied"], before["pending"]);

    let again = site.ok(&["db", "upgrade"]);
    assert!(again.contains("nothing to apply"), "{again}");
    let status = site.ok(&["db", "status"]);
    assert!(status.contains("schema is current"), "{status}");
}

#[test]
fn create_admin_creates_an_active_admin_and_audits_it() {
    let site = Site::new();
    let admin = site.json(&[
        "create-admin",
        "--username",
        "root",
        "--email",
        "root@example.com",
        "--password",
        GOOD_PASSWORD,
    ]);
    assert_eq!(admin["username"], "root");
    assert_eq!(admin["active"], true);
    assert_eq!(role_names(&admin), ["Admin"]);
    assert!(admin.get("password_hash").is_none(), "{admin}");

    let listed = users(&site);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["username"], "root");
    let table = site.ok(&["list-users"]);
    assert!(
        table.contains("root@example.com") && table.contains("Admin"),
        "{table}"
    );

    let audit = site.audit("admin.user_create");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, "cli:tester");
    assert!(audit[0].1.contains("root"), "{audit:?}");
}

#[test]
fn create_user_with_roles_and_a_duplicate_is_refused() {
    let site = Site::new();
    let user = site.create_user("bob", &["Public"]);
    assert_eq!(role_names(&user), ["Public"]);

    let error = site.fails(&[
        "create-user",
        "--username",
        "bob",
        "--firstname",
        "Other",
        "--lastname",
        "Bob",
        "--email",
        "other-bob@example.com",
        "--role",
        "Public",
        "--password",
        GOOD_PASSWORD,
    ]);
    assert!(error.to_lowercase().contains("username"), "{error}");
    assert_eq!(users(&site).len(), 1);

    let error = site.fails(&[
        "create-user",
        "--username",
        "carol",
        "--firstname",
        "Carol",
        "--lastname",
        "C",
        "--email",
        "carol@example.com",
        "--role",
        "NoSuchRole",
        "--password",
        GOOD_PASSWORD,
    ]);
    assert!(error.contains("no role named `NoSuchRole`"), "{error}");
    assert!(
        error.contains("Admin") && error.contains("Public"),
        "{error}"
    );
}

#[test]
fn a_missing_password_without_a_terminal_is_an_error_not_a_prompt() {
    let site = Site::new();
    let error = site.fails(&[
        "create-user",
        "--username",
        "dave",
        "--firstname",
        "Dave",
        "--lastname",
        "D",
        "--email",
        "dave@example.com",
        "--role",
        "Public",
    ]);
    assert!(error.contains("--password is required"), "{error}");
    assert!(users(&site).is_empty());
}

#[test]
fn create_user_checks_the_password_policy() {
    let site = Site::new();
    let error = site.fails(&[
        "create-user",
        "--username",
        "erin",
        "--firstname",
        "Erin",
        "--lastname",
        "E",
        "--email",
        "erin@example.com",
        "--role",
        "Public",
        "--password",
        "password123",
    ]);
    assert!(error.contains("password:"), "{error}");
    assert!(users(&site).is_empty());
}

#[test]
fn user_disable_ends_sessions_and_user_enable_restores_access() {
    let site = Site::new();
    let alice = id_of(&site.create_user("alice", &["Public"]));
    let bob = id_of(&site.create_user("bob", &["Public"]));
    site.open_sessions(alice, 2);
    site.open_sessions(bob, 1);

    let change = site.json(&["user-disable", "--username", "alice"]);
    assert_eq!(change["active"], false);
    assert_eq!(change["was_active"], true);
    assert_eq!(change["sessions_ended"], 2);
    assert_eq!(site.session_count(alice), 0);
    assert_eq!(
        site.session_count(bob),
        1,
        "other users keep their sessions"
    );
    let listed = users(&site);
    let alice_row = listed.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(alice_row["active"], false);
    assert_eq!(site.audit("admin.user_disable")[0].0, "cli:tester");

    let line = site.ok(&["user-enable", "--username", "alice"]);
    assert!(line.contains("enabled `alice`"), "{line}");
    let listed = users(&site);
    let alice_row = listed.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(alice_row["active"], true);
    assert_eq!(site.audit("admin.user_enable").len(), 1);

    let error = site.fails(&["user-disable", "--username", "mallory"]);
    assert!(error.contains("no user with username `mallory`"), "{error}");
}

#[test]
fn clear_sessions_ends_one_users_or_everyones() {
    let site = Site::new();
    let alice = id_of(&site.create_user("alice", &["Public"]));
    let bob = id_of(&site.create_user("bob", &["Public"]));
    let carol = id_of(&site.create_user("carol", &["Public"]));
    site.open_sessions(alice, 2);
    site.open_sessions(bob, 3);
    site.open_sessions(carol, 1);

    let line = site.ok(&["clear-sessions", "--username", "alice"]);
    assert!(line.contains("ended 2 session(s) of `alice`"), "{line}");
    assert_eq!(site.session_count(alice), 0);
    assert_eq!(site.session_count(bob), 3);

    let by_id = site.json(&["clear-sessions", "--user-id", &bob.to_string()]);
    assert_eq!(by_id["sessions_ended"], 3);
    assert_eq!(site.session_count(carol), 1);

    site.open_sessions(alice, 1);
    let all = site.json(&["clear-sessions", "--all"]);
    assert_eq!(all["sessions_ended"], 2);
    assert_eq!(site.session_count(alice) + site.session_count(carol), 0);
    assert_eq!(site.audit("admin.session_revoke").len(), 3);

    let error = site.fails(&["clear-sessions", "--user-id", "9999"]);
    assert!(error.contains("no user with id 9999"), "{error}");
    let usage = site.run(&["clear-sessions", "--all", "--username", "alice"]);
    assert_eq!(usage.status.code(), Some(2), "two scopes are a usage error");
}

#[test]
fn reset_password_refuses_a_short_password_and_ends_sessions() {
    let site = Site::new();
    let alice = id_of(&site.create_user("alice", &["Public"]));
    site.open_sessions(alice, 2);

    let error = site.fails(&[
        "reset-password",
        "--username",
        "alice",
        "--password",
        "short",
    ]);
    assert!(
        error.contains("password: must be at least 12 characters"),
        "{error}"
    );
    assert_eq!(
        site.session_count(alice),
        2,
        "a refused reset changes nothing"
    );
    assert!(site.audit("admin.password_reset").is_empty());

    let reset = site.json(&[
        "reset-password",
        "--username",
        "alice",
        "--password",
        "a-brand-new-secret-9",
    ]);
    assert_eq!(reset["sessions_ended"], 2);
    assert_eq!(site.session_count(alice), 0);
    assert_eq!(site.audit("admin.password_reset").len(), 1);
}

const VIEWER_EXPORT: &str = r#"[
  {
    "name": "Viewer",
    "permissions": [
      {"permission": {"name": "can_list"}, "view_menu": {"name": "ContactModelView"}},
      {"permission": {"name": "can_show"}, "view_menu": {"name": "ContactModelView"}}
    ]
  }
]"#;

fn grants_of(export: &Value, role: &str) -> Vec<(String, String)> {
    let role = export
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == role)
        .unwrap_or_else(|| panic!("no role {role} in {export}"));
    let mut grants: Vec<(String, String)> = role["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["permission"]["name"].as_str().unwrap().to_owned(),
                g["view_menu"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    grants.sort();
    grants
}

#[test]
fn export_and_import_roles_round_trip_in_flask_appbuilders_format() {
    let site = Site::new();
    let source = site.path("viewer.json");
    std::fs::write(&source, VIEWER_EXPORT).unwrap();
    let imported = site.json(&["import-roles", "--path", source.to_str().unwrap()]);
    assert_eq!(imported["roles"], 1);
    assert_eq!(site.audit("admin.permission_change")[0].0, "cli:tester");

    let exported_path = site.path("exported.json");
    let line = site.ok(&["export-roles", "--path", exported_path.to_str().unwrap()]);
    assert!(line.contains("exported"), "{line}");
    let exported: Value =
        serde_json::from_str(&std::fs::read_to_string(&exported_path).unwrap()).unwrap();
    assert_eq!(
        grants_of(&exported, "Viewer"),
        [
            ("can_list".to_owned(), "ContactModelView".to_owned()),
            ("can_show".to_owned(), "ContactModelView".to_owned())
        ]
    );

    // The export imports into another site and exports the same again.
    let other = Site::new();
    other.ok(&["import-roles", "--path", exported_path.to_str().unwrap()]);
    let again_path = other.path("again.json");
    other.ok(&["export-roles", "--path", again_path.to_str().unwrap()]);
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(&again_path).unwrap()).unwrap();
    assert_eq!(grants_of(&again, "Viewer"), grants_of(&exported, "Viewer"));

    let junk = site.path("junk.json");
    std::fs::write(&junk, "{\"name\": \"not an array\"}").unwrap();
    let error = site.fails(&["import-roles", "--path", junk.to_str().unwrap()]);
    assert!(
        error.contains("junk.json") && error.contains("roles export"),
        "{error}"
    );
}

#[test]
fn security_cleanup_removes_undeclared_permissions() {
    let site = Site::new();
    let source = site.path("viewer.json");
    std::fs::write(&source, VIEWER_EXPORT).unwrap();
    site.ok(&["import-roles", "--path", source.to_str().unwrap()]);

    let report = site.json(&["security-cleanup"]);
    let removed: Vec<String> = report["permission_views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g["permission"].as_str().unwrap(),
                g["view_menu"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        removed.contains(&"can_list ContactModelView".to_owned()),
        "{report}"
    );
    assert!(
        report["view_menus"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ContactModelView"))
    );

    let again = site.ok(&["security-cleanup"]);
    assert!(again.contains("nothing to remove"), "{again}");
}

#[test]
fn config_check_names_an_unknown_key_and_exits_1() {
    let site = Site::new();
    let file = site.path("fab.toml");
    std::fs::write(&file, "APP_NAME = \"Contacts\"\nSECRET_KYE = \"typo\"\n").unwrap();
    let output = site.run(&["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("SECRET_KYE: unknown key"), "{stdout}");
    assert!(
        stdout.contains("Contacts"),
        "the effective table is shown too: {stdout}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: 1 configuration problem(s)"),
        "{stderr}"
    );

    // Any other command refuses the same configuration, naming the key.
    let error = site.fails(&["list-users"]);
    assert!(error.contains("SECRET_KYE"), "{error}");
}

#[test]
fn config_check_in_production_refuses_a_short_secret_key() {
    let mut site = Site::new();
    site.set("FAB_ENV", "production")
        .set("SECRET_KEY", "too-short");
    let output = site.run(&["config", "check", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["key"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        problems.contains(&"SECRET_KEY: 9 characters, production needs at least 32".to_owned()),
        "{problems:?}"
    );
    // The test's cheap hash settings are refused in production as well.
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("PASSWORD_HASH_MEMORY_KIB")),
        "{problems:?}"
    );
    let secret = report["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "SECRET_KEY")
        .unwrap();
    assert_eq!(secret["value"], "[redacted]");
    assert_eq!(secret["source"], "env SECRET_KEY");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("too-short"));
}

#[test]
fn config_check_passes_in_development_and_keeps_the_generated_key() {
    let site = Site::new();
    let report = site.json(&["config", "check"]);
    assert_eq!(report["valid"], true);
    let secret = report["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "SECRET_KEY")
        .unwrap();
    assert!(
        secret["source"].as_str().unwrap().starts_with("generated"),
        "{secret}"
    );
    assert!(site.path("data/secret_key").is_file());
}

#[test]
fn a_malformed_fab_toml_is_named_with_its_line() {
    let site = Site::new();
    let file = site.path("fab.toml");
    std::fs::write(&file, "APP_NAME = \"ok\"\nSESSION_TIMEOUT = = 3600\n").unwrap();
    for command in [&["config", "check"][..], &["list-users"][..]] {
        let error = site.fails(command);
        assert!(error.starts_with("error: fab.toml:2:"), "{error}");
    }
    let explicit = site.fails(&["--config", file.to_str().unwrap(), "config", "check"]);
    assert!(
        explicit.starts_with(&format!("error: {}:2:", file.display())),
        "{explicit}"
    );
}

#[test]
fn version_prints_the_package_version() {
    let site = Site::new();
    assert_eq!(
        site.ok(&["version"]).trim(),
        format!("fab {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        site.json(&["version"])["version"],
        env!("CARGO_PKG_VERSION")
    );
}

/// Starts `fab serve` on a free port; the child and the stdout lines up to the listening line.
fn start_server(site: &Site) -> (std::process::Child, Vec<String>) {
    let mut child = site
        .command(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("is listening on");
                lines.push(line);
                if done {
                    return (child, lines);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "fab serve did not start: {lines:?}\nstderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

fn stop_server(mut child: std::process::Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fab serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "serve exited with {}",
        output.status
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_prints_the_url_and_the_generated_admin_password_once() {
    let site = Site::new();
    let (child, lines) = start_server(&site);
    let listening = lines.last().unwrap();
    assert!(listening.contains("open http://127.0.0.1:"), "{listening}");
    let credentials = lines
        .iter()
        .find(|line| line.contains("Password:"))
        .unwrap_or_else(|| panic!("no credentials in {lines:?}"));
    let password = credentials.split("Password: ").nth(1).unwrap().trim();
    assert_eq!(password.chars().count(), 20, "{credentials}");
    let stderr = stop_server(child);
    assert!(stderr.contains("development mode"), "{stderr}");

    let admins = users(&site);
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0]["username"], "admin");
    assert_eq!(role_names(&admins[0]), ["Admin"]);

    let (child, lines) = start_server(&site);
    assert!(
        !lines.iter().any(|line| line.contains("Password")),
        "{lines:?}"
    );
    stop_server(child);
    assert_eq!(users(&site).len(), 1);
}

#[test]
fn serve_mints_no_admin_when_users_exist_but_every_admin_is_disabled() {
    let site = Site::new();
    site.create_user("alice", &["Admin"]);
    site.ok(&["user-disable", "--username", "alice"]);
    let (child, lines) = start_server(&site);
    assert!(
        !lines.iter().any(|line| line.contains("Password")),
        "no credentials printed after an incident: {lines:?}"
    );
    let stderr = stop_server(child);
    assert!(stderr.contains("fab create-admin"), "{stderr}");
    let listed = users(&site);
    assert_eq!(listed.len(), 1, "no admin account was created: {listed:?}");
}

#[test]
fn serve_refuses_a_weak_configured_admin_password() {
    let mut site = Site::new();
    site.set("FAB_ADMIN_PASSWORD", "admin");
    let error = site.fails(&["serve", "--bind", "127.0.0.1:0"]);
    assert!(
        error.contains("FAB_ADMIN_PASSWORD: must be at least 12 characters"),
        "{error}"
    );
    assert!(users(&site).is_empty());
}

#[test]
fn serve_in_production_never_migrates_and_names_the_command() {
    let mut site = Site::new();
    site.set("FAB_ENV", "production")
        .set("SECRET_KEY", &"k".repeat(48))
        .set("TRUSTED_PROXIES", "127.0.0.1")
        .set("PASSWORD_HASH_MEMORY_KIB", "19456")
        .set("PASSWORD_HASH_ITERATIONS", "2");
    let error = site.fails(&["serve", "--bind", "127.0.0.1:0"]);
    assert!(error.contains("`fab db upgrade`"), "{error}");
    assert!(error.contains("pending migration"), "{error}");
    let status = site.json(&["db", "status"]);
    assert_eq!(status["current"], false, "serve must not have run DDL");
    assert!(status["applied"].as_array().unwrap().is_empty());
}

/// A fresh PostgreSQL database on the machine's server (`FAB_TEST_POSTGRES_URL`), dropped after
/// the test. A server that cannot be reached fails the test: it never skips.
struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    fn create() -> Self {
        let admin_url = std::env::var("FAB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("fab_cli_{}_{nanos}", std::process::id());
        let (server, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        let database = Self {
            admin_url,
            name,
            url,
        };
        database.psql(&format!("CREATE DATABASE {}", database.name));
        database
    }

    fn psql(&self, statement: &str) {
        let output = Command::new("psql")
            .args([&self.admin_url, "-v", "ON_ERROR_STOP=1", "-qc", statement])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql {statement}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

#[test]
fn on_postgresql_serve_never_migrates_even_in_development_and_commands_share_one_code_path() {
    let database = PostgresDatabase::create();
    let mut site = Site::new();
    site.set("DATABASE_URL", &database.url);

    let error = site.fails(&["serve", "--bind", "127.0.0.1:0"]);
    assert!(
        error.contains("postgresql schema is not current"),
        "{error}"
    );
    assert!(error.contains("`fab db upgrade`"), "{error}");
    let status = site.json(&["db", "status"]);
    assert_eq!(status["backend"], "postgresql");
    assert!(status["applied"].as_array().unwrap().is_empty(), "{status}");
    let error = site.fails(&["list-users"]);
    assert!(
        error.contains("`fab db upgrade`"),
        "admin commands refuse too: {error}"
    );

    let applied = site.json(&["db", "upgrade"]);
    assert_eq!(applied["applied"], status["pending"]);
    let alice = site.create_user("alice", &["Public"]);
    assert_eq!(role_names(&alice), ["Public"]);
    let disabled = site.json(&["user-disable", "--username", "alice"]);
    assert_eq!(disabled["active"], false);
    let (child, lines) = start_server(&site);
    assert!(!lines.iter().any(|l| l.contains("Password:")), "{lines:?}");
    stop_server(child);
    assert_eq!(users(&site).len(), 1, "users exist: no first-run admin");
}

#[test]
fn logs_go_to_stderr_as_json_lines_when_asked_and_stdout_keeps_the_result() {
    let mut site = Site::new();
    site.set("FAB_LOG", "info").set("FAB_LOG_FORMAT", "json");
    let output = site.run(&["db", "upgrade", "--json"]);
    assert!(output.status.success());
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!result["applied"].as_array().unwrap().is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.trim().is_empty(), "migrations log at info");
    for line in stderr.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["level"].is_string(), "{line}");
    }
    assert!(!stderr.contains('\u{1b}'), "no colour codes off a terminal");
}

/// Runs `fab args` under `script`, so stdin is a terminal, typing `typed` into it.
fn run_at_a_terminal(site: &Site, args: &[&str], typed: &str) -> Output {
    let command_line = std::iter::once(env!("CARGO_BIN_EXE_fab"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &command_line, "/dev/null"])
        .env_clear()
        .envs(site.env.iter().map(|(k, v)| (k, v)))
        .current_dir(site.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_terminal_is_asked_for_a_missing_password_twice() {
    let site = Site::new();
    site.create_user("alice", &["Public"]);

    let differ = run_at_a_terminal(
        &site,
        &["reset-password", "--username", "alice"],
        "another-good-secret-1\nanother-good-secret-2\n",
    );
    let screen = String::from_utf8_lossy(&differ.stdout);
    assert_eq!(differ.status.code(), Some(1), "{screen}");
    assert!(screen.contains("Repeat for confirmation"), "{screen}");
    assert!(screen.contains("the two passwords differ"), "{screen}");
    assert!(site.audit("admin.password_reset").is_empty());

    let same = run_at_a_terminal(
        &site,
        &["reset-password", "--username", "alice"],
        "another-good-secret-1\nanother-good-secret-1\n",
    );
    let screen = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{screen}");
    assert!(screen.contains("password of `alice` reset"), "{screen}");
    assert_eq!(site.audit("admin.password_reset").len(), 1);
}

#[test]
fn rate_limit_status_and_emergency_mode_through_the_database_with_the_memory_limiter() {
    let mut site = Site::new();
    site.set("RATE_LIMIT_DEFAULT", "50/hour");
    let status = site.json(&["rate-limit", "status"]);
    assert_eq!(status["backend"], "memory");
    assert_eq!(status["reachable"], true);
    assert_eq!(status["emergency"], false);
    assert_eq!(status["policies"][0]["limit"], "50/hour");
    assert_eq!(status["policies"][0]["emergency_limit"], "5/hour");
    let human = site.ok(&["rate-limit", "status"]);
    assert!(
        human.contains("memory limiter keeps its counters inside each server process"),
        "{human}"
    );

    let on = site.ok(&["rate-limit", "emergency", "on"]);
    assert!(on.contains("emergency rate limits ON"), "{on}");
    assert_eq!(site.json(&["rate-limit", "status"])["emergency"], true);
    assert_eq!(site.audit("security.emergency_mode")[0].0, "cli:tester");
    site.ok(&["rate-limit", "emergency", "off"]);
    assert_eq!(site.json(&["rate-limit", "status"])["emergency"], false);

    let error = site.fails(&[
        "rate-limit",
        "reset",
        "--key",
        "rate_limit:login:user:alice",
    ]);
    assert!(error.contains("inside each server process"), "{error}");
    let output = site.run(&["rate-limit", "emergency", "maybe"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("possible values: on, off"));
}

#[test]
fn rate_limit_status_names_an_unreachable_redis_quickly() {
    let mut site = Site::new();
    site.set("RATE_LIMIT_BACKEND", "redis")
        .set("REDIS_URL", "redis://127.0.0.1:1/0");
    let started = Instant::now();
    let status = site.json(&["rate-limit", "status"]);
    assert_eq!(status["backend"], "redis");
    assert_eq!(status["reachable"], false);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn user_unlock_clears_the_lockout_and_is_audited() {
    let site = Site::new();
    site.create_user("alice", &["Public"]);
    let line = site.ok(&["user-unlock", "--username", "alice"]);
    assert!(line.contains("was not locked"), "{line}");
    assert_eq!(site.audit("admin.user_unlock").len(), 1);
    let error = site.fails(&["user-unlock", "--username", "nobody"]);
    assert!(error.contains("no user with username `nobody`"), "{error}");
}

/// A TLS-only `redis-server` on a free port with a fresh self-signed certificate (openssl).
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    /// The CA certificate clients must trust.
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(
            path("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let made = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl makes the test certificates");
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
        };
        // A CA of the test's own, and a leaf certificate for localhost signed by it.
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=fab test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let (leaf, key) = (path("cert.pem"), path("key.pem"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&leaf)
            .arg("--tls-key-file")
            .arg(&key)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (with TLS) starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            ca: path("ca.pem"),
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rediss_urls_and_redis_ssl_speak_tls_and_check_the_certificate() {
    let redis = TlsRedis::start();
    let mut site = Site::new();
    site.set("RATE_LIMIT_BACKEND", "redis")
        .set("REDIS_TIMEOUT_MS", "2000")
        .set("SSL_CERT_FILE", &redis.ca.display().to_string());
    site.set("REDIS_URL", &format!("rediss://localhost:{}/0", redis.port));
    let human = site.ok(&["rate-limit", "status"]);
    assert!(
        human.contains("backend: redis (reachable)"),
        "rediss://: {human}"
    );
    site.set("REDIS_URL", &format!("redis://localhost:{}/0", redis.port))
        .set("REDIS_SSL", "true");
    assert_eq!(
        site.json(&["rate-limit", "status"])["reachable"],
        true,
        "REDIS_SSL=true"
    );
    site.set("REDIS_SSL", "false");
    assert_eq!(
        site.json(&["rate-limit", "status"])["reachable"],
        false,
        "plain text to a TLS port"
    );
    // A certificate nobody vouches for is refused.
    site.unset("SSL_CERT_FILE");
    site.set("REDIS_URL", &format!("rediss://localhost:{}/0", redis.port));
    assert_eq!(
        site.json(&["rate-limit", "status"])["reachable"],
        false,
        "unknown certificate"
    );
    let on = site.run(&["rate-limit", "emergency", "on"]);
    assert_eq!(
        on.status.code(),
        Some(1),
        "a switch that cannot reach Redis fails loudly"
    );
}

#[test]
fn rate_limit_reset_forgets_a_key_on_redis() {
    // Database 13 of the machine's Redis is this test's alone; the key is unique to it too.
    let url = "redis://127.0.0.1:6379/13";
    let key = format!("rate_limit:login:user:cli-reset-{}", std::process::id());
    let seeded = Command::new("redis-cli")
        .args([
            "-n", "13", "HSET", &key, "tat", "1", "interval", "1", "burst", "5",
        ])
        .output()
        .expect("redis-cli runs (the machine's Redis must answer)");
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let mut site = Site::new();
    site.set("RATE_LIMIT_BACKEND", "redis")
        .set("REDIS_URL", url);
    let reset = site.json(&["rate-limit", "reset", "--key", &key]);
    assert_eq!(reset["had_state"], true);
    let audited = site.audit("admin.rate_limit_reset");
    assert_eq!(audited[0], ("cli:tester".to_owned(), key.clone()));
    let again = site.ok(&["rate-limit", "reset", "--key", &key]);
    assert!(again.contains("held no state"), "{again}");
    let error = site.fails(&["rate-limit", "reset", "--key", "not a key"]);
    assert!(error.contains("not a rate-limit key"), "{error}");
}

#[test]
fn serve_refuses_a_broken_template_override_naming_the_file() {
    let mut site = Site::new();
    let folder = site.path("templates");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("login.html"), "{% block content %}unclosed").unwrap();
    site.set("FAB_TEMPLATE_FOLDER", &folder.display().to_string());
    let output = site.run(&["serve", "--bind", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("template login.html: syntax error"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("listening") && !stdout.contains("Password"),
        "{stdout}"
    );
    assert!(users(&site).is_empty(), "no admin was created");
}
