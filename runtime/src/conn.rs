//! Connections, bounded whatever a client does: every listener closes a connection that
//! sends nothing useful for `IDLE_TIMEOUT_SECS` (an idle keep-alive, a request head that
//! never ends, an HTTP/2 preface that never comes), and a stopping server waits at most
//! `SHUTDOWN_TIMEOUT_SECS` for its connections before it closes them. A listener holds at
//! most `MAX_CONNECTIONS` connections: memory stays bounded whatever the client count
//! (HTTP answers the ones over it 503 with Retry-After; gRPC closes them, which clients
//! see as UNAVAILABLE and retry). The clients beyond wait in the kernel's listen queues
//! (`server::Listener`), which an HTTP accept loop empties on every turn.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::{Instant, Sleep},
};

use crate::{
    server::{Listener, Shutdown},
    settings,
};

/// Called once for each connection refused over MAX_CONNECTIONS (the service counts it).
pub type OnRefused = Arc<dyn Fn() + Send + Sync>;

/// How long connections may hold a server: both bounds are settings of every service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A connection with no complete request head for this long is closed: idle
    /// keep-alives, slow or partial request heads, HTTP/2 prefaces that never come.
    pub idle_timeout: Duration,
    /// After SIGTERM, the longest a server waits for its connections to finish; what is
    /// still open then is closed. Fits the chart's grace period (preStop + 25 s).
    pub shutdown_timeout: Duration,
    /// Connections a listener holds at once; more are refused as they arrive.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(20),
            // Sized by what a connection costs under load (docs/performance.md), so that a
            // listener full of them stays inside the chart's memory limit. Real callers are
            // a handful of app replicas and proxies.
            max_connections: 1024,
        }
    }
}

impl ConnLimits {
    /// The limits from `env`; `d` gives each one's default (a service's own).
    pub fn read(env: &settings::Env<impl Fn(&str) -> Option<String>>, d: Self) -> anyhow::Result<Self> {
        Ok(Self {
            idle_timeout: env.secs("IDLE_TIMEOUT_SECS", d.idle_timeout)?,
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", d.shutdown_timeout)?,
            max_connections: env.parse("MAX_CONNECTIONS", d.max_connections)?,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.idle_timeout.is_zero(), "IDLE_TIMEOUT_SECS must be above 0");
        anyhow::ensure!(!self.shutdown_timeout.is_zero(), "SHUTDOWN_TIMEOUT_SECS must be above 0");
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.max_connections),
            "MAX_CONNECTIONS must be between 1 and 1000000, got {}",
            self.max_connections
        );
        Ok(())
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, then lets open requests finish for at
/// most `limits.shutdown_timeout`. (axum::serve has no header-read timeout: a partial
/// request line held a connection, and SIGTERM, forever.)
pub async fn serve_http<S, B>(
    mut listener: Listener,
    service: S,
    limits: ConnLimits,
    shutdown: Shutdown,
    on_refused: OnRefused,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    let mut slots = Slots::new(limits.max_connections, "HTTP", on_refused);
    let stop = shutdown.clone().requested();
    tokio::pin!(stop);
    let mut accepts = 0u32;
    loop {
        // The loop takes what the kernel queued in one go, not the 128 connections tokio's
        // task budget allows a turn: under a flood its turn came once per round of 1,024
        // busy connections, so clients waited in the queues far longer than their 503 took.
        // It still lets the other tasks run every ACCEPTS_PER_TURN, should the queues never
        // run dry.
        accepts = accepts.wrapping_add(1);
        if accepts.is_multiple_of(ACCEPTS_PER_TURN) {
            tokio::task::yield_now().await;
        }
        let tcp = tokio::select! {
            () = &mut stop => break,
            accepted = tokio::task::coop::unconstrained(listener.accept()) => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors, usually: say so, and let some close.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = slots.take() else {
            // Written here: a new socket's send buffer takes it at once, and a task (and
            // timer) per refusal cost more than the refusal.
            let _ = tcp.try_write(BUSY);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // hyper restarts this timer whenever it waits for a request head, so it is
            // the idle timeout of a keep-alive connection too.
            .header_read_timeout(limits.idle_timeout)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service.clone()));
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.requested() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drain(connections, limits.shutdown_timeout, "HTTP").await;
}

/// Connections an HTTP accept loop takes before it lets other tasks run.
const ACCEPTS_PER_TURN: u32 = 512;

/// The answer to a connection over MAX_CONNECTIONS, which is then closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
        Content-Type: application/json\r\nContent-Length: 67\r\n\r\n\
        {\"error\": \"too many connections; retry in a moment\", \"status\": 503}";

/// The connection budget of one listener (owned by its accept loop); refusals are logged
/// at most once a second, with how many there were.
struct Slots {
    free: Arc<Semaphore>,
    refused: u64,
    logged_at: Option<Instant>,
    what: &'static str,
    on_refused: OnRefused,
}

impl Slots {
    fn new(max: usize, what: &'static str, on_refused: OnRefused) -> Self {
        Self { free: Arc::new(Semaphore::new(max)), refused: 0, logged_at: None, what, on_refused }
    }

    fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        let slot = self.free.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.refused += 1;
            (self.on_refused)();
            if self.logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.logged_at = Some(Instant::now());
                tracing::warn!(
                    refused = std::mem::take(&mut self.refused),
                    "{} connections over MAX_CONNECTIONS refused",
                    self.what
                );
            }
        }
        slot
    }
}

