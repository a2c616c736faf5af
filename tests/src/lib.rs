//! The conformance suite: HTTP-level behaviours that every cloakroom engine
//! must show, written once and stamped onto each engine with
//! [`conformance_suite!`].
//!
//! * [`client`]: a cookie-carrying client that sends requests through a real
//!   axum `Router` wrapped in the real `SessionLayer`.
//! * [`probe`]: a store wrapper that counts calls and can be made to fail, so
//!   tests can see what the layer asked of the store.
//! * [`app`]: the routes the cases drive.
//! * [`cases`]: the cases themselves, one `async fn` each.
//! * [`contract`]: store-level cases of the `SessionStore` contract, called
//!   on a store directly by each server-side engine's own tests.
//! * [`fault`]: stopping and restarting a private server, and the outage
//!   drill every networked engine goes through.
//!
//! An engine's test file supplies an `async fn` that returns a fresh
//! [`Engine`](cloakroom::Engine) (its own key prefix or database, so cases
//! can run in parallel) and stamps the suite:
//!
//! ```ignore
//! async fn engine() -> cloakroom::Engine { /* ... */ }
//! cloakroom_tests::conformance_suite!(engine);
//! // or, for an engine that keeps sessions in the cookie:
//! cloakroom_tests::conformance_suite!(cookie: engine);
//! ```

pub mod app;
pub mod cases;
pub mod client;
pub mod contract;
pub mod fault;
pub mod probe;

/// Reads a variable that `tests/run` exports, failing the test (never
/// skipping it) when it is missing.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs a server that tests/run starts; \
             run the suite with `bash tests/run`"
        ),
    }
}

/// Stamps the conformance suite onto an engine: one `#[tokio::test]` per
/// case, each calling `$engine().await` for a fresh engine.
#[macro_export]
macro_rules! conformance_suite {
    ($engine:ident) => {
        $crate::conformance_suite!(@cases $engine;
            new_session_sets_cookie,
            configured_cookie_attributes,
            read_only_request_writes_nothing,
            untouched_session_costs_no_io,
            modifications_are_saved,
            save_every_request_touches,
            refreshed_idle_timeout_touches,
            cycle_id_issues_new_id_and_retires_old,
            flush_revokes_server_side,
            clear_removes_session,
            expiry_enforced_on_server,
            browser_close_sessions_have_no_max_age,
            malformed_cookies_start_fresh_without_store,
            unknown_id_is_not_adopted,
            no_save_on_5xx,
            vary_cookie_when_read,
            store_failure_gives_503,
            concurrent_logout_is_not_undone,
            concurrent_requests_never_resurrect_a_logout,
            expiry_at_datetime,
            cycle_id_after_a_concurrent_logout_is_interrupted,
            large_ages_are_errors_not_panics,
            save_every_request_refreshes_pages_that_do_not_read,
            small_renewals_write_nothing,
            layer_idle_expiry_slides_on_reads,
            flush_then_5xx_removes_the_cookie,
            a_session_the_application_refuses_is_absent,
        );
    };
    (cookie: $engine:ident) => {
        $crate::conformance_suite!(@cases $engine;
            new_session_sets_cookie,
            configured_cookie_attributes,
            read_only_request_writes_nothing,
            modifications_are_saved,
            save_every_request_touches,
            flush_removes_cookie_but_cannot_revoke_copies,
            clear_removes_session,
            expiry_enforced_on_server,
            browser_close_sessions_have_no_max_age,
            malformed_cookies_start_fresh_without_store,
            no_save_on_5xx,
            vary_cookie_when_read,
            expiry_at_datetime,
            large_ages_are_errors_not_panics,
            save_every_request_refreshes_pages_that_do_not_read,
            small_renewals_write_nothing,
            layer_idle_expiry_slides_on_reads,
            flush_then_5xx_removes_the_cookie,
            cookie_sessions_end_at_their_absolute_age,
            a_session_the_application_refuses_is_absent,
        );
    };
    (@cases $engine:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::cases::$case($engine().await).await;
            }
        )*
    };
}
