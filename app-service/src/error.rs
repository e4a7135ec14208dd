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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use sms_proto::TextError;

    use super::*;

    /// Status, Retry-After and the JSON body of what the app answers for `e`.
    async fn answer(e: ClassifyError) -> (u16, Option<String>, serde_json::Value) {
        let response = AppError::from(e).into_response();
        let status = response.status().as_u16();
        let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn each_kind_of_failure_is_its_own_http_answer() {
        const DOWN: &str = "the model service is unavailable right now; please try again in a moment";
        let cases = [
            // The model tier cannot answer now: 503 to retry after a second.
            (ClassifyError::Model(ModelCallError::Unavailable("connection refused".into())), 503, Some("1"), DOWN),
            (ClassifyError::Model(ModelCallError::Timeout), 503, Some("1"), DOWN),
            // The user's text: 422 saying what is wrong with it.
            (
                ClassifyError::Model(ModelCallError::Rejected("the message contains a NUL character".into())),
                422,
                None,
                "the message contains a NUL character",
            ),
            (
                ClassifyError::Invalid(TextError::TooLong { chars: 1001 }),
                422,
                None,
                "the message is 1001 characters long; the limit is 1000",
            ),
            // The model answered something no retry will fix: 502, without its internals.
            (
                ClassifyError::Model(ModelCallError::Failed("Internal: onnxruntime exploded".into())),
                502,
                None,
                "the model service failed to classify the message",
            ),
        ];
        for (e, status, retry, message) in cases {
            let what = format!("{e:?}");
            let (got_status, got_retry, body) = answer(e).await;
            assert_eq!((got_status, got_retry.as_deref()), (status, retry), "{what}");
            assert_eq!(body, json!({ "error": message, "status": status }), "{what}");
        }
    }
}
