//! Flash messages: a sentence for the next page the user sees ("Switched
//! to project demo."), kept in the session until that page takes it, as
//! Django's messages framework does with its session storage.
//!
//! Signing out has no session left to keep one in (and keeping one would
//! give an anonymous visitor a session), so its message travels in the
//! login page's address instead (`?reason=signed_out`, see `redirect`).

use cloakroom::Session;
use serde::{Deserialize, Serialize};

use crate::error::Failure;

/// The session key, Django's.
const KEY: &str = "_messages";

/// The most messages kept: a user who switches projects in a loop without
/// looking at a page does not grow the session.
const MAX: usize = 5;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flash {
    /// `success` or `info`: the page's CSS class for it.
    pub(crate) level: &'static str,
    pub(crate) text: String,
}

/// What was stored: the level as a string, as any version wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    level: String,
    text: String,
}

/// Keeps `text` for the next page, as a success.
pub(crate) async fn success(session: &Session, text: String) -> Result<(), Failure> {
    let mut list: Vec<Stored> = session.get(KEY).await?.unwrap_or_default();
    list.push(Stored {
        level: "success".into(),
        text,
    });
    if list.len() > MAX {
        list.drain(..list.len() - MAX);
    }
    session.insert(KEY, list).await?;
    Ok(())
}

/// The messages kept for this page, removed from the session (a page that
/// has none writes nothing).
pub(crate) async fn take(session: &Session) -> Result<Vec<Flash>, Failure> {
    let list: Vec<Stored> = session.remove(KEY).await?.unwrap_or_default();
    Ok(list
        .into_iter()
        .map(|m| Flash {
            level: if m.level == "success" {
                "success"
            } else {
                "info"
            },
            text: m.text,
        })
        .collect())
}
