//! The canary's feature: an in-memory prediction cache with a TTL and a size bound.
//! Entries expire in insertion order (the TTL is the same for all), so one FIFO queue
//! serves both expiry and eviction.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::model_client::Classification;

pub struct PredictionCache {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, (Classification, Instant)>,
    order: VecDeque<(String, Instant)>,
}

impl PredictionCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self { ttl, max_entries: max_entries.max(1), inner: Mutex::default() }
    }

    pub fn get(&self, key: &str) -> Option<Classification> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        inner.expire(now, self.ttl);
        inner.entries.get(key).map(|(c, _)| c.clone())
    }

    pub fn insert(&self, key: String, value: Classification) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        inner.expire(now, self.ttl);
        while inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&key) {
            let Some((old, at)) = inner.order.pop_front() else { break };
            inner.remove_if_inserted_at(&old, at);
        }
        inner.order.push_back((key.clone(), now));
        inner.entries.insert(key, (value, now));
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((_, at)) = self.order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            let (key, at) = self.order.pop_front().expect("front exists");
            self.remove_if_inserted_at(&key, at);
        }
    }

    /// A key re-inserted later has a newer queue entry; only the matching one removes it.
    fn remove_if_inserted_at(&mut self, key: &str, at: Instant) {
        if self.entries.get(key).is_some_and(|(_, t)| *t == at) {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(label: &str) -> Classification {
        Classification {
            label: label.into(),
            spam_probability: 0.9,
            model_version: "v1".into(),
            model_name: "m".into(),
        }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = PredictionCache::new(Duration::from_millis(50), 10);
        cache.insert("a".into(), c("spam"));
        assert_eq!(cache.get("a").unwrap().label, "spam");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a").is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded_oldest_first() {
        let cache = PredictionCache::new(Duration::from_secs(60), 2);
        cache.insert("a".into(), c("spam"));
        cache.insert("b".into(), c("ham"));
        cache.insert("c".into(), c("ham"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        // Re-inserting a key does not let its stale queue entry evict the new value.
        cache.insert("b".into(), c("spam"));
        cache.insert("d".into(), c("ham"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b").map(|x| x.label), Some("spam".into()));
    }
}
