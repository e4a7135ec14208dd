//! A fixed set of inference threads, each owning its own ONNX Runtime session (ORT's
//! `run` needs `&mut`), fed from one bounded queue. No lock around a session, no
//! unbounded blocking pool: the queue applies back-pressure and the workers keep every
//! core busy. A new model is handed to each worker through its own slot and taken up
//! between two requests, so a reload never interrupts one.
//!
//! A job is one or more texts. The queue's bound counts rows, not jobs: a call of N rows
//! holds N places while it waits, so a batch cannot jump the overload bound. A model whose
//! graph scores N rows in one run more cheaply than in N runs (measured when it loads, see
//! `Model::batch_is_cheaper`) gets a batch as one job; otherwise its rows go to the pool
//! as N jobs, spread over the workers.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::model::{Model, ModelCard, ModelError};

pub struct Prediction {
    pub spam_probability: f32,
    pub card: Arc<ModelCard>,
    pub inference_time: Duration,
}

/// The answer to N rows, in their order. `inference_time` is ONNX Runtime's time for one
/// row (a batch's run divided by its rows).
pub struct Predictions {
    pub spam_probabilities: Vec<f32>,
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
    texts: Vec<String>,
    /// The job's places in the queue, given back when a worker takes it up.
    places: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<Predictions, ModelError>>,
}

/// Models waiting to be taken up by the workers, one slot each.
struct Handover {
    generation: AtomicU64,
    slots: Vec<Mutex<Option<Model>>>,
    current: Mutex<Arc<ModelCard>>,
    /// Whether the served graph runs a batch more cheaply per row than single rows.
    batch_is_cheaper: std::sync::atomic::AtomicBool,
}

/// How many jobs each worker has run, by worker: whether the pool spreads its work.
#[derive(Clone)]
pub struct WorkerLoad(Arc<[AtomicU64]>);

impl WorkerLoad {
    fn new(workers: usize) -> Self {
        Self((0..workers).map(|_| AtomicU64::new(0)).collect())
    }

    /// Jobs run so far, one count per worker (in worker order).
    pub fn jobs(&self) -> Vec<u64> {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }
}

impl std::fmt::Debug for WorkerLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerLoad{:?}", self.jobs())
    }
}

