//! An in-process stand-in for the model tier, for the failure paths a real model never
//! shows on demand: refusals, errors, stalls past the deadline and malformed answers.
//! Everything else is tested against the real model service.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use sms_proto::v1::{
    ClassifyRequest, ClassifyResponse, Disagreements, GetModelInfoRequest, ListDisagreementsRequest, ModelInfo,
    spam_classifier_server::{SpamClassifier, SpamClassifierServer},
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// What the fake answers to every Classify call.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Answer {
        label: &'static str,
        spam_probability: f32,
    },
    Fail(tonic::Code),
    /// Answers only after this long (past the app's deadline).
    Stall(Duration),
}

#[derive(Clone)]
struct Fake(Arc<Mutex<Behaviour>>);

#[tonic::async_trait]
impl SpamClassifier for Fake {
    async fn classify(&self, _: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let behaviour = self.0.lock().unwrap().clone();
        let answer = |label: &str, spam_probability| {
            Ok(Response::new(ClassifyResponse {
                label: label.into(),
                spam_probability,
                model_version: "v1".into(),
                model_name: "fake".into(),
            }))
        };
        match behaviour {
            Behaviour::Answer { label, spam_probability } => answer(label, spam_probability),
            Behaviour::Fail(code) => Err(Status::new(code, "the fake model was told to fail")),
            Behaviour::Stall(d) => {
                tokio::time::sleep(d).await;
                answer("spam", 0.9)
            }
        }
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        Err(Status::unimplemented("not needed by the app"))
    }

    async fn list_disagreements(
        &self,
        _: Request<ListDisagreementsRequest>,
    ) -> Result<Response<Disagreements>, Status> {
        Err(Status::unimplemented("not needed by the app"))
    }
}

pub struct FakeModel {
    /// Where the app should call: a relay in front of the fake, so the fake can "crash".
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Option<oneshot::Sender<()>>,
    relay: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    /// Serves on 127.0.0.1 port 0, SERVING in its health check.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<SpamClassifierServer<Fake>>().await;
        let (stop, stopped) = oneshot::channel();
        let service = SpamClassifierServer::new(Fake(behaviour.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        let (relay, addr) = relay(addr).await;
        Self { addr, behaviour, stop: Some(stop), relay }
    }

    /// Dies as a crashed process does: every connection dropped at once, nobody listening.
    pub fn crash(self) {
        self.relay.abort();
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.relay.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP relay to `target` whose task owns every relayed connection: aborting it drops
/// them all at once, as the kernel does when a process dies.
async fn relay(target: SocketAddr) -> (tokio::task::JoinHandle<()>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (task, addr)
}
