//! Cross-cutting concerns for every HTTP request, each a tower layer with one job:
//! `Observe` (the trace context, continued from the caller's `traceparent` or started
//! here; the request metrics; one access-log line carrying the trace id), `RefuseOversize`
//! (a body declared too large is refused before it is read) and `security_headers`.
//!
//! Hand-written rather than `axum::middleware::from_fn`, which boxes the inner service
//! again for every request: these call the inner service directly, and only `Observe`,
//! whose work goes on after the answer, boxes its future.

mod observe;
mod refuse_oversize;
mod security_headers;
#[cfg(test)]
mod testing;

pub use observe::{Observe, ObserveLayer, is_scrape_or_probe};
pub use refuse_oversize::{OrRefused, RefuseOversize, RefuseOversizeLayer};
pub use security_headers::security_headers;
