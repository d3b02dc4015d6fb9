//! Every refusal and failure as one JSON shape with an HTTP status that fits:
//! `{"error": {"code": "not_found", "message": "…"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shoal_daemon::DaemonError;
use shoal_store::StoreError;
use utoipa::ToSchema;

/// What went wrong, for the one who asked.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable name for the kind of error: `unauthorized`, `bad_host`, `csrf`,
    /// `not_found`, `bad_request`, `conflict`, `forbidden`, `too_large`, `busy`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// What went wrong and what to do, for a person.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            DaemonError::Store(s) | DaemonError::Net(shoal_daemon::NetError::Store(s)) => {
                store_status(s)
            }
            // Such as no member known to sync with yet.
            DaemonError::Remote(_) => (StatusCode::CONFLICT, "unavailable"),
            DaemonError::Net(n) if n.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            DaemonError::Value { .. } | DaemonError::OwnDevice(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            DaemonError::NoSuchMember(_) => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}

fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::NoSuchConflict { .. } | StoreError::NoSuchGroup { .. } => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        StoreError::AlreadySettled { .. } => (StatusCode::CONFLICT, "conflict"),
        StoreError::NotAdmin { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        StoreError::AmbiguousGroup { .. }
        | StoreError::AmbiguousConflict { .. }
        | StoreError::RevokingItself { .. }
        | StoreError::LastAdmin { .. }
        | StoreError::CannotResolve { .. }
        | StoreError::NoSuchColumn { .. }
        | StoreError::NotAMember { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
