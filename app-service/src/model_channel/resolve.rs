//! The model's address set: looked up again and again, and published to the calls as the
//! endpoints (connection slots) to use, `per_address` of them for each address.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::watch;

use super::endpoint::Endpoint;

/// Looks up the model's addresses (DNS in production).
pub type Resolver =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub(super) enum Addresses {
    /// Before the first answer of the resolver.
    Unresolved,
    /// The resolver failed and never answered.
    Failed(String),
    Resolved(Arc<[Arc<Endpoint>]>),
}

/// Asks `resolve` for the address set every `resolve_every`, for as long as a receiver
/// lives, and publishes each change.
pub(super) fn published(
    authority: String,
    resolve: Resolver,
    connect_timeout: Duration,
    resolve_every: Duration,
    per_address: usize,
) -> watch::Receiver<Addresses> {
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
    addresses
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

#[cfg(test)]
mod tests {
    use super::{super::ModelChannel, super::testing::channel, *};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn endpoints(addresses: &watch::Receiver<Addresses>) -> Arc<[Arc<Endpoint>]> {
        match &*addresses.borrow() {
            Addresses::Resolved(endpoints) => endpoints.clone(),
            _ => panic!("not resolved"),
        }
    }

    fn slots(endpoints: &[Arc<Endpoint>]) -> Vec<(SocketAddr, usize)> {
        endpoints.iter().map(|e| (e.addr, e.slot)).collect()
    }

    /// The resolver may answer an address twice and in any order; each address gets
    /// `per_address` endpoints, every address's first before any address's second.
    #[test]
    fn each_address_gets_its_slots_once_every_first_slot_before_any_second() {
        let (publish, addresses) = watch::channel(Addresses::Unresolved);
        resolved(&publish, "model:8081", vec![addr(2), addr(1), addr(2)], 2);
        assert_eq!(slots(&endpoints(&addresses)), [(addr(1), 0), (addr(2), 0), (addr(1), 1), (addr(2), 1)]);
    }

    /// A new lookup keeps the endpoints (and so the connections) of the addresses it
    /// still finds, drops those of the addresses gone, and tells the calls only when the
    /// set changed.
    #[test]
    fn an_address_still_found_keeps_its_endpoints_and_an_unchanged_set_is_not_published() {
        let (publish, mut addresses) = watch::channel(Addresses::Unresolved);
        resolved(&publish, "model:8081", vec![addr(1), addr(2)], 1);
        let before = endpoints(&addresses);
        addresses.mark_unchanged();

        resolved(&publish, "model:8081", vec![addr(2), addr(1)], 1);
        assert!(!addresses.has_changed().unwrap(), "the same addresses were published again");

        resolved(&publish, "model:8081", vec![addr(3), addr(2)], 1);
        assert!(addresses.has_changed().unwrap(), "a changed set was not published");
        let after = endpoints(&addresses);
        assert_eq!(slots(&after), [(addr(2), 0), (addr(3), 0)]);
        assert!(Arc::ptr_eq(&after[0], &before[1]), "the address still found got a new endpoint");
    }

    /// A failed lookup before any answer is the calls' reason to fail; after one, the
    /// addresses known stay in use.
    #[test]
    fn a_failed_lookup_is_reported_until_an_answer_and_then_keeps_the_addresses_known() {
        let (publish, mut addresses) = watch::channel(Addresses::Unresolved);
        resolve_failed(&publish, "model:8081", "no such host".into());
        assert!(matches!(&*addresses.borrow(), Addresses::Failed(reason) if reason == "no such host"));

        resolved(&publish, "model:8081", vec![addr(1)], 1);
        let known = endpoints(&addresses);
        addresses.mark_unchanged();
        resolve_failed(&publish, "model:8081", "timed out".into());
        assert!(!addresses.has_changed().unwrap(), "a failed lookup was published over known addresses");
        assert!(Arc::ptr_eq(&endpoints(&addresses)[0], &known[0]));
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
