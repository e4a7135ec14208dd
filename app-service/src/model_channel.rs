//! The HTTP/2 transport under the app's gRPC clients: a connection to each model address
//! per runtime worker, calls spread over them in turn, and the address set kept up to date
//! by a resolver (DNS in production), because without a sidecar nobody else would spread
//! long-lived HTTP/2 connections' calls.
//!
//! One connection per worker rather than one per address: an `h2` connection keeps all
//! its streams behind one lock, which the workers contend for, and a peer (the model's
//! runtime, a sidecar's Envoy) serves a connection on one of its threads; at c16 on two
//! cores the second connection gave the app end to end 9-14 % more answers a second
//! (README "Performance").
//!
//! tonic's generated clients run over any tower `Service` of HTTP requests; this is that
//! service, on `h2` directly: the calling task opens the stream, writes the message and
//! reads the answer. tonic's own `Channel` hands each call to a worker task through a
//! queue (tower's `Buffer`), then to hyper's connection task through another, and spawns
//! a task per call to write its body: on the app's hot path that was a fifth of its CPU
//! a request (`make bench`, README "Performance").

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::{
    net::TcpStream,
    sync::{Notify, watch},
    task::JoinHandle,
};
use tonic::{Status, transport::Uri};

/// Looks up the model's addresses (DNS in production).
pub type Resolver =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How connections are made and watched.
#[derive(Debug, Clone, Copy)]
struct Timing {
    connect_timeout: Duration,
    /// After a failed connection attempt, an address is not tried again for this long:
    /// calls go to the other addresses meanwhile, or are refused at once with the reason,
    /// rather than each waiting out a connect timeout against a model that is down.
    reconnect_after: Duration,
    /// A connection, idle or busy, is pinged this often; a model (or a node) that stopped
    /// answering is noticed within `keepalive_timeout` and its connection replaced.
    keepalive_every: Duration,
    keepalive_timeout: Duration,
}

impl Timing {
    fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            reconnect_after: Duration::from_secs(1),
            keepalive_every: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

const USER_AGENT: &str = concat!("sms-app-service/", env!("CARGO_PKG_VERSION"));
/// Bounds what one answer's headers may hold (a gRPC answer's are a few hundred bytes).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The model tier as one tower service; cheap to clone (all clones share the connections).
#[derive(Clone)]
pub struct ModelChannel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `http://host:port` as configured: the `:authority` of every call (Istio routes on
    /// the host name), whichever address the connection goes to.
    origin: Uri,
    timing: Timing,
    addresses: watch::Receiver<Addresses>,
    next: AtomicUsize,
    /// Told whenever a connection attempt ends, for the calls that found no connection.
    attempt_ended: Arc<Notify>,
}

#[derive(Clone)]
enum Addresses {
    /// Before the first answer of the resolver.
    Unresolved,
    /// The resolver failed and never answered.
    Failed(String),
    Resolved(Arc<[Arc<Endpoint>]>),
}

impl ModelChannel {
    /// Connects lazily (the app starts, and stays up, while the model is down) and asks
    /// `resolve` for the address set every `resolve_every`, for as long as a clone lives.
    /// Runs on the tokio runtime whose workers make the calls: it opens that many
    /// connections to each address.
    pub fn new(authority: String, resolve: Resolver, connect_timeout: Duration, resolve_every: Duration) -> Self {
        let per_address = tokio::runtime::Handle::current().metrics().num_workers();
        Self::with_timing(authority, resolve, Timing::new(connect_timeout), resolve_every, per_address)
    }

