//! The one refusal type of every endpoint: a status and a message that says what is
//! wrong. The JSON API sends it as `{"error", "status"}`; the page shows the message.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{classify::ClassifyError, model_client::ModelCallError};

/// Seconds a client should wait before retrying when the model tier is unavailable.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<ClassifyError> for AppError {
    fn from(e: ClassifyError) -> Self {
        match e {
            ClassifyError::Invalid(e) => Self::invalid(e.to_string()),
            ClassifyError::Model(ModelCallError::Unavailable(_) | ModelCallError::Timeout) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model service is unavailable right now; please try again in a moment",
            ),
            ClassifyError::Model(ModelCallError::Rejected(m)) => Self::invalid(m),
            ClassifyError::Model(ModelCallError::Failed(m)) => {
                tracing::error!("model call failed: {m}");
                Self::new(StatusCode::BAD_GATEWAY, "the model service failed to classify the message")
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({ "error": self.message, "status": self.status.as_u16() }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}
