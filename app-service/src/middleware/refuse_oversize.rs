//! `RefuseOversize`: a request whose declared `Content-Length` is over the limit is
//! answered at once, before any of its body is read.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{extract::Request, http::header, response::Response as AxumResponse};
use tower::{Layer, Service};

/// Answers a request whose declared `Content-Length` is over `limit` with `refusal()`
/// before any of the body is read (a body limit alone would wait for bytes a client may
/// never send).
#[derive(Clone)]
pub struct RefuseOversizeLayer {
    limit: u64,
    refusal: fn() -> AxumResponse,
}

impl RefuseOversizeLayer {
    pub fn new(limit: usize, refusal: fn() -> AxumResponse) -> Self {
        Self { limit: limit as u64, refusal }
    }
}

impl<S> Layer<S> for RefuseOversizeLayer {
    type Service = RefuseOversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOversize { inner, limit: self.limit, refusal: self.refusal }
    }
}

#[derive(Clone)]
pub struct RefuseOversize<S> {
    inner: S,
    limit: u64,
    refusal: fn() -> AxumResponse,
}

impl<S> Service<Request> for RefuseOversize<S>
where
    S: Service<Request, Response = AxumResponse>,
{
    type Response = AxumResponse;
    type Error = S::Error;
    type Future = OrRefused<S::Future, AxumResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limit) {
            return OrRefused::Refused { response: Some((self.refusal)()) };
        }
        OrRefused::Inner { future: self.inner.call(request) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or a refusal ready at once.
    #[project = OrRefusedProjection]
    pub enum OrRefused<F, T> {
        Inner { #[pin] future: F },
        Refused { response: Option<T> },
    }
}

impl<F, T, E> Future for OrRefused<F, T>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OrRefusedProjection::Inner { future } => future.poll(cx),
            OrRefusedProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("OrRefused polled after it answered")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use axum::{
        http::{HeaderValue, Method, StatusCode},
        response::IntoResponse,
    };
    use tower::ServiceExt;

    use super::super::testing::{request, text};
    use super::*;
    use crate::error::AppError;

    fn refusal() -> AxumResponse {
        AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 100 bytes").into_response()
    }

    #[tokio::test]
    async fn a_body_declared_over_the_limit_is_refused_before_it_is_read() {
        let reached = Arc::new(AtomicUsize::new(0));
        let inner = {
            let reached = reached.clone();
            tower::service_fn(move |_: Request| {
                reached.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(StatusCode::OK.into_response()) }
            })
        };
        let service = RefuseOversizeLayer::new(100, refusal).layer(inner);
        let post = |length: Option<&str>| {
            let mut r = request(Method::POST, "/sms/");
            if let Some(length) = length {
                r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_str(length).unwrap());
            }
            r
        };

        for over in ["101", "16385", "18446744073709551615"] {
            let response = service.clone().oneshot(post(Some(over))).await.unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "Content-Length {over}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&text(response).await).unwrap(),
                serde_json::json!({"error": "the request body is larger than 100 bytes", "status": 413})
            );
        }
        assert_eq!(reached.load(Ordering::SeqCst), 0, "a refused request never reaches the handler");

        // At the limit, without a length (chunked) or with one that is not a number: the
        // body limit behind this layer decides, as the body is read.
        for length in [Some("100"), Some("0"), None, Some("lots"), Some("-1")] {
            let response = service.clone().oneshot(post(length)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "Content-Length {length:?}");
        }
        assert_eq!(reached.load(Ordering::SeqCst), 5);
    }
}
