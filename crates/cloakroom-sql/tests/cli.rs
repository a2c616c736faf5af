//! `cloakroom-admin` end to end: the built binary, run with environment
//! variables as an operator runs it, against the private MariaDB that
//! `tests/run` starts (`CLOAKROOM_MARIADB_URL`).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloakroom_core::record::Data;
use cloakroom_core::{Id, Record, SessionStore, StoreKey};
use cloakroom_sql::SqlStore;
use time::OffsetDateTime;

fn mariadb_url() -> String {
    match std::env::var("CLOAKROOM_MARIADB_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "CLOAKROOM_MARIADB_URL is not set: this test needs the MariaDB that tests/run \
             starts; run the suite with `bash tests/run`"
        ),
    }
}

/// The binary with a clean slate of settings plus `vars`.
fn admin(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom-admin"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("SESSION_") || name == "DATABASE_URL" {
            cmd.env_remove(name);
        }
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    cmd.output().expect("run cloakroom-admin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn key() -> StoreKey {
    Id::generate().expect("OS randomness").store_key()
}

fn record(offset_secs: i64) -> Record {
    Record::new(
        Data::new(),
        OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs),
    )
}

#[tokio::test]
async fn migrate_and_clearsessions_from_the_command_line() {
    let url = mariadb_url();
    let table = format!("cli_{}", std::process::id());
    let vars = [
        ("SESSION_DATABASE_URL", url.as_str()),
        ("SESSION_DATABASE_TABLE", table.as_str()),
    ];

    // migrate creates the table, and is harmless a second time.
    for _ in 0..2 {
        let out = admin(&["migrate"], &vars);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("migrated") && stdout.contains(&table),
            "{stdout}"
        );
    }

    // Sessions written by the library, in the table the command made.
    let store = SqlStore::builder(url.as_str())
        .with_table(table.as_str())
        .build()
        .expect("store");
    let mut live = Vec::new();
    for i in 0..4 {
        assert!(
            store
                .create(&key(), &record(-1 - i))
                .await
                .expect("create expired")
        );
    }
    for _ in 0..2 {
        let k = key();
        assert!(store.create(&k, &record(600)).await.expect("create live"));
        live.push(k);
    }

    // clearsessions deletes the four expired rows and says so.
    let out = admin(&["clearsessions"], &vars);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deleted 4 expired session(s)"),
        "{}",
        text(&out.stdout)
    );
    for k in &live {
        assert!(store.load(k).await.expect("load").is_some());
    }
    assert_eq!(store.clear_expired().await.expect("clear"), 0);

    // DATABASE_URL is read when SESSION_DATABASE_URL is unset, as Django
    // projects with one DATABASE_URL expect.
    let out = admin(
        &["clearsessions"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("SESSION_DATABASE_TABLE", table.as_str()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deleted 0 expired"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn usage_and_settings_errors() {
    let out = admin(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("clearsessions"));

    let out = admin(&["--help"], &[]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("SESSION_DATABASE_URL"));

    let out = admin(&["migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SESSION_DATABASE_URL"),
        "{}",
        text(&out.stderr)
    );

    let out = admin(
        &["migrate"],
        &[
            ("SESSION_DATABASE_URL", "sqlite::memory:"),
            ("SESSION_DATABASE_TABLE", "Robert'); DROP TABLE students;--"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SESSION_DATABASE_TABLE"),
        "{}",
        text(&out.stderr)
    );
}

/// A database that does not answer: a clear failure within the timeout, and
/// the password is not in it.
#[test]
fn unreachable_database_fails_fast_without_the_password() {
    // A port that nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("mysql://dash:hunter2-secret@127.0.0.1:{port}/dash");
    let started = Instant::now();
    let out = admin(
        &["clearsessions"],
        &[
            ("SESSION_DATABASE_URL", url.as_str()),
            ("SESSION_DATABASE_TIMEOUT_MS", "500"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("clearsessions"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!text(&out.stdout).contains("hunter2"));
}
