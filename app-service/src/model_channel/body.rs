//! The body of the model's answer as tonic reads it.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame};

/// The body of the model's answer: its data frames, then its trailers (the gRPC status).
pub struct AnswerBody {
    pub(super) stream: h2::RecvStream,
    pub(super) data_done: bool,
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match std::task::ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the model may send more (flow control).
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match std::task::ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        super::{
            ModelChannel,
            testing::{body_of, channel, serving},
        },
        *,
    };

    /// An answer larger than a stream's flow-control window (64 KiB).
    const LARGE: usize = 256 * 1024;

    /// Calls the model and reads the whole answer: how many data bytes, and the trailers.
    async fn read_answer(mut channel: ModelChannel) -> (usize, Option<http::HeaderMap>) {
        let request =
            http::Request::post("http://model:8081/sms.v1.SpamClassifier/Classify").body(body_of(&[])).unwrap();
        let mut body = tower::Service::call(&mut channel, request).await.unwrap().into_body();
        let (mut data, mut trailers) = (0, None);
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            assert!(trailers.is_none(), "a frame after the trailers");
            match frame.unwrap().into_data() {
                Ok(bytes) => data += bytes.len(),
                Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
            }
        }
        assert!(body.is_end_stream());
        (data, trailers)
    }

    /// The whole answer is read however large (the window is given back as it is read),
    /// and its gRPC status comes last, in the trailers.
    #[tokio::test]
    async fn an_answer_larger_than_the_window_is_read_to_its_trailers() {
        let model = serving(|_, mut respond| async move {
            let mut stream = respond.send_response(http::Response::new(()), false).unwrap();
            for _ in 0..LARGE / 16_384 {
                stream.send_data(Bytes::from(vec![7u8; 16_384]), false).unwrap();
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers).unwrap();
        })
        .await;
        let read = tokio::time::timeout(Duration::from_secs(5), read_answer(channel(vec![model])));
        let (data, trailers) = read.await.expect("the answer stalled: the window was not given back");
        assert_eq!(data, LARGE);
        assert_eq!(trailers.expect("no trailers").get("grpc-status").unwrap(), "0");
    }

    /// An answer that ends with its data (no trailers) ends the body there.
    #[tokio::test]
    async fn an_answer_without_trailers_ends_after_its_data() {
        let model = serving(|_, mut respond| async move {
            let mut stream = respond.send_response(http::Response::new(()), false).unwrap();
            stream.send_data(Bytes::from_static(b"done"), true).unwrap();
        })
        .await;
        let read = tokio::time::timeout(Duration::from_secs(5), read_answer(channel(vec![model])));
        assert_eq!(read.await.expect("the answer never ended"), (4, None));
    }
}
