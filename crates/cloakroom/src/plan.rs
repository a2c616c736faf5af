//! When a session is saved, and how: one pure function from the end state
//! of the request's session, the settings and the response status to a
//! [`Plan`]. No I/O here; the service carries the plan out (store calls in
//! [`store`](crate::store), cookies in [`jar`](crate::jar)).
//!
//! The rules are Django's `SessionMiddleware.process_response`, plus ours:
//!
//! * an emptied session (no values, no expiry of its own) is never stored:
//!   its record is deleted and, if the request carried a cookie, the cookie
//!   removed, whatever the status (Django removes it on any status too);
//! * a logout ([`Session::flush`](crate::Session::flush)) has already
//!   deleted the record; its removal cookie goes out whatever the status;
//! * a 5xx response saves nothing else (a failed request does not keep what
//!   it half did);
//! * a session whose cookie opened nothing (unknown, expired or forged) is
//!   never adopted: a save creates a new id;
//! * a changed session is written; a session whose only change is a later
//!   deadline is touched, not rewritten;
//! * `SESSION_SAVE_EVERY_REQUEST` refreshes every non-5xx response to a
//!   request that carries a live session cookie, read by the handler or not;
//!   a session the handler never read is read first ([`Plan::Load`]), since
//!   its own expiry policy sets the new deadline;
//! * with an idle timeout as the layer's default expiry
//!   (`SessionLayer::with_expiry(Expiry::OnInactivity(..))`), a read of a
//!   session whose expiry is an inactivity period is a renewal too
//!   ([`End::ExpiryMoved`]), as in tower-sessions;
//! * a renewal (a touch, or a reseal, of an unchanged session) that would
//!   move the deadline by less than `SESSION_TOUCH_AFTER_SECONDS` is
//!   skipped: pages that renew an idle timeout stay reads, and the cookie
//!   keeps the deadline that was stored.

use http::StatusCode;

use crate::config::SessionConfig;

/// Where the request's session stands once the handler is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Never read: nothing is known about it.
    Untouched,
    /// A live session, read and left as it was.
    Read,
    /// A live session whose deadline must move, nothing else changed (an
    /// idle timeout set again, or a session read under the layer's default
    /// idle timeout, `SessionLayer::with_expiry`).
    ExpiryMoved,
    /// Data or expiry policy changed. `live`: the session the cookie opened
    /// is still there to update (false for a new session).
    Modified {
        /// The cookie's session was loaded and is to be updated in place.
        live: bool,
    },
    /// [`cycle_id`](crate::Session::cycle_id) gave the session a new id: it
    /// is stored under a fresh one and the old one is retired.
    Cycled,
    /// No values and no expiry of its own. `stored`: there is a record to
    /// delete (the cookie's live session, or an id `cycle_id` retired).
    Emptied {
        /// A record of this session exists in the store.
        stored: bool,
    },
    /// Logged out: every record of the session is already deleted.
    Flushed,
}

/// The end state plus what the request brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// What the handler left.
    pub(crate) end: End,
    /// The request carried a session cookie (of any value).
    pub(crate) had_cookie: bool,
    /// The handler looked at the session (the response then depends on the
    /// cookie: `Vary: Cookie`).
    pub(crate) accessed: bool,
    /// A renewal now would move the deadline by at least the touch
    /// threshold (always true when no renewal is in question).
    pub(crate) renewal_due: bool,
}

/// What to do after the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Leave the response as it is.
    Nothing,
    /// Tell the browser to drop the session cookie.
    RemoveCookie,
    /// Delete the session's records, then remove the cookie if one came.
    Delete,
    /// Store the session under a fresh id (retiring an id `cycle_id` left,
    /// checked, so a logout that raced it is not undone) and set the cookie.
    Create,
    /// Replace the live record and refresh the cookie.
    Update,
    /// Move the live record's deadline and refresh the cookie.
    Touch,
    /// Cookie engines: seal the session into the cookie.
    Seal,
    /// Read the session, then decide again (a refresh needs its policy).
    Load,
}

/// The plan, and whether the response must say `Vary: Cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) plan: Plan,
    pub(crate) vary: bool,
}

/// Decides what to do with the session after the handler. `in_cookie`:
/// the engine keeps the session in the cookie itself.
pub(crate) fn decide(
    outcome: Outcome,
    config: &SessionConfig,
    status: StatusCode,
    in_cookie: bool,
) -> Decision {
    let Outcome {
        end,
        had_cookie,
        accessed,
        renewal_due,
    } = outcome;
    let failed = status.is_server_error();
    let remove = if had_cookie {
        Plan::RemoveCookie
    } else {
        Plan::Nothing
    };
    let plan = match end {
        End::Flushed => remove,
        End::Emptied { stored } if stored && !failed && !in_cookie => Plan::Delete,
        End::Emptied { .. } => remove,
        _ if failed => Plan::Nothing,
        End::Untouched if config.save_every_request && had_cookie => Plan::Load,
        End::Untouched => Plan::Nothing,
        End::Read | End::ExpiryMoved if !renewal_due => Plan::Nothing,
        End::Read if config.save_every_request => refresh(in_cookie),
        End::Read => Plan::Nothing,
        End::ExpiryMoved => refresh(in_cookie),
        _ if in_cookie => Plan::Seal,
        End::Modified { live: true } => Plan::Update,
        End::Modified { live: false } | End::Cycled => Plan::Create,
    };
    Decision {
        plan,
        // Django's: whenever the handler looked, and whenever the cookie is
        // removed.
        vary: accessed || matches!(plan, Plan::RemoveCookie | Plan::Delete),
    }
}

