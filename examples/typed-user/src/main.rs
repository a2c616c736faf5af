//! Runs the example on <http://127.0.0.1:3000/login> (loopback only):
//! `cargo run -p typed-user-example`. Sessions end after 15 minutes without
//! a request.

use std::time::Duration;

/// How long a session lasts without a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[tokio::main]
async fn main() {
    let addr = "127.0.0.1:3000";
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("typed-user-example: cannot listen on {addr}: {err}");
            std::process::exit(2);
        }
    };
    eprintln!("typed-user-example: http://{addr}/login");
    if let Err(err) = axum::serve(listener, typed_user_example::app(IDLE_TIMEOUT)).await {
        eprintln!("typed-user-example: {err}");
        std::process::exit(1);
    }
}
