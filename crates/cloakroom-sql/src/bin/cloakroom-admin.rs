//! `cloakroom-admin`: the session table's maintenance commands, as Django's
//! `manage.py migrate` and `manage.py clearsessions`.
//!
//! ```text
//! SESSION_DATABASE_URL=mysql://dash:secret@127.0.0.1:3306/dash cloakroom-admin migrate
//! SESSION_DATABASE_URL=mysql://dash:secret@127.0.0.1:3306/dash cloakroom-admin clearsessions
//! ```
//!
//! Reads the same settings as `SessionLayer::from_env()`: the URL from
//! `SESSION_DATABASE_URL` (or `DATABASE_URL`), the table from
//! `SESSION_DATABASE_TABLE`, and so on. Exit status: 0 on success, 1 when the
//! database refuses or cannot be reached, 2 for a usage or settings error.

use std::process::ExitCode;

use cloakroom_sql::SqlStore;

const USAGE: &str = "\
usage: cloakroom-admin <command>

commands:
  migrate        create the session table and its index, or upgrade them (idempotent)
  clearsessions  delete the sessions whose deadline has passed, print how many

settings (environment):
  SESSION_DATABASE_URL    the database (falls back to DATABASE_URL), e.g.
                          mysql://user:password@127.0.0.1:3306/db, postgres://..., sqlite://file.db
  SESSION_DATABASE_TABLE  the table (default cloakroom_session)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.as_slice() {
        [c] if c == "migrate" || c == "clearsessions" => c.clone(),
        [h] if h == "-h" || h == "--help" || h == "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let store = match SqlStore::from_env() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cloakroom-admin: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloakroom-admin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let result = match command.as_str() {
            "migrate" => store.migrate().await.map(|()| {
                format!(
                    "migrated: table `{}` is ready ({})",
                    store.table(),
                    store.backend()
                )
            }),
            _ => store
                .clear_expired()
                .await
                .map(|n| format!("deleted {n} expired session(s) from `{}`", store.table())),
        };
        store.close().await;
        result
    });
    match outcome {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The error chain names what failed; no part of it holds the
            // URL's password (sqlx does not echo connect options).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                // sqlx repeats its cause in its own message; say it once.
                let cause = s.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
                source = s.source();
            }
            eprintln!(
                "cloakroom-admin {command} ({}): {text}",
                store.redacted_url()
            );
            ExitCode::FAILURE
        }
    }
}
