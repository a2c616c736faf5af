//! Runs the example dashboard: `cargo run -p dashboard`.
//!
//! The session engine and its settings come from the `SESSION_*` variables
//! (see the cloakroom crate), the dashboard's own from `DASHBOARD_*` (see
//! [`dashboard::DashboardSettings`]). A bad value stops it at once with a
//! message that names the variable; a session backend that is down does not:
//! the dashboard starts and answers 503 until the backend is back.
//!
//! It refuses to start on an address beyond loopback while a built-in demo
//! account (`admin:admin`, `demo:demo`) can log in.
//!
//! It logs to standard error, as text (coloured on a terminal only) or as
//! JSON lines (`DASHBOARD_LOG_FORMAT=json`), see [`dashboard::logging`].

use std::net::SocketAddr;

use cloakroom::SessionLayer;
use dashboard::settings::is_loopback;
use dashboard::{DashboardSettings, app};

#[tokio::main]
async fn main() {
    // First, so that what follows is logged in the format asked for.
    let format = match dashboard::logging::LogFormat::from_env() {
        Ok(format) => format,
        Err(err) => {
            eprintln!("dashboard: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = dashboard::logging::init(format) {
        eprintln!("dashboard: cannot start the log: {err}");
        std::process::exit(2);
    }
    let (layer, settings) = match (SessionLayer::try_from_env(), DashboardSettings::from_env()) {
        (Ok(layer), Ok(settings)) => (layer, settings),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("dashboard: {err}");
            std::process::exit(2);
        }
    };
    let addr = settings.addr.clone();
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("dashboard: cannot listen on DASHBOARD_ADDR={addr}: {err}");
            std::process::exit(2);
        }
    };
    // Decided on the address actually bound: DASHBOARD_ADDR may be a host
    // name, or a port of 0.
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(err) => {
            eprintln!("dashboard: cannot read the address bound to: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = settings.check_listen_address(local) {
        eprintln!("dashboard: {err}");
        std::process::exit(2);
    }
    if !is_loopback(local) && !layer.config().cookie_secure {
        tracing::warn!(
            local = local.to_string().as_str(),
            "listening beyond loopback with SESSION_COOKIE_SECURE off: the session cookie \
             travels in clear text over any hop without TLS; set SESSION_COOKIE_SECURE=true \
             behind an HTTPS proxy"
        );
    }
    tracing::info!(
        addr = addr.as_str(),
        local = local.to_string().as_str(),
        engine = dashboard::engine_label(layer.engine()).as_str(),
        users = settings.users.len(),
        catalog_bytes = settings.catalog_bytes,
        "dashboard listening"
    );
    let shutdown = async {
        // Ctrl-C or, in a container, `docker stop`'s SIGTERM.
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    };
    // With the peer's address, so failed logins are counted per address too.
    let service = app(layer, settings).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(err) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("dashboard: {err}");
        std::process::exit(1);
    }
}
