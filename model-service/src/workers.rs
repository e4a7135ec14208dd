//! A fixed set of inference threads, each owning its own ONNX Runtime session (ORT's
//! `run` needs `&mut`), fed from one bounded queue. No lock around a session, no
//! unbounded blocking pool: the queue applies back-pressure and the workers keep every
//! core busy. A new model is handed to each worker through its own slot and taken up
//! between two requests, so a reload never interrupts one.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use crate::model::{Model, ModelCard, ModelError};

pub struct Prediction {
    pub spam_probability: f32,
    pub card: Arc<ModelCard>,
    pub inference_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the inference workers have stopped")]
    Stopped,
    #[error("every inference worker is busy and the queue is full")]
    Overloaded,
    #[error(transparent)]
    Model(#[from] ModelError),
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Prediction, ModelError>>,
}

/// Models waiting to be taken up by the workers, one slot each.
struct Handover {
    generation: AtomicU64,
    slots: Vec<Mutex<Option<Model>>>,
    current: Mutex<Arc<ModelCard>>,
}

pub struct InferencePool {
    queue: mpsc::Sender<Job>,
    handover: Arc<Handover>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl InferencePool {
    /// Starts one worker per model (load them with `Model::load`, one per worker), with
    /// room for `queue_per_worker` waiting calls per worker.
    pub fn start(models: Vec<Model>, queue_per_worker: usize) -> Self {
        assert!(!models.is_empty(), "at least one inference worker");
        let workers = models.len();
        let (queue, rx) = mpsc::channel::<Job>(workers * queue_per_worker.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let handover = Arc::new(Handover {
            generation: AtomicU64::new(0),
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
            current: Mutex::new(models[0].card.clone()),
        });
        let threads = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let (rx, handover) = (rx.clone(), handover.clone());
                thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || worker(i, model, &rx, &handover))
                    .expect("spawn inference thread")
            })
            .collect();
        Self { queue, handover, threads: Mutex::new(threads) }
    }

    pub fn workers(&self) -> usize {
        self.handover.slots.len()
    }

    /// The card of the model being served (after a reload, the new one).
    pub fn current_card(&self) -> Arc<ModelCard> {
        self.handover.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues one normalized text and waits for its prediction; refused at once when the
    /// queue is full (waiting there would only grow memory and latency).
    pub async fn classify(&self, text: String) -> Result<Prediction, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { text, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PoolError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => PoolError::Stopped,
        })?;
        Ok(answer.await.map_err(|_| PoolError::Stopped)??)
    }

    /// Hands freshly loaded (and warmed) models to the workers: each takes its own
    /// before its next request. `models.len()` must equal `workers()`.
    pub fn swap(&self, models: Vec<Model>) {
        assert_eq!(models.len(), self.workers());
        let card = models[0].card.clone();
        for (slot, model) in self.handover.slots.iter().zip(models) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(model);
        }
        *self.handover.current.lock().unwrap_or_else(|e| e.into_inner()) = card;
        self.handover.generation.fetch_add(1, Ordering::Release);
    }

    /// Stops taking work, lets the workers finish what was queued, and joins them.
    pub fn shutdown(self) {
        let Self { queue, threads, .. } = self;
        drop(queue);
        for t in threads.into_inner().unwrap_or_default() {
            let _ = t.join();
        }
    }
}

fn worker(index: usize, mut model: Model, rx: &Mutex<mpsc::Receiver<Job>>, handover: &Handover) {
    let mut seen = handover.generation.load(Ordering::Acquire);
    loop {
        // Holding the lock while waiting is fine: whoever holds it takes the next job
        // and releases it at once; the others queue on the lock meanwhile.
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
        let Some(job) = job else { break };
        // The caller's deadline passed while the job waited: nobody reads the answer, and
        // under overload those are exactly the jobs not to spend a core on.
        if job.reply.is_closed() {
            continue;
        }
        let generation = handover.generation.load(Ordering::Acquire);
        if generation != seen {
            if let Some(new) = handover.slots[index].lock().unwrap_or_else(|e| e.into_inner()).take() {
                model = new;
            }
            seen = generation;
        }
        let started = Instant::now();
        let result = model.spam_probability(&job.text).map(|p| Prediction {
            spam_probability: p,
            card: model.card.clone(),
            inference_time: started.elapsed(),
        });
        // The caller may have gone (deadline): nothing to do with the answer then.
        let _ = job.reply.send(result);
    }
}
