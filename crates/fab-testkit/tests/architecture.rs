//! The checkable invariants of ARCHITECTURE.md: dependency direction between crates, which crate
//! may know HTTP, SQL or the environment, and where time and randomness may come from.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("metadata is JSON")
}

/// Normal (non-dev) dependency names of a workspace package.
fn dependencies(metadata: &Value, package: &str) -> Vec<String> {
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("package {package} in the workspace"));
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

const HTTP: &[&str] = &["axum", "tower", "tower-http", "http", "hyper", "reqwest"];
const SQL: &[&str] = &["sea-orm", "sea-orm-migration", "sqlx"];
const REDIS: &[&str] = &["redis"];

#[test]
fn dependencies_point_inward() {
    let metadata = metadata();
    let fab_crates = |deps: &[String]| -> Vec<String> {
        deps.iter()
            .filter(|d| d.starts_with("fab"))
            .cloned()
            .collect()
    };
    let core = dependencies(&metadata, "fab-core");
    assert!(
        fab_crates(&core).is_empty(),
        "fab-core depends on {:?}",
        fab_crates(&core)
    );
    for inner in ["fab-store", "fab-redis", "fab-web"] {
        let deps = dependencies(&metadata, inner);
        assert_eq!(
            fab_crates(&deps),
            ["fab-core"],
            "{inner} may depend on fab-core only"
        );
    }
}

#[test]
fn only_fab_web_knows_http_and_only_fab_store_knows_sql() {
    let metadata = metadata();
    let forbidden: &[(&str, &[&[&str]])] = &[
        ("fab-core", &[HTTP, SQL, REDIS, &["tokio"]]),
        ("fab-store", &[HTTP, REDIS]),
        ("fab-redis", &[HTTP, SQL]),
        ("fab-web", &[SQL, REDIS]),
    ];
    for (package, groups) in forbidden {
        let deps = dependencies(&metadata, package);
        for group in *groups {
            for name in *group {
                assert!(
                    !deps.iter().any(|d| d == name),
                    "{package} must not depend on {name}"
                );
            }
        }
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Lines of library source (tests at the bottom of a file excluded) containing `needle`.
fn occurrences(crate_dir: &str, needle: &str, allowed_file: Option<&str>) -> Vec<String> {
    let src = workspace_root().join("crates").join(crate_dir).join("src");
    let mut found = Vec::new();
    for file in rust_files(&src) {
        if allowed_file.is_some_and(|allowed| file.ends_with(allowed)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in library.lines().enumerate() {
            if line.contains(needle) && !line.trim_start().starts_with("//") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_fab_reads_the_environment() {
    for crate_dir in ["fab-core", "fab-store", "fab-redis", "fab-web"] {
        for needle in ["std::env", "env::var", "dotenv"] {
            let found = occurrences(crate_dir, needle, None);
            assert!(
                found.is_empty(),
                "{crate_dir} reads the environment: {found:#?}"
            );
        }
    }
}

#[test]
fn time_and_randomness_come_in_as_parameters() {
    for crate_dir in ["fab-core", "fab-store", "fab-redis", "fab-web"] {
        for needle in ["Utc::now", "SystemTime::now", "Local::now"] {
            let found = occurrences(crate_dir, needle, Some("clock.rs"));
            assert!(
                found.is_empty(),
                "{crate_dir} reads the system clock: {found:#?}"
            );
        }
        for needle in ["getrandom::", "thread_rng", "rand::rng"] {
            let found = occurrences(crate_dir, needle, Some("random.rs"));
            assert!(
                found.is_empty(),
                "{crate_dir} draws randomness itself: {found:#?}"
            );
        }
    }
}

#[test]
fn architecture_document_names_every_invariant_checked_here() {
    let text = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    for phrase in [
        "dependencies point inward",
        "only fab-web knows HTTP",
        "time and randomness come in as parameters",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("Invariant:") && l.contains(phrase)),
            "ARCHITECTURE.md has an Invariant line about {phrase}"
        );
    }
}

#[test]
fn readme_documents_every_configuration_key() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for key in fab_core::config::KEYS {
        assert!(
            readme.contains(&format!("`{}`", key.name)),
            "README documents {}",
            key.name
        );
    }
}