    fn with_timing(
        authority: String,
        resolve: Resolver,
        timing: Timing,
        resolve_every: Duration,
        per_address: usize,
    ) -> Self {
        let per_address = per_address.max(1);
        let connect_timeout = timing.connect_timeout;
        let origin: Uri = format!("http://{authority}").parse().expect("a host:port is a valid origin");
        let (publish, addresses) = watch::channel(Addresses::Unresolved);
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(connect_timeout.max(Duration::from_secs(2)), resolve()).await {
                    Ok(Ok(found)) => resolved(&publish, &authority, found, per_address),
                    Ok(Err(e)) => resolve_failed(&publish, &authority, format!("cannot resolve the model host: {e}")),
                    Err(_) => resolve_failed(&publish, &authority, "resolving the model host timed out".into()),
                }
                if publish.is_closed() {
                    return;
                }
                tokio::time::sleep(resolve_every).await;
            }
        });
        let (next, attempt_ended) = (AtomicUsize::new(0), Arc::new(Notify::new()));
        Self { shared: Arc::new(Shared { origin, timing, addresses, next, attempt_ended }) }
    }

    /// The origin tonic's clients put in front of each call's path.
    pub fn origin(&self) -> Uri {
        self.shared.origin.clone()
    }
}

fn resolved(publish: &watch::Sender<Addresses>, authority: &str, mut found: Vec<SocketAddr>, per_address: usize) {
    found.sort();
    found.dedup();
    // Every address's first connection, then every address's second, and so on: calls
    // taken in turn go to the addresses in turn.
    let wanted: Vec<(SocketAddr, usize)> =
        (0..per_address).flat_map(|slot| found.iter().map(move |&addr| (addr, slot))).collect();
    publish.send_if_modified(|current| {
        let kept = match current {
            Addresses::Resolved(kept) if kept.iter().map(|e| (e.addr, e.slot)).eq(wanted.iter().copied()) => {
                return false;
            }
            Addresses::Resolved(kept) => kept.clone(),
            _ => Arc::from([]),
        };
        tracing::info!(model_host = %authority, addresses = ?found, "model endpoints updated");
        // An address still there keeps its connections; one that left is dropped, and its
        // connections close once their calls finish.
        let endpoints = wanted
            .iter()
            .map(|&(addr, slot)| {
                kept.iter()
                    .find(|e| (e.addr, e.slot) == (addr, slot))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(addr, slot)))
            })
            .collect();
        *current = Addresses::Resolved(endpoints);
        true
    });
}

fn resolve_failed(publish: &watch::Sender<Addresses>, authority: &str, reason: String) {
    tracing::warn!(model_host = %authority, "{reason}");
    // Known addresses are kept: a DNS hiccup does not take the model away.
    publish.send_if_modified(|current| match current {
        Addresses::Resolved(_) => false,
        _ => {
            *current = Addresses::Failed(reason);
            true
        }
    });
}

impl Shared {
    /// A handle on a live connection, trying the addresses in turn from the next one.
    async fn connection(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
        let mut addresses = self.addresses.borrow().clone();
        if matches!(addresses, Addresses::Unresolved) {
            // Only right after the start: the first answer of the resolver is on its way.
            let mut published = self.addresses.clone();
            addresses = match published.wait_for(|a| !matches!(a, Addresses::Unresolved)).await {
                Ok(resolved) => resolved.clone(),
                Err(_) => return Err(Status::unavailable("the model host's resolver stopped")),
            };
        }
        let endpoints = match addresses {
            Addresses::Resolved(endpoints) => endpoints,
            Addresses::Failed(reason) => return Err(Status::unavailable(reason)),
            Addresses::Unresolved => return Err(Status::unavailable("the model host is not resolved yet")),
        };
        if endpoints.is_empty() {
            return Err(Status::unavailable("the model host resolves to no address"));
        }
        // A live connection, the addresses taken in turn; an address without one starts
        // connecting in the background and the call moves on, so calls never queue behind
        // an address that does not answer while another does (a node that went away).
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        loop {
            if let Some(found) = self.scan(&endpoints, first) {
                return found;
            }
            // Nothing live yet: wait for an attempt to end (the call's deadline bounds it),
            // looking once more after registering, in case one ended just before.
            let attempt_ended = self.attempt_ended.notified();
            tokio::pin!(attempt_ended);
            attempt_ended.as_mut().enable();
            if let Some(found) = self.scan(&endpoints, first) {
                return found;
            }
            attempt_ended.await;
        }
    }

