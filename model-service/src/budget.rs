//! The memory budget of a model load: a graph whose load would take the process past its
//! budget is refused before a byte of it is read, so a big model is a refused reload (the
//! old one keeps serving), never an OOM kill in the middle of one.
//!
//! The estimate is what a load adds to the process while it runs: the graph's bytes, read
//! once, plus one ONNX Runtime session per worker, which holds a parsed copy of the graph
//! and its initializers. A graph padded to 40 MiB added 2.1 times its size at the peak
//! with one session (tests/hostile.rs prints the figure): the bytes read and ~1.1 for the
//! session, so 1.5 is charged per session.
//! The process's resident memory now (the serving model included: it stays until the new
//! one is swapped in) plus the estimate must stay under `LOAD_SHARE` of the limit.

use std::path::Path;

/// Charged per session, as a multiple of the graph file's size.
const SESSION_FACTOR: f64 = 1.5;
/// Share of the memory limit a load may take the process to; the rest is for what the
/// server holds while it serves (connections, queued calls, answers being written).
const LOAD_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryBudget {
    /// The process's memory limit in bytes (`MEMORY_LIMIT_MIB`, or the cgroup's), if any.
    pub limit_bytes: Option<u64>,
}

impl MemoryBudget {
    pub const UNLIMITED: Self = Self { limit_bytes: None };

    pub fn mib(limit: u64) -> Self {
        Self { limit_bytes: Some(limit * 1024 * 1024) }
    }

    /// The cgroup v2 limit of this process (a container's memory limit), if it has one.
    pub fn from_cgroup() -> Self {
        let limit = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|groups| {
            // cgroup v2: one line `0::/path`.
            let path = groups.lines().find_map(|l| l.strip_prefix("0::"))?;
            let max = std::fs::read_to_string(
                Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')).join("memory.max"),
            )
            .ok()?;
            max.trim().parse::<u64>().ok()
        });
        Self { limit_bytes: limit }
    }

    /// What loading a graph of `graph_bytes` into `sessions` sessions adds, in bytes.
    pub fn estimate(graph_bytes: u64, sessions: usize) -> u64 {
        graph_bytes + (graph_bytes as f64 * SESSION_FACTOR * sessions as f64) as u64
    }

    /// `Err` with the figures when the load would take the process past the budget.
    pub fn admit(&self, graph_bytes: u64, sessions: usize) -> Result<(), String> {
        let Some(limit) = self.limit_bytes else { return Ok(()) };
        let budget = (limit as f64 * LOAD_SHARE) as u64;
        let (now, needs) = (resident_bytes(), Self::estimate(graph_bytes, sessions));
        if now + needs > budget {
            let mib = |b: u64| b / (1024 * 1024);
            return Err(format!(
                "is {} MiB: loading it into {sessions} session(s) needs about {} MiB more than the {} MiB in use, \
                 past the load budget of {} MiB ({:.0} % of the memory limit of {} MiB, MEMORY_LIMIT_MIB); \
                 raise the limit or serve a smaller graph",
                mib(graph_bytes),
                mib(needs),
                mib(now),
                mib(budget),
                LOAD_SHARE * 100.0,
                mib(limit)
            ));
        }
        Ok(())
    }
}

/// This process's resident memory in bytes (0 where /proc is not there).
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::MemoryBudget;

    #[test]
    fn a_load_is_admitted_only_within_the_budget() {
        assert!(MemoryBudget::UNLIMITED.admit(u64::MAX / 4, 8).is_ok());
        let in_use = super::resident_bytes();
        assert!(in_use > 0);
        let limit_mib = in_use / (1024 * 1024) + 200;
        let budget = MemoryBudget::mib(limit_mib);
        assert!(budget.admit(10 * 1024 * 1024, 2).is_ok(), "a 10 MiB graph in 2 sessions fits in 200 MiB spare");
        let err = budget.admit(100 * 1024 * 1024, 2).unwrap_err();
        assert!(
            err.contains("is 100 MiB") && err.contains("MEMORY_LIMIT_MIB") && err.contains(&format!("{limit_mib} MiB")),
            "{err}"
        );
    }
}
