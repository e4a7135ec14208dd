//! What the tests of the layers share: a request, and an answer's body as text.

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    http::Method,
    response::Response as AxumResponse,
};

pub(super) fn request(method: Method, uri: &str) -> Request {
    Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()
}

pub(super) async fn text(response: AxumResponse) -> String {
    String::from_utf8(to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
}