pub struct InferencePool {
    queue: mpsc::Sender<Job>,
    /// Rows that may wait for a worker (workers x queue_per_worker).
    places: Arc<Semaphore>,
    handover: Arc<Handover>,
    load: WorkerLoad,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl InferencePool {
    /// Starts one worker per model (load them with `Model::load`, one per worker), with
    /// room for `queue_per_worker` waiting calls per worker.
    pub fn start(models: Vec<Model>, queue_per_worker: usize) -> Self {
        assert!(!models.is_empty(), "at least one inference worker");
        let workers = models.len();
        let capacity = workers * queue_per_worker.max(1);
        // A job holds at least one place, so the channel never fills before the places do.
        let (queue, rx) = mpsc::channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let handover = Arc::new(Handover {
            generation: AtomicU64::new(0),
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
            current: Mutex::new(models[0].card.clone()),
            batch_is_cheaper: models[0].batch_is_cheaper.into(),
        });
        let load = WorkerLoad::new(workers);
        let threads = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let (rx, handover, load) = (rx.clone(), handover.clone(), load.clone());
                thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || worker(i, model, &rx, &handover, &load))
                    .expect("spawn inference thread")
            })
            .collect();
        Self { queue, places: Arc::new(Semaphore::new(capacity)), handover, load, threads: Mutex::new(threads) }
    }

    /// Rows that may wait for a worker at once.
    pub fn capacity(&self) -> usize {
        self.queue.max_capacity()
    }

    pub fn workers(&self) -> usize {
        self.handover.slots.len()
    }

    /// The jobs each worker has run (shared: it follows the pool as it works).
    pub fn load(&self) -> WorkerLoad {
        self.load.clone()
    }

    /// The card of the model being served (after a reload, the new one).
    pub fn current_card(&self) -> Arc<ModelCard> {
        self.handover.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues one normalized text and waits for its prediction; refused at once when the
    /// queue is full (waiting there would only grow memory and latency).
    pub async fn classify(&self, text: String) -> Result<Prediction, PoolError> {
        let answer = self.submit(vec![text])?;
        let p = answer.await.map_err(|_| PoolError::Stopped)??;
        Ok(Prediction { spam_probability: p.spam_probabilities[0], card: p.card, inference_time: p.inference_time })
    }

    /// Queues N normalized texts (one job, or N when the graph is not cheaper in batches)
    /// and waits for their predictions, in order. Refused at once, whole, when the queue
    /// has fewer than N free places.
    pub async fn classify_batch(&self, texts: Vec<String>) -> Result<Predictions, PoolError> {
        if texts.len() <= 1 || self.handover.batch_is_cheaper.load(Ordering::Relaxed) {
            let answer = self.submit(texts)?;
            return Ok(answer.await.map_err(|_| PoolError::Stopped)??);
        }
        let n = texts.len();
        let mut places = self.reserve(n)?;
        let mut answers = Vec::with_capacity(n);
        for text in texts {
            let one = places.split(1).expect("a place per row");
            answers.push(self.enqueue(vec![text], one)?);
        }
        let mut out = Predictions {
            spam_probabilities: Vec::with_capacity(n),
            card: self.current_card(),
            inference_time: Duration::ZERO,
        };
        for answer in answers {
            let p = answer.await.map_err(|_| PoolError::Stopped)??;
            out.spam_probabilities.push(p.spam_probabilities[0]);
            out.inference_time += p.inference_time;
            out.card = p.card;
        }
        out.inference_time /= n as u32;
        Ok(out)
    }

    fn reserve(&self, rows: usize) -> Result<OwnedSemaphorePermit, PoolError> {
        let rows = u32::try_from(rows).map_err(|_| PoolError::Overloaded)?;
        self.places.clone().try_acquire_many_owned(rows).map_err(|e| match e {
            tokio::sync::TryAcquireError::NoPermits => PoolError::Overloaded,
            tokio::sync::TryAcquireError::Closed => PoolError::Stopped,
        })
    }

    fn submit(&self, texts: Vec<String>) -> Result<oneshot::Receiver<Result<Predictions, ModelError>>, PoolError> {
        let places = self.reserve(texts.len())?;
        self.enqueue(texts, places)
    }

    fn enqueue(
        &self,
        texts: Vec<String>,
        places: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<Predictions, ModelError>>, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { texts, places, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PoolError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => PoolError::Stopped,
        })?;
        Ok(answer)
    }

    /// Hands freshly loaded (and warmed) models to the workers: each takes its own
    /// before its next request. `models.len()` must equal `workers()`.
    pub fn swap(&self, models: Vec<Model>) {
        assert_eq!(models.len(), self.workers());
        let card = models[0].card.clone();
        self.handover.batch_is_cheaper.store(models[0].batch_is_cheaper, Ordering::Relaxed);
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

fn worker(index: usize, mut model: Model, rx: &Mutex<mpsc::Receiver<Job>>, handover: &Handover, load: &WorkerLoad) {
    let mut seen = handover.generation.load(Ordering::Acquire);
    loop {
        // Holding the lock while waiting is fine: whoever holds it takes the next job
        // and releases it at once; the others queue on the lock meanwhile.
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
        let Some(Job { texts, places, reply }) = job else { break };
        // Taken up: its places are free for the next callers.
        drop(places);
        // The caller's deadline passed while the job waited: nobody reads the answer, and
        // under overload those are exactly the jobs not to spend a core on.
        if reply.is_closed() {
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
        let result = model.spam_probabilities(&texts).map(|p| Predictions {
            spam_probabilities: p,
            card: model.card.clone(),
            inference_time: started.elapsed() / texts.len().max(1) as u32,
        });
        // Counted before the answer goes, so a caller that has its answer sees the count.
        load.0[index].fetch_add(1, Ordering::Relaxed);
        // The caller may have gone (deadline): nothing to do with the answer then.
        let _ = reply.send(result);
    }
}
