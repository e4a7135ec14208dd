//! Log lines reach stdout in batches written by one background thread, so a request's log
//! line costs a copy into memory instead of a write(2) under the stdout lock on the
//! request path (`make bench`: the per-call line cost the model service about a fifth of
//! its throughput). Bounded: at most `MAX_PENDING` bytes wait; lines beyond it are dropped
//! and counted, and the count is logged as a warning. A line waits at most
//! `FLUSH_EVERY`; the rest is written when the guard is dropped (the process stopping).
//! What a SIGKILL loses is those last milliseconds.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Written at once when this much waits (a few hundred lines).
const WRITE_AT: usize = 64 * 1024;
const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The `MakeWriter` for the fmt layer: each event is formatted into its own buffer and
/// handed over whole when the event's writer is dropped.
#[derive(Clone)]
pub struct BatchedStdout(Arc<Shared>);

/// Writes what is pending and stops the writer thread when dropped.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer for the fmt layer, and the guard that flushes it.
pub fn batched_stdout() -> (BatchedStdout, Flusher) {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_batches(&for_thread))
        .expect("start the log writer thread");
    (BatchedStdout(shared.clone()), Flusher { shared, thread: Some(thread) })
}

fn write_batches(shared: &Shared) {
    let mut batch = Vec::with_capacity(WRITE_AT);
    loop {
        let (closing, dropped) = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.bytes.is_empty() && !pending.closing {
                pending = shared.wake.wait_timeout(pending, FLUSH_EVERY).unwrap_or_else(|e| e.into_inner()).0;
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            (pending.closing, std::mem::take(&mut pending.dropped))
        };
        if dropped > 0 {
            // A log line like the others (text or JSON), in the next batch.
            tracing::warn!(dropped, "log lines dropped: stdout was not read fast enough");
        }
        if !batch.is_empty() {
            // Nowhere to report a failed write to; the next batch tries again.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        // A drop warning logged just now is written by one more round.
        if closing && dropped == 0 {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's bytes on their way to the batch.
pub struct EventWriter {
    shared: Arc<Shared>,
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { shared: self.0.clone(), line: Vec::with_capacity(256) }
    }
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.bytes.len() + self.line.len() > MAX_PENDING {
            pending.dropped += 1;
            return;
        }
        pending.bytes.extend_from_slice(&self.line);
        if pending.bytes.len() >= WRITE_AT {
            self.shared.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_lines(writer: &BatchedStdout, n: usize, line: &[u8]) {
        for _ in 0..n {
            let mut w = writer.make_writer();
            w.write_all(line).unwrap();
        }
    }

    #[test]
    fn a_stdout_nobody_reads_costs_at_most_the_bound_and_drops_are_counted() {
        // No writer thread: nothing is taken out, as when stdout blocks.
        let writer = BatchedStdout(Arc::new(Shared::default()));
        let line = [b'x'; 1000];
        log_lines(&writer, MAX_PENDING / line.len() + 50, &line);
        let pending = writer.0.pending.lock().unwrap();
        assert!(
            pending.bytes.len() <= MAX_PENDING && pending.bytes.len().is_multiple_of(line.len()),
            "whole lines only"
        );
        assert_eq!(pending.dropped, 50);
    }

    #[test]
    fn dropping_the_guard_writes_what_waits() {
        let (writer, flusher) = batched_stdout();
        log_lines(&writer, 100, b"a line\n");
        drop(flusher);
        assert!(writer.0.pending.lock().unwrap().bytes.is_empty());
    }
}
