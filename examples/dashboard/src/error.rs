//! [`Failure`]: why a page could not be served, and the response for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::templates;

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The session backend failed: the layer's answer (503 when it is
    /// unavailable).
    Session(cloakroom::Error),
    /// A POST to a live session without its CSRF token. (A POST without
    /// a live session is sent to the login page instead, see `redirect`.)
    Csrf,
    /// A form value that is not allowed (a project the user does not have).
    BadRequest(&'static str),
    /// A bug or an OS failure; logged, answered 500.
    Internal(String),
}

impl From<cloakroom::Error> for Failure {
    fn from(err: cloakroom::Error) -> Self {
        Self::Session(err)
    }
}

impl From<minijinja::Error> for Failure {
    fn from(err: minijinja::Error) -> Self {
        Self::Internal(format!("template: {err:#}"))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Session(err) => return err.into_response(),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "CSRF verification failed: the form was not sent by this dashboard's page \
                 for your current sign-in (it may come from an older tab). Go back to the \
                 dashboard and try again.",
            ),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::Internal(detail) => {
                tracing::error!(detail = detail.as_str(), "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side.",
                )
            }
        };
        templates::error_page(status, message)
    }
}
