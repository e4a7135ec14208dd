//! Starting and stopping a server: bind with an error that names the setting, a handle
//! that stops the server and waits for it, and the signals that ask a process to stop.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    task::{Context as TaskContext, Poll},
};

use anyhow::Context;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Connections the kernel may hold in one listen queue before the server accepts them (it
/// caps this at `net.core.somaxconn`, 4,096 by default). Tokio's default, the standard
/// library's 128, overflowed when 10,000 clients reconnected at once: a connection the
/// kernel cannot queue is dropped, and its client retries a second or more later.
const LISTEN_BACKLOG: u32 = 4096;

/// Listen queues per address (SO_REUSEPORT: the kernel spreads new connections over them),
/// so 4 x 4,096 clients wait their turn instead of one queue's 4,096: under make bench's
/// app overload one queue dropped thousands of attempts, four none (docs/performance.md).
const LISTEN_QUEUES: usize = 4;

/// The cores this process may use (a container's CPU limit included).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One listening address: `LISTEN_QUEUES` kernel listen queues, accepted from in turn.
pub struct Listener {
    queues: Vec<TcpListener>,
    next: usize,
}

impl Listener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.queues[0].local_addr()
    }

    /// The next connection from any queue; the queues take turns, so none waits behind
    /// another that always has connections.
    pub fn poll_accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let n = self.queues.len();
        for i in 0..n {
            let k = (self.next + i) % n;
            if let Poll::Ready(accepted) = self.queues[k].poll_accept(cx) {
                self.next = (k + 1) % n;
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    }

    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

/// Binds `addr` (its `LISTEN_QUEUES` queues); the error names the setting that chose it.
pub async fn bind(addr: SocketAddr, what: &str, setting: &str) -> anyhow::Result<Listener> {
    let listen = || -> io::Result<Listener> {
        // A given port is bound plainly first: with SO_REUSEPORT alone a second copy of the
        // service would bind a taken port and silently take some of its connections. (Port
        // 0 is a fresh port: the first queue's, which the others then share.)
        if addr.port() != 0 {
            drop(std::net::TcpListener::bind(addr)?);
        }
        let queue = |addr: SocketAddr| {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            // As TcpListener::bind does: a restarted server may bind while old
            // connections linger in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(LISTEN_BACKLOG)
        };
        let first = queue(addr)?;
        let addr = first.local_addr()?;
        let mut queues = vec![first];
        for _ in 1..LISTEN_QUEUES {
            queues.push(queue(addr)?);
        }
        Ok(Listener { queues, next: 0 })
    };
    listen().with_context(|| format!("cannot listen for {what} on {addr} ({setting})"))
}

/// Resolves once the server is asked to stop. Clone it for every part that must stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A started server and what it tells about itself (`T`: its addresses, ...; reachable
/// through `Deref`). `stop` asks it to stop, lets it finish what it accepted, and
/// returns how it ended.
pub struct Running<T> {
    info: T,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl<T> Running<T> {
    /// Runs `serve` (given the stop signal) as a task.
    pub fn spawn<F>(info: T, serve: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shutdown, rx) = watch::channel(false);
        Self { info, task: tokio::spawn(serve(Shutdown(rx))), shutdown }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }
}

impl<T> std::ops::Deref for Running<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.info
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

/// The whole life of a service process: settings (a mistake is one line on stderr,
/// before anything starts), a tokio runtime with the service's RUNTIME_THREADS workers
/// (`#[tokio::main]` would take one per core), telemetry, start, serve until SIGTERM or
/// Ctrl-C, drain.
pub fn run<C, T: std::fmt::Display>(
    name: &'static str,
    config: anyhow::Result<C>,
    telemetry: impl FnOnce(&C) -> &crate::telemetry::TelemetryConfig,
    runtime_threads: impl FnOnce(&C) -> usize,
    start: impl AsyncFnOnce(C) -> anyhow::Result<Running<T>>,
) -> std::process::ExitCode {
    let failed = |what: &str, err: anyhow::Error| {
        eprintln!("{name}: {what}: {err:#}");
        std::process::ExitCode::FAILURE
    };
    let config = match config {
        Ok(c) => c,
        Err(err) => return failed("cannot start", err),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads(&config).max(1))
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(err) => return failed("cannot start the tokio runtime", err.into()),
    };
    runtime.block_on(async move {
        let _telemetry = crate::telemetry::init(name, telemetry(&config));
        let service = match start(config).await {
            Ok(s) => s,
            // One line that says what is missing and how to get it.
            Err(err) => return failed("cannot start", err),
        };
        let serving_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!("{name} ready: {}; {serving_threads} serving threads", *service);
        let trimming = tokio::spawn(return_freed_memory());
        shutdown_signal().await;
        trimming.abort();
        tracing::info!("shutting down: finishing what was accepted");
        match service.stop().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => failed("stopped with an error", err),
        }
    })
}

/// After a burst (thousands of connections, a queue of refused calls) glibc keeps the freed
/// memory mapped, so RSS stays near its peak for good (docs/performance.md). Handing free
/// pages back every few seconds lets RSS fall back with the load; with little free memory
/// it costs next to nothing.
async fn return_freed_memory() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes glibc's
        // own arena locks and touches no memory in use.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn a_listener_spreads_its_clients_over_its_queues_and_accepts_from_each() {
        let mut listener = super::bind("127.0.0.1:0".parse().unwrap(), "test", "TEST_ADDR").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let clients: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // Each queue on its own: the kernel spread the connections over them.
        let mut per_queue = Vec::new();
        for queue in &listener.queues {
            let mut n = 0;
            while let Ok(accepted) = tokio::time::timeout(Duration::from_millis(200), queue.accept()).await {
                accepted.unwrap();
                n += 1;
            }
            per_queue.push(n);
        }
        assert_eq!(per_queue.iter().sum::<usize>(), clients.len(), "{per_queue:?}");
        assert!(per_queue.iter().filter(|&&n| n > 0).count() >= 2, "{per_queue:?}");
        // And through the listener, whichever queue a connection is in.
        let more: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        for _ in &more {
            tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_that_names_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let _holder = super::bind(taken, "test", "TEST_ADDR").await.unwrap();
        let err = super::bind(taken, "test", "TEST_ADDR").await.err().expect("a second bind of a taken port");
        assert!(err.to_string().contains(&format!("cannot listen for test on {taken} (TEST_ADDR)")), "{err:#}");
    }
}