/// A later deadline for a live session that did not change.
fn refresh(in_cookie: bool) -> Plan {
    if in_cookie { Plan::Seal } else { Plan::Touch }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: StatusCode = StatusCode::OK;
    const REDIRECT: StatusCode = StatusCode::FOUND;
    const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
    const FAILED: StatusCode = StatusCode::INTERNAL_SERVER_ERROR;
    const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

    /// One row: the end state, a cookie came, the handler looked,
    /// SESSION_SAVE_EVERY_REQUEST, the status, a cookie engine; then the
    /// plan and `Vary`.
    type Row = (End, bool, bool, bool, StatusCode, bool, Plan, bool);

    /// Django's `SessionMiddleware.process_response` rules, then ours.
    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // end                          cookie access every  status     in_cookie   plan              vary
        // Django: a session nobody read is left alone (no I/O, no Vary)...
        (End::Untouched,                  true,  false, false, OK,        false, Plan::Nothing,      false),
        (End::Untouched,                  false, false, false, OK,        false, Plan::Nothing,      false),
        // ...unless every request saves: the live cookie is refreshed,
        // which needs the session's own policy, so it is read first.
        (End::Untouched,                  true,  false, true,  OK,        false, Plan::Load,         false),
        (End::Untouched,                  true,  false, true,  REDIRECT,  true,  Plan::Load,         false),
        (End::Untouched,                  true,  false, true,  NOT_FOUND, false, Plan::Load,         false),
        (End::Untouched,                  false, false, true,  OK,        false, Plan::Nothing,      false),
        (End::Untouched,                  true,  false, true,  FAILED,    false, Plan::Nothing,      false),
        // Django: read and unchanged: Vary, no save...
        (End::Read,                       true,  true,  false, OK,        false, Plan::Nothing,      true),
        (End::Read,                       true,  true,  false, OK,        true,  Plan::Nothing,      true),
        // ...unless every request saves: a touch (a reseal), not a rewrite.
        (End::Read,                       true,  true,  true,  OK,        false, Plan::Touch,        true),
        (End::Read,                       true,  true,  true,  OK,        true,  Plan::Seal,         true),
        (End::Read,                       true,  false, true,  OK,        false, Plan::Touch,        false),
        (End::Read,                       true,  true,  true,  FAILED,    false, Plan::Nothing,      true),
        // Django: modified: saved on any status below 500.
        (End::Modified { live: true },    true,  true,  false, OK,        false, Plan::Update,       true),
        (End::Modified { live: true },    true,  true,  false, NOT_FOUND, false, Plan::Update,       true),
        (End::Modified { live: true },    true,  true,  false, REDIRECT,  true,  Plan::Seal,         true),
        (End::Modified { live: true },    true,  true,  false, FAILED,    false, Plan::Nothing,      true),
        (End::Modified { live: true },    true,  true,  false, UNAVAILABLE, true, Plan::Nothing,     true),
        // Ours: a session the cookie did not open is never adopted.
        (End::Modified { live: false },   true,  true,  false, OK,        false, Plan::Create,       true),
        (End::Modified { live: false },   false, true,  false, OK,        false, Plan::Create,       true),
        (End::Modified { live: false },   false, true,  false, OK,        true,  Plan::Seal,         true),
        (End::Modified { live: false },   false, true,  false, FAILED,    false, Plan::Nothing,      true),
        // Django: cycle_key (login): a new id, the old record retired.
        (End::Cycled,                     true,  true,  false, OK,        false, Plan::Create,       true),
        (End::Cycled,                     true,  true,  true,  REDIRECT,  false, Plan::Create,       true),
        (End::Cycled,                     true,  true,  false, OK,        true,  Plan::Seal,         true),
        (End::Cycled,                     true,  true,  false, FAILED,    false, Plan::Nothing,      true),
        // Ours: only the deadline moved: a touch, not a rewrite.
        (End::ExpiryMoved,                true,  true,  false, OK,        false, Plan::Touch,        true),
        (End::ExpiryMoved,                true,  true,  false, OK,        true,  Plan::Seal,         true),
        (End::ExpiryMoved,                true,  true,  false, FAILED,    false, Plan::Nothing,      true),
        // Django: an empty session that came with a cookie loses the
        // cookie, on any status; ours: its record is deleted (not on 5xx,
        // which writes nothing).
        (End::Emptied { stored: true },   true,  true,  false, OK,        false, Plan::Delete,       true),
        (End::Emptied { stored: true },   true,  true,  true,  OK,        false, Plan::Delete,       true),
        (End::Emptied { stored: true },   true,  true,  false, FAILED,    false, Plan::RemoveCookie, true),
        (End::Emptied { stored: false },  true,  true,  false, OK,        false, Plan::RemoveCookie, true),
        (End::Emptied { stored: false },  true,  true,  false, FAILED,    false, Plan::RemoveCookie, true),
        (End::Emptied { stored: false },  true,  true,  false, OK,        true,  Plan::RemoveCookie, true),
        (End::Emptied { stored: false },  false, true,  false, OK,        false, Plan::Nothing,      true),
        (End::Emptied { stored: false },  false, true,  true,  OK,        false, Plan::Nothing,      true),
        // A cycled id retired before emptying still has a record.
        (End::Emptied { stored: true },   false, true,  false, OK,        false, Plan::Delete,       true),
        // Ours: a logout removes the cookie whatever the status (the
        // record is gone already).
        (End::Flushed,                    true,  true,  false, OK,        false, Plan::RemoveCookie, true),
        (End::Flushed,                    true,  true,  false, FAILED,    false, Plan::RemoveCookie, true),
        (End::Flushed,                    true,  true,  true,  UNAVAILABLE, false, Plan::RemoveCookie, true),
        (End::Flushed,                    true,  true,  false, REDIRECT,  true,  Plan::RemoveCookie, true),
        (End::Flushed,                    false, true,  false, OK,        false, Plan::Nothing,      true),
    ];

    #[test]
    fn the_plan_follows_djangos_rules_and_ours() {
        for (i, &(end, had_cookie, accessed, every, status, in_cookie, plan, vary)) in
            TABLE.iter().enumerate()
        {
            let config = SessionConfig {
                save_every_request: every,
                ..SessionConfig::default()
            };
            let outcome = Outcome {
                end,
                had_cookie,
                accessed,
                renewal_due: true,
            };
            assert_eq!(
                decide(outcome, &config, status, in_cookie),
                Decision { plan, vary },
                "row {i}: {:?}",
                TABLE[i]
            );
        }
    }

    /// Every end state, with and without a cookie, on every kind of status:
    /// nothing is written on a 5xx but the removal of a dead cookie.
    #[test]
    fn a_failed_response_writes_nothing() {
        let ends = [
            End::Untouched,
            End::Read,
            End::ExpiryMoved,
            End::Modified { live: true },
            End::Modified { live: false },
            End::Cycled,
            End::Emptied { stored: true },
            End::Emptied { stored: false },
            End::Flushed,
        ];
        for end in ends {
            for had_cookie in [false, true] {
                for every in [false, true] {
                    for in_cookie in [false, true] {
                        let config = SessionConfig {
                            save_every_request: every,
                            ..SessionConfig::default()
                        };
                        let outcome = Outcome {
                            end,
                            had_cookie,
                            accessed: true,
                            renewal_due: true,
                        };
                        let plan = decide(outcome, &config, FAILED, in_cookie).plan;
                        let expected =
                            if had_cookie && matches!(end, End::Flushed | End::Emptied { .. }) {
                                Plan::RemoveCookie
                            } else {
                                Plan::Nothing
                            };
                        assert_eq!(plan, expected, "{outcome:?} every={every}");
                    }
                }
            }
        }
    }

    /// A renewal too small to be worth writing is skipped, on either kind
    /// of engine and also when every request saves; nothing else changes.
    #[test]
    fn renewals_below_the_threshold_write_nothing() {
        for every in [false, true] {
            let config = SessionConfig {
                save_every_request: every,
                ..SessionConfig::default()
            };
            for in_cookie in [false, true] {
                for end in [End::Read, End::ExpiryMoved] {
                    let outcome = Outcome {
                        end,
                        had_cookie: true,
                        accessed: true,
                        renewal_due: false,
                    };
                    let decision = decide(outcome, &config, OK, in_cookie);
                    let expected = Decision {
                        plan: Plan::Nothing,
                        vary: true,
                    };
                    assert_eq!(
                        decision, expected,
                        "{end:?} every={every} cookie={in_cookie}"
                    );
                }
                for end in [
                    End::Modified { live: true },
                    End::Modified { live: false },
                    End::Cycled,
                    End::Emptied { stored: true },
                    End::Flushed,
                ] {
                    let due = |renewal_due| Outcome {
                        end,
                        had_cookie: true,
                        accessed: true,
                        renewal_due,
                    };
                    assert_eq!(
                        decide(due(false), &config, OK, in_cookie),
                        decide(due(true), &config, OK, in_cookie),
                        "{end:?}"
                    );
                }
            }
        }
    }
}
