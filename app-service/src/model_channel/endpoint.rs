//! One connection slot to a model address: its connection, made in the background when a
//! call finds none, and after a failed attempt a pause before the next.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::Bytes;
use tokio::{net::TcpStream, sync::Notify, task::JoinHandle};
use tonic::Status;

use super::{BoxError, Timing, keepalive::keepalive};

/// Bounds what one answer's headers may hold (a gRPC answer's are a few hundred bytes).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// One connection to a model address (of the `per_address` it gets), and its state.
pub(super) struct Endpoint {
    pub(super) addr: SocketAddr,
    /// Which of the address's connections this is.
    pub(super) slot: usize,
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

pub(super) enum Usable {
    Yes(h2::client::SendRequest<Bytes>),
    /// Failed a moment ago: not tried again yet.
    Failing(Status),
    Connecting,
    Connect,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr, slot: usize) -> Self {
        Self { addr, slot, state: Mutex::default() }
    }

    pub(super) fn usable(&self, timing: Timing) -> Usable {
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
    pub(super) fn connect_in_background(self: &Arc<Self>, timing: Timing, ended: Arc<Notify>) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::{
        super::testing::{attempt, channel, closed_address, connected, counting_h2_server, quick},
        *,
    };

    /// A refused connection is reported, and the address is left alone for
    /// `reconnect_after`: the calls meanwhile fail at once without a connection attempt.
    #[tokio::test]
    async fn an_address_that_refused_a_connection_is_tried_again_after_a_pause() {
        let addr = closed_address().await;
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

    /// Calls that find no connection all ask for one; the endpoint makes one.
    #[tokio::test]
    async fn one_connection_attempt_runs_at_a_time() {
        let (addr, connections) = counting_h2_server().await;
        let endpoint = Arc::new(Endpoint::new(addr, 0));
        let ended = Arc::new(Notify::new());
        let notified = ended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        for _ in 0..3 {
            endpoint.connect_in_background(quick(), ended.clone());
        }
        assert!(matches!(endpoint.usable(quick()), Usable::Connecting));
        notified.await;
        assert!(connected(&endpoint));
        tokio::time::sleep(Duration::from_millis(50)).await; // the server's side of any other
        assert_eq!(connections.lock().unwrap().len(), 1, "more than one connection was made");
    }

    /// A model that shuts down (a rolling update) says GOAWAY and closes its connection:
    /// the endpoint stops handing it out, and the next call connects again.
    #[tokio::test]
    async fn a_connection_the_model_closes_is_not_handed_out_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            connection.graceful_shutdown();
            while let Some(Ok(_)) = connection.accept().await {}
        });
        let endpoint = Arc::new(Endpoint::new(addr, 0));
        attempt(&endpoint).await;
        let started = Instant::now();
        while connected(&endpoint) && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(endpoint.usable(quick()), Usable::Connect), "a closed connection is still handed out");
    }
}
