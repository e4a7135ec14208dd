//! `ListDisagreements` answered from the shadow's shared snapshot (`shadow::Snapshot`),
//! in front of tonic's generated server: tonic would encode a fresh copy of up to 256 KiB
//! per call, and a client that asks on many streams and never reads would keep every
//! copy in the HTTP/2 send buffers (120 connections x 32 streams took the shadow to
//! 1.5 GiB). Here each answer is a small header, a shared slice of one encoding and a
//! small tail, so unread answers cost a few hundred bytes each.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use http_body::{Body as _, Frame};
use prost::Message;
use sms_proto::v1::ListDisagreementsRequest;
use tonic::{Status, body::Body, server::NamedService};

use crate::shadow::Comparison;

const LIST_DISAGREEMENTS: &str = "/sms.v1.SpamClassifier/ListDisagreements";
/// A `ListDisagreementsRequest` is a few bytes; anything larger is not one.
const MAX_REQUEST_BYTES: usize = 1024;

/// Wraps the classifier's gRPC service; other calls pass through untouched.
#[derive(Clone)]
pub struct SharedAnswers<S> {
    inner: S,
    comparison: Option<Arc<Comparison>>,
    /// How long the request may take to arrive (REQUEST_TIMEOUT_MS).
    request_timeout: Duration,
}

impl<S> SharedAnswers<S> {
    pub fn new(inner: S, comparison: Option<Arc<Comparison>>, request_timeout: Duration) -> Self {
        Self { inner, comparison, request_timeout }
    }
}

impl<S: NamedService> NamedService for SharedAnswers<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for SharedAnswers<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(comparison) = self.comparison.clone().filter(|_| request.uri().path() == LIST_DISAGREEMENTS) else {
            return Box::pin(self.inner.call(request));
        };
        let timeout = self.request_timeout;
        Box::pin(async move {
            let limit = match tokio::time::timeout(timeout, read_request(request.into_body())).await {
                Ok(Ok(r)) => r.limit as usize,
                Ok(Err(status)) => return Ok(status.into_http()),
                Err(_) => {
                    return Ok(Status::deadline_exceeded(format!(
                        "the request did not arrive within {} ms",
                        timeout.as_millis()
                    ))
                    .into_http());
                }
            };
            let (entries, tail) = comparison.snapshot().answer(limit);
            Ok(answer(entries, tail))
        })
    }
}

/// Reads one uncompressed gRPC message of at most `MAX_REQUEST_BYTES`.
async fn read_request(mut body: Body) -> Result<ListDisagreementsRequest, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_REQUEST_BYTES {
                return Err(Status::invalid_argument(format!(
                    "a ListDisagreements request is at most {MAX_REQUEST_BYTES} bytes"
                )));
            }
            buf.put(data);
        }
    }
    if buf.len() < 5 {
        return Err(Status::invalid_argument("the request holds no gRPC message"));
    }
    let compressed = buf.get_u8();
    let len = buf.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented("compressed requests are not accepted (grpc-encoding identity only)"));
    }
    if len != buf.len() {
        return Err(Status::invalid_argument("the request must hold exactly one gRPC message"));
    }
    ListDisagreementsRequest::decode(buf)
        .map_err(|e| Status::invalid_argument(format!("the request does not decode: {e}")))
}

fn answer(entries: Bytes, tail: Bytes) -> http::Response<Body> {
    let len = u32::try_from(entries.len() + tail.len()).expect("an answer is within ANSWER_BYTES");
    let mut header = BytesMut::with_capacity(5);
    header.put_u8(0);
    header.put_u32(len);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Chunks { chunks: [header.freeze(), entries, tail].into(), trailers: Some(trailers) };
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A body of ready chunks, then trailers. The server polls the next chunk only when the
/// client's window has room, so what it has not read stays here, shared, not copied.
struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        while let Some(chunk) = self.chunks.pop_front() {
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }
}
