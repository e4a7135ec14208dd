//! The channel as the tower `Service` tonic's clients call: each call opens a stream on
//! the connection `balance` picks, writes its message there and returns the answer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Body;

use super::{BoxError, ModelChannel, body::AnswerBody};

const USER_AGENT: &str = concat!("sms-app-service/", env!("CARGO_PKG_VERSION"));

impl tower::Service<http::Request<tonic::body::Body>> for ModelChannel {
    type Response = http::Response<AnswerBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    /// Always ready: each call picks its connection, and waits for it, in `call`.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut send = shared.connection().await?;
            let (mut head, mut body) = request.into_parts();
            // Names the caller in the model's and the mesh's logs, as gRPC clients do.
            head.headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT));
            // Over the model's limit of streams a connection, h2 holds the stream back
            // until one ends (the app's own limit bounds how many wait).
            let (answer, mut stream) = send.send_request(http::Request::from_parts(head, ()), false)?;
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                // A gRPC request is data frames only (the message), no trailers.
                if let Ok(data) = frame?.into_data() {
                    stream.send_data(data, false)?;
                }
            }
            stream.send_data(Bytes::new(), true)?;
            Ok(answer.await?.map(|stream| AnswerBody { stream, data_done: false }))
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::{
        super::testing::{body_of, channel, serving},
        *,
    };

    /// What the model receives of a call: its path, the app's name, and the whole
    /// message, every frame of it, then the end of the stream.
    #[tokio::test]
    async fn a_call_reaches_the_model_whole_and_named() {
        let (seen, mut received) = mpsc::unbounded_channel();
        let model = serving(move |request: http::Request<h2::RecvStream>, mut respond| {
            let seen = seen.clone();
            async move {
                let (head, mut body) = request.into_parts();
                let mut message = Vec::new();
                while let Some(data) = body.data().await {
                    let data = data.unwrap();
                    let _ = body.flow_control().release_capacity(data.len());
                    message.extend_from_slice(&data);
                }
                let agent = head.headers.get(http::header::USER_AGENT).map(|v| v.to_str().unwrap().to_owned());
                seen.send((head.uri.path().to_owned(), agent, message)).unwrap();
                respond.send_response(http::Response::new(()), true).unwrap();
            }
        })
        .await;
        let mut channel = channel(vec![model]);
        let request = http::Request::post("http://model:8081/sms.v1.SpamClassifier/Classify")
            .body(body_of(&[b"\0\0\0\0\x05", b"hello"]))
            .unwrap();
        let answer = tower::Service::call(&mut channel, request).await.unwrap();
        assert_eq!(answer.status(), http::StatusCode::OK);
        let (path, agent, message) = received.recv().await.unwrap();
        assert_eq!(path, "/sms.v1.SpamClassifier/Classify");
        assert_eq!(agent.as_deref(), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("sms-app-service/"));
        assert_eq!(message, b"\0\0\0\0\x05hello");
    }
}