    /// The first live connection from `first` on, or the failure if every address failed
    /// a moment ago; None while attempts are under way (started here where needed).
    fn scan(
        &self,
        endpoints: &[Arc<Endpoint>],
        first: usize,
    ) -> Option<Result<h2::client::SendRequest<Bytes>, Status>> {
        let (mut failure, mut connecting) = (None, false);
        for i in 0..endpoints.len() {
            let endpoint = &endpoints[(first + i) % endpoints.len()];
            match endpoint.usable(self.timing) {
                Usable::Yes(send) => return Some(Ok(send)),
                Usable::Failing(status) => failure = Some(status),
                Usable::Connecting => connecting = true,
                Usable::Connect => {
                    endpoint.connect_in_background(self.timing, self.attempt_ended.clone());
                    connecting = true;
                }
            }
        }
        match failure {
            Some(status) if !connecting => Some(Err(status)),
            _ => None,
        }
    }
}

/// One connection to a model address (of the `per_address` it gets), and its state.
struct Endpoint {
    addr: SocketAddr,
    /// Which of the address's connections this is.
    slot: usize,
    state: Mutex<EndpointState>,
}

#[derive(Default)]
struct EndpointState {
    live: Option<Connection>,
    /// An attempt is under way (one at a time).
    connecting: bool,
    /// When the last attempt failed, and why.
    failed: Option<(Instant, String)>,
}

struct Connection {
    send: h2::client::SendRequest<Bytes>,
    /// Drives the connection; it ends when the connection does (closed by either side,
    /// a GOAWAY after its last call, unanswered pings).
    task: JoinHandle<()>,
}

enum Usable {
    Yes(h2::client::SendRequest<Bytes>),
    /// Failed a moment ago: not tried again yet.
    Failing(Status),
    Connecting,
    Connect,
}

impl Endpoint {
    fn new(addr: SocketAddr, slot: usize) -> Self {
        Self { addr, slot, state: Mutex::default() }
    }

    fn usable(&self, timing: Timing) -> Usable {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = &mut state.live {
            // Ready unless the connection failed or the model sent GOAWAY (it takes no new
            // calls); with no call of its own queued, the handle never waits.
            let open = !live.task.is_finished()
                && matches!(live.send.poll_ready(&mut Context::from_waker(Waker::noop())), Poll::Ready(Ok(())));
            if open {
                return Usable::Yes(live.send.clone());
            }
            state.live = None;
        }
        if state.connecting {
            return Usable::Connecting;
        }
        match &state.failed {
            Some((at, reason)) if at.elapsed() < timing.reconnect_after => {
                Usable::Failing(cannot_connect(self.addr, reason))
            }
            _ => Usable::Connect,
        }
    }

    /// Starts an attempt unless one is under way; `ended` is told when it ends.
    fn connect_in_background(self: &Arc<Self>, timing: Timing, ended: Arc<Notify>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.connecting {
                return;
            }
            state.connecting = true;
        }
        let endpoint = self.clone();
        tokio::spawn(async move {
            let attempt = tokio::time::timeout(timing.connect_timeout, connect(endpoint.addr, timing)).await;
            let mut state = endpoint.state.lock().unwrap_or_else(|e| e.into_inner());
            state.connecting = false;
            match attempt {
                Ok(Ok(live)) => {
                    tracing::debug!(addr = %endpoint.addr, "connected to the model");
                    (state.live, state.failed) = (Some(live), None);
                }
                Ok(Err(e)) => endpoint.failed(&mut state, e.to_string()),
                Err(_) => endpoint.failed(&mut state, format!("no connection within {:?}", timing.connect_timeout)),
            }
            drop(state);
            ended.notify_waiters();
        });
    }

    fn failed(&self, state: &mut EndpointState, reason: String) {
        tracing::warn!(addr = %self.addr, "cannot connect to the model: {reason}");
        state.failed = Some((Instant::now(), reason));
    }
}

fn cannot_connect(addr: SocketAddr, reason: &str) -> Status {
    Status::unavailable(format!("cannot connect to the model at {addr}: {reason}"))
}

