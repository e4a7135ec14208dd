//! Picks a call's connection: the endpoints taken in turn, the first live one used, and
//! an endpoint without one connecting in the background meanwhile.

use std::sync::{Arc, atomic::Ordering};

use bytes::Bytes;
use tonic::Status;

use super::{
    Addresses, Shared,
    endpoint::{Endpoint, Usable},
};

impl Shared {
    /// A handle on a live connection, trying the addresses in turn from the next one.
    pub(super) async fn connection(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
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

#[cfg(test)]
mod tests {
    use std::{
        sync::Mutex,
        time::{Duration, Instant},
    };

    use super::{
        super::{
            ModelChannel, Resolver,
            testing::{
                attempt, call, channel, channel_with, closed_address, counting_h2_server, h2_server, quick,
                unanswering_address,
            },
        },
        *,
    };

    /// An address whose connections hang (its node went away; SYNs go unanswered) while
    /// another serves: no call waits for it, and it is marked failing once the attempt
    /// times out.
    #[tokio::test]
    async fn calls_do_not_wait_for_an_address_that_does_not_answer() {
        let (hole_addr, hole) = unanswering_address().await;
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
        drop(hole);
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

    /// The first calls, made before the resolver's first answer, wait for it rather than
    /// fail.
    #[tokio::test]
    async fn a_call_before_the_first_resolution_waits_for_it() {
        let model = h2_server().await;
        let slow: Resolver = Arc::new(move || {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(vec![model])
            })
        });
        let channel = ModelChannel::with_timing("model:8081".into(), slow, quick(), Duration::from_secs(60), 1);
        channel.shared.connection().await.expect("the call did not wait for the first resolution");
    }

    /// A call's turn picks where the search starts: the first live connection from there
    /// on, past an address that failed, and round the end of the list to its start.
    #[tokio::test]
    async fn a_call_takes_the_next_live_connection_from_its_turn_on() {
        let ((a, calls_a), (b, calls_b)) = (counting_h2_server().await, counting_h2_server().await);
        let endpoints: Vec<Arc<Endpoint>> =
            [a, closed_address().await, b].into_iter().map(|addr| Arc::new(Endpoint::new(addr, 0))).collect();
        for endpoint in &endpoints {
            attempt(endpoint).await;
        }
        let shared = channel(vec![]).shared;
        let calls_taken = |calls: &Mutex<Vec<usize>>| calls.lock().unwrap().iter().sum::<usize>();
        for (first, taken) in [(1, (0, 1)), (2, (0, 2)), (3, (1, 2)), (0, (2, 2))] {
            let mut send = shared.scan(&endpoints, first).expect("no connection found").expect("refused");
            let (answer, _) = send.send_request(call(), true).unwrap();
            answer.await.unwrap();
            assert_eq!((calls_taken(&calls_a), calls_taken(&calls_b)), taken, "from {first}");
        }
    }

    /// Refused at once, with the reason, only when no address may still connect: while
    /// one is connecting, a call waits for it even though another failed.
    #[tokio::test]
    async fn a_call_is_refused_only_when_no_address_is_still_connecting() {
        let (refused_a, refused_b) = (closed_address().await, closed_address().await);
        let (hanging, hole) = unanswering_address().await;
        let endpoint = |addr| Arc::new(Endpoint::new(addr, 0));
        let (a, b, silent) = (endpoint(refused_a), endpoint(refused_b), endpoint(hanging));
        attempt(&a).await;
        attempt(&b).await;
        let shared = channel(vec![]).shared;

        match shared.scan(&[a.clone(), b.clone()], 0) {
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                assert!(status.message().starts_with("cannot connect to the model at "), "{status:?}");
            }
            Some(Ok(_)) => panic!("a connection to a closed port"),
            None => panic!("a call waits though every address failed a moment ago"),
        }
        assert!(shared.scan(&[a, silent.clone(), b], 0).is_none(), "a call was refused while an address connects");
        assert!(matches!(silent.usable(quick()), Usable::Connecting), "the untried address was not tried");
        drop(hole);
    }
}
