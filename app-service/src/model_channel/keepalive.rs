//! Pings on each connection, idle or busy, so that a model (or a node) that stopped
//! answering loses its connection rather than keeping the calls sent over it.

use super::Timing;

/// Returns when a ping goes unanswered.
pub(super) async fn keepalive(mut pings: h2::PingPong, timing: Timing) {
    loop {
        tokio::time::sleep(timing.keepalive_every).await;
        if !matches!(tokio::time::timeout(timing.keepalive_timeout, pings.ping(h2::Ping::opaque())).await, Ok(Ok(_))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::super::{
        endpoint::{Endpoint, Usable},
        testing::{attempt, connected, h2_server, quick},
    };

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
}