async fn connect(addr: SocketAddr, timing: Timing) -> Result<Connection, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .handshake::<_, Bytes>(tcp)
        .await?;
    let pings = connection.ping_pong().expect("a new connection's pings are not taken yet");
    let task = tokio::spawn(async move {
        tokio::select! {
            closed = connection => if let Err(e) = closed {
                tracing::debug!(%addr, "the model connection ended: {e}");
            },
            () = keepalive(pings, timing) => tracing::warn!(%addr, "the model stopped answering pings; reconnecting"),
        }
    });
    Ok(Connection { send, task })
}

/// Returns when a ping goes unanswered.
async fn keepalive(mut pings: h2::PingPong, timing: Timing) {
    loop {
        tokio::time::sleep(timing.keepalive_every).await;
        if !matches!(tokio::time::timeout(timing.keepalive_timeout, pings.ping(h2::Ping::opaque())).await, Ok(Ok(_))) {
            return;
        }
    }
}

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

/// The body of the model's answer: its data frames, then its trailers (the gRPC status).
pub struct AnswerBody {
    stream: h2::RecvStream,
    data_done: bool,
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
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;

    fn quick() -> Timing {
        Timing {
            connect_timeout: Duration::from_millis(500),
            reconnect_after: Duration::from_millis(300),
            keepalive_every: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(200),
        }
    }

    fn channel(addresses: Vec<SocketAddr>) -> ModelChannel {
        channel_with(addresses, 1)
    }

    fn channel_with(addresses: Vec<SocketAddr>, per_address: usize) -> ModelChannel {
        let resolve: Resolver = Arc::new(move || {
            let now = addresses.clone();
            Box::pin(async move { Ok(now) })
        });
        ModelChannel::with_timing("model:8081".into(), resolve, quick(), Duration::from_secs(60), per_address)
    }

    /// A listener that is a real HTTP/2 server: it answers pings and takes calls.
    async fn h2_server() -> SocketAddr {
        counting_h2_server().await.0
    }

