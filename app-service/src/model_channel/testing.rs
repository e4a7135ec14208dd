//! What the tests of the channel's parts share: short timings, a channel over fixed
//! addresses, and real peers (HTTP/2 servers, a closed port, an address that never
//! answers).

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Notify,
};

use super::{ModelChannel, Resolver, Timing, endpoint::Endpoint};

pub(super) fn quick() -> Timing {
    Timing {
        connect_timeout: Duration::from_millis(500),
        reconnect_after: Duration::from_millis(300),
        keepalive_every: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
    }
}

pub(super) fn channel(addresses: Vec<SocketAddr>) -> ModelChannel {
    channel_with(addresses, 1)
}

pub(super) fn channel_with(addresses: Vec<SocketAddr>, per_address: usize) -> ModelChannel {
    let resolve: Resolver = Arc::new(move || {
        let now = addresses.clone();
        Box::pin(async move { Ok(now) })
    });
    ModelChannel::with_timing("model:8081".into(), resolve, quick(), Duration::from_secs(60), per_address)
}

/// A listener that is a real HTTP/2 server: it answers pings and takes calls.
pub(super) async fn h2_server() -> SocketAddr {
    counting_h2_server().await.0
}

/// Like `h2_server`, counting the calls each connection took, in the order accepted.
pub(super) async fn counting_h2_server() -> (SocketAddr, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let counts = calls.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(socket).await.unwrap();
                let index = {
                    let mut calls = calls.lock().unwrap();
                    calls.push(0);
                    calls.len() - 1
                };
                while let Some(Ok((_, mut respond))) = connection.accept().await {
                    calls.lock().unwrap()[index] += 1;
                    respond.send_response(http::Response::new(()), true).unwrap();
                }
            });
        }
    });
    (addr, counts)
}

/// A real HTTP/2 server that hands each call to `handle`, on a task of its own.
pub(super) async fn serving<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(socket).await.unwrap();
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(handle(request, respond));
                }
            });
        }
    });
    addr
}

/// An address nothing listens on: connections to it are refused.
pub(super) async fn closed_address() -> SocketAddr {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    closed.local_addr().unwrap()
}

/// An address whose connections hang (as when its node went away and SYNs go
/// unanswered), for as long as the second value lives.
pub(super) async fn unanswering_address() -> (SocketAddr, impl Sized) {
    // A listener whose accept queue is full drops new SYNs: a connect there hangs.
    let hole = TcpSocket::new_v4().unwrap();
    hole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let hole = hole.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(hole_addr)).await {
            fillers.push(s);
        }
    }
    (hole_addr, (hole, fillers))
}

/// One attempt, waited for.
pub(super) async fn attempt(endpoint: &Arc<Endpoint>) {
    let ended = Arc::new(Notify::new());
    let notified = ended.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    endpoint.connect_in_background(quick(), ended.clone());
    notified.await;
}

pub(super) fn connected(endpoint: &Endpoint) -> bool {
    matches!(endpoint.usable(quick()), super::endpoint::Usable::Yes(_))
}

pub(super) fn call() -> http::Request<()> {
    http::Request::post("http://model:8081/sms.v1.SpamClassifier/Classify").body(()).unwrap()
}

/// A request body sent as these data frames.
pub(super) fn body_of(frames: &[&'static [u8]]) -> tonic::body::Body {
    struct Frames(VecDeque<Bytes>);
    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }
    tonic::body::Body::new(Frames(frames.iter().map(|&f| Bytes::from_static(f)).collect()))
}
