//! W3C Trace Context: the app continues the browser's trace (or starts one) and passes it
//! to the model in gRPC metadata, so one trace id appears in both services' logs (and in
//! Envoy's inside the mesh). Reading and writing `traceparent` is OpenTelemetry's
//! propagator; this module only adapts the carriers and picks the context to pass on.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TraceFlags, TraceState},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{IdGenerator, RandomIdGenerator},
};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use opentelemetry::trace::SpanContext;

/// HTTP request headers as a carrier.
pub struct Headers<'a>(pub &'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// gRPC request metadata as a carrier (read side).
pub struct Metadata<'a>(pub &'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// gRPC request metadata as a carrier (write side).
pub struct MetadataMut<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// The caller's trace context, if it sent a valid one.
pub fn extract(carrier: &dyn Extractor) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Writes `context` into `carrier` as `traceparent` (and `tracestate`).
pub fn inject(context: &SpanContext, carrier: &mut dyn Injector) {
    let context = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&context, carrier);
}

/// Makes `span` continue the caller's trace and returns the context to log and to pass
/// downstream: the exported span's own when span export is on, otherwise a new span id
/// in the caller's trace (or a new trace when there is no caller context).
pub fn continue_trace(span: &tracing::Span, parent: Option<SpanContext>) -> SpanContext {
    if let Some(parent) = &parent {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
    }
    let own = span.context().span().span_context().clone();
    if own.is_valid() && parent.as_ref().is_none_or(|p| own.trace_id() == p.trace_id()) {
        return own;
    }
    let ids = RandomIdGenerator::default();
    match parent {
        Some(p) => SpanContext::new(p.trace_id(), ids.new_span_id(), p.trace_flags(), false, p.trace_state().clone()),
        None => {
            SpanContext::new(ids.new_trace_id(), ids.new_span_id(), TraceFlags::SAMPLED, false, TraceState::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", traceparent.parse().unwrap());
        h
    }

    #[test]
    fn continues_the_callers_trace_with_a_new_span() {
        let parent = extract(&Headers(&headers(CALLER))).expect("a valid traceparent");
        let child = continue_trace(&tracing::Span::none(), Some(parent.clone()));
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());

        let mut metadata = MetadataMap::new();
        inject(&child, &mut MetadataMut(&mut metadata));
        let passed = metadata.get("traceparent").unwrap().to_str().unwrap().to_string();
        assert!(passed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{passed}");
        assert_eq!(
            extract(&Metadata(&metadata)),
            Some(SpanContext::new(child.trace_id(), child.span_id(), child.trace_flags(), true, TraceState::default()))
        );
    }

    #[test]
    fn malformed_or_missing_context_starts_a_new_trace() {
        for bad in [
            "",
            "junk",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert!(extract(&Headers(&headers(bad))).is_none(), "{bad}");
        }
        let a = continue_trace(&tracing::Span::none(), None);
        let b = continue_trace(&tracing::Span::none(), None);
        assert!(a.is_valid() && b.is_valid());
        assert_ne!(a.trace_id(), b.trace_id());
    }
}
