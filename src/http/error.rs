//! The API's errors: a status code and one sentence, as JSON.
//!
//! 4xx messages say what the caller did. 5xx messages are generic; the
//! detail goes to the log, never to the response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: `{"error": "one sentence"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
    /// Send `WWW-Authenticate` (a 401 of the admin token).
    challenge: bool,
}

impl ApiError {
    /// An error with a status and a sentence for the caller.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 401 for a missing or wrong admin token, with the challenge that
    /// makes a browser ask for it (Basic: any user, the token as password).
    pub fn sign_in(message: impl Into<String>) -> Self {
        ApiError {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: the signature or token is missing or wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503 with `Retry-After`: try again later; nothing was recorded.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: Some(retry_after_secs),
            challenge: false,
        }
    }

    /// The sentence the caller gets.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.challenge {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hookci\", charset=\"UTF-8\""),
            );
        }
        res
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::QueueFull => {
                ApiError::unavailable("the build queue is full; retry later", 60)
            }
            StoreError::Unavailable(fault) => {
                tracing::error!(error = %fault.detail, cause = %fault.cause, "store unavailable");
                ApiError::unavailable(
                    "the store is unavailable; retry later",
                    fault.cause.retry_after_secs(),
                )
            }
            // Only a runner's writes are fenced, never an API call's.
            StoreError::Fenced => {
                tracing::error!("a fenced store write reached the API");
                ApiError::unavailable("the store is unavailable; retry later", 1)
            }
        }
    }
}
