//! Starting and stopping a server: bind with an error that names the setting, a handle
//! that stops the server and waits for it, and the signals that ask a process to stop.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// Binds `addr`; the error names the setting that chose it.
pub async fn bind(addr: SocketAddr, what: &str, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr} ({setting})"))
}

/// Resolves once the server is asked to stop. Clone it for every part that must stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A started server: `stop` asks it to stop, lets it finish what it accepted, and
/// returns how it ended.
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ServerHandle {
    /// Runs `serve` (given the stop signal) as a task.
    pub fn spawn<F>(serve: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shutdown, rx) = watch::channel(false);
        Self { task: tokio::spawn(serve(Shutdown(rx))), shutdown }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