    /// Like `h2_server`, counting the calls each connection took, in the order accepted.
    async fn counting_h2_server() -> (SocketAddr, Arc<Mutex<Vec<usize>>>) {
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

    /// One attempt, waited for.
    async fn attempt(endpoint: &Arc<Endpoint>) {
        let ended = Arc::new(Notify::new());
        let notified = ended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        endpoint.connect_in_background(quick(), ended.clone());
        notified.await;
    }

    fn connected(endpoint: &Endpoint) -> bool {
        matches!(endpoint.usable(quick()), Usable::Yes(_))
    }

    /// A peer that is a real HTTP/2 server keeps its connection; one that accepted the
    /// connection and went silent (a stalled process, a vanished node) loses it to the
    /// pings' timeout, and the next call connects again.
    #[tokio::test]
    async fn a_connection_whose_pings_go_unanswered_is_replaced() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move { silent.accept().await.unwrap() });
        let good = Arc::new(Endpoint::new(h2_server().await, 0));
        let stalled = Arc::new(Endpoint::new(silent_addr, 0));
        attempt(&good).await;
        attempt(&stalled).await;
        assert!(connected(&good) && connected(&stalled));
        let pings_timed_out = quick().keepalive_every + quick().keepalive_timeout;
        tokio::time::sleep(pings_timed_out * 3).await;
        assert!(connected(&good), "a connection whose pings are answered was dropped");
        assert!(matches!(stalled.usable(quick()), Usable::Connect), "a connection whose pings go unanswered was kept");
        drop(held);
    }

    /// A refused connection is reported, and the address is left alone for
    /// `reconnect_after`: the calls meanwhile fail at once without a connection attempt.
    #[tokio::test]
    async fn an_address_that_refused_a_connection_is_tried_again_after_a_pause() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let channel = channel(vec![addr]);
        let refused = channel.shared.connection().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().starts_with(&format!("cannot connect to the model at {addr}: ")), "{refused:?}");

        // The model comes back at once; within the pause no call connects.
        let listener = TcpListener::bind(addr).await.unwrap();
        let status = channel.shared.connection().await.unwrap_err();
        assert_eq!(status.message(), refused.message());
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was attempted during the pause");
        tokio::time::sleep(quick().reconnect_after).await;
        let (connected, accepted) = tokio::join!(channel.shared.connection(), listener.accept());
        connected.unwrap();
        accepted.unwrap();
    }

    /// An address whose connections hang (its node went away; SYNs go unanswered) while
    /// another serves: no call waits for it, and it is marked failing once the attempt
    /// times out.
    #[tokio::test]
    async fn calls_do_not_wait_for_an_address_that_does_not_answer() {
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
        let channel = channel(vec![hole_addr, h2_server().await]);
        let started = Instant::now();
        for _ in 0..10 {
            channel.shared.connection().await.unwrap();
        }
        let took = started.elapsed();
        assert!(took < quick().connect_timeout / 2, "10 calls took {took:?}: some waited for the silent address");

        // The attempt times out `connect_timeout` after the first call; the address then
        // fails for `reconnect_after`.
        tokio::time::sleep(quick().connect_timeout + quick().reconnect_after / 2 - took).await;
        let Addresses::Resolved(endpoints) = channel.shared.addresses.borrow().clone() else { panic!("not resolved") };
        let hole_endpoint = endpoints.iter().find(|e| e.addr == hole_addr).unwrap();
        match hole_endpoint.usable(quick()) {
            Usable::Failing(status) => assert!(status.message().ends_with("no connection within 500ms"), "{status:?}"),
            _ => panic!("the silent address is not marked failing"),
        }
        drop((hole, fillers));
    }

    fn call() -> http::Request<()> {
        http::Request::post("http://model:8081/sms.v1.SpamClassifier/Classify").body(()).unwrap()
    }

    /// Each address gets `per_address` connections (one per runtime worker), and calls
    /// taken in turn go to every address, then to every address's next connection.
    #[tokio::test]
    async fn calls_are_spread_over_the_connections_to_each_address() {
        let ((a, calls_a), (b, calls_b)) = (counting_h2_server().await, counting_h2_server().await);
        let channel = channel_with(vec![a, b], 2);
        for _ in 0..8 {
            let mut send = channel.shared.connection().await.unwrap();
            let (answer, _) = send.send_request(call(), true).unwrap();
            answer.await.unwrap();
        }
        // The first call starts every connection, and the first calls take those made.
        let made = |calls: &Mutex<Vec<usize>>| calls.lock().unwrap().len();
        let started = Instant::now();
        while (made(&calls_a), made(&calls_b)) != (2, 2) && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // the client's side of the last one
        let (mut taken_a, mut taken_b) = (calls_a.lock().unwrap().clone(), calls_b.lock().unwrap().clone());
        assert_eq!((taken_a.len(), taken_b.len()), (2, 2), "connections to a: {taken_a:?}, b: {taken_b:?}");
        assert_eq!(taken_a.iter().chain(&taken_b).sum::<usize>(), 8);

        for _ in 0..8 {
            let mut send = channel.shared.connection().await.unwrap();
            let (answer, _) = send.send_request(call(), true).unwrap();
            answer.await.unwrap();
        }
        let after = |now: &Mutex<Vec<usize>>, before: &[usize]| -> Vec<usize> {
            now.lock().unwrap().iter().zip(before).map(|(n, b)| n - b).collect()
        };
        (taken_a, taken_b) = (after(&calls_a, &taken_a), after(&calls_b, &taken_b));
        assert_eq!((taken_a, taken_b), (vec![2, 2], vec![2, 2]), "8 calls once every connection is up");
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_is_a_clear_unavailable() {
        let cannot: Resolver = Arc::new(|| Box::pin(async { Err(std::io::Error::other("no such host")) }));
        let unresolvable =
            ModelChannel::new("model:8081".into(), cannot, Duration::from_millis(500), Duration::from_secs(60));
        let status = unresolvable.shared.connection().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "cannot resolve the model host: no such host");

        let status = channel(vec![]).shared.connection().await.unwrap_err();
        assert_eq!(status.message(), "the model host resolves to no address");
    }
}