/// Waits for `connections` to end, at most `bound`; closes the rest.
async fn drain(mut connections: JoinSet<()>, bound: Duration, what: &str) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all_done).await.is_err() {
        tracing::warn!(open = connections.len(), "{what} connections still open after {bound:?}: closing them");
        connections.shutdown().await;
    }
}

/// `serve` (a server future that ends once its connections have finished after
/// `shutdown`) waited for at most `bound` after `shutdown`: for servers whose connection
/// tasks are their own (tonic), the process then exits and closes what is left.
pub async fn within<F>(serve: F, shutdown: Shutdown, bound: Duration, what: &str) -> Option<F::Output>
where
    F: Future,
{
    tokio::pin!(serve);
    let deadline = async {
        shutdown.requested().await;
        tokio::time::sleep(bound).await;
    };
    tokio::select! {
        out = &mut serve => Some(out),
        () = deadline => {
            tracing::warn!("{what} connections still open {bound:?} after the stop: closing them");
            None
        }
    }
}

/// A TCP connection that must deliver its first `HTTP2_PREFACE_LEN` bytes (the HTTP/2
/// connection preface) within a deadline, or reads fail with `TimedOut` and the server
/// closes it. After the handshake, HTTP/2 keep-alive pings and the connection age bound
/// take over. (hyper's HTTP/2 server waits for a preface forever.)
pub struct PrefaceDeadline {
    tcp: TcpStream,
    pending: usize,
    deadline: Pin<Box<Sleep>>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`
const HTTP2_PREFACE_LEN: usize = 24;

impl PrefaceDeadline {
    pub fn new(tcp: TcpStream, within: Duration) -> Self {
        let deadline = Box::pin(tokio::time::sleep_until(Instant::now() + within));
        Self { tcp, pending: HTTP2_PREFACE_LEN, deadline, _slot: None }
    }
}

impl AsyncRead for PrefaceDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.pending = this.pending.saturating_sub(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.pending > 0 && this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface within the idle timeout")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for PrefaceDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PrefaceDeadline {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

/// The accepted connections of a gRPC listener, for tonic's `serve_with_incoming`: at most
/// MAX_CONNECTIONS at once, Nagle off, the preface deadline on each, and an accept error (out of file descriptors,
/// usually) logged and retried after a pause instead of spinning.
pub struct GrpcIncoming {
    listener: Listener,
    idle_timeout: Duration,
    slots: Slots,
    pause: Option<Pin<Box<Sleep>>>,
}

impl GrpcIncoming {
    pub fn new(listener: Listener, limits: ConnLimits, on_refused: OnRefused) -> Self {
        Self {
            listener,
            idle_timeout: limits.idle_timeout,
            slots: Slots::new(limits.max_connections, "gRPC", on_refused),
            pause: None,
        }
    }
}

impl tokio_stream::Stream for GrpcIncoming {
    type Item = io::Result<PrefaceDeadline>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                std::task::ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match std::task::ready!(self.listener.poll_accept(cx)) {
                Ok((tcp, _)) => {
                    // Over the budget: closed at once (the client sees UNAVAILABLE).
                    let Some(slot) = self.slots.take() else { continue };
                    // Without it Nagle and delayed ACKs stall small HTTP/2 writes by ~40 ms.
                    let _ = tcp.set_nodelay(true);
                    let mut conn = PrefaceDeadline::new(tcp, self.idle_timeout);
                    conn._slot = Some(slot);
                    return Poll::Ready(Some(Ok(conn)));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a gRPC connection");
                    self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_declares_its_body_length() {
        let text = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize =
            head.split("Content-Length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        assert_eq!(declared, body.len());
    }
}
