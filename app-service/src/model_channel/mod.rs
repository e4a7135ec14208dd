//! The HTTP/2 transport under the app's gRPC clients: a connection to each model address
//! per runtime worker, calls spread over them in turn, and the address set kept up to date
//! by a resolver (DNS in production), because without a sidecar nobody else would spread
//! long-lived HTTP/2 connections' calls.
//!
//! One connection per worker rather than one per address: an `h2` connection keeps all
//! its streams behind one lock, which the workers contend for, and a peer (the model's
//! runtime, a sidecar's Envoy) serves a connection on one of its threads, so a second
//! connection lets both workers and both of the peer's threads run (measured in
//! docs/performance.md).
//!
//! tonic's generated clients run over any tower `Service` of HTTP requests; this is that
//! service, on `h2` directly: the calling task opens the stream, writes the message and
//! reads the answer. tonic's own `Channel` hands each call to a worker task through a
//! queue (tower's `Buffer`), then to hyper's connection task through another, and spawns
//! a task per call to write its body: on the app's hot path that was a fifth of its CPU
//! a request (`make bench`, docs/performance.md).
//!
//! One job a file, in a call's order: `service` sends the call and `body` reads its
//! answer; `balance` picks the connection, from the endpoints `resolve` keeps for the
//! address set; `endpoint` makes an endpoint's connection and makes it again after a
//! pause, and `keepalive` notices when the model stops answering on it.

mod balance;
mod body;
mod endpoint;
mod keepalive;
mod resolve;
mod service;
#[cfg(test)]
mod testing;

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tonic::transport::Uri;

pub use body::AnswerBody;
use resolve::Addresses;
pub use resolve::Resolver;

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
        let origin: Uri = format!("http://{authority}").parse().expect("a host:port is a valid origin");
        let addresses = resolve::published(authority, resolve, timing.connect_timeout, resolve_every, per_address);
        let (next, attempt_ended) = (AtomicUsize::new(0), Arc::new(Notify::new()));
        Self { shared: Arc::new(Shared { origin, timing, addresses, next, attempt_ended }) }
    }

    /// The origin tonic's clients put in front of each call's path.
    pub fn origin(&self) -> Uri {
        self.shared.origin.clone()
    }
}
