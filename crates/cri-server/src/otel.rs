//! OpenTelemetry trace export (`[tracing]`): the daemon's `tracing` spans, a span per
//! CRI call (named after the RPC) and the slow steps below it, batched and sent over
//! OTLP/gRPC to the configured collector. Off when no endpoint is set; a collector
//! that is down costs the daemon nothing but the dropped batches.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TracingConfig;

/// How long finished spans wait to be sent together.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running export: its provider (flushed and stopped by [`Exporter::shutdown`]).
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// Why the export could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the OTLP span exporter: {0}")]
pub struct ExportError(#[source] opentelemetry_otlp::ExporterBuildError);

impl Exporter {
    /// Starts the export `config` asks for; `None` when its endpoint is empty. Call it
    /// inside the async runtime: the gRPC channel's worker runs there.
    pub fn start(config: &TracingConfig) -> Result<Option<Exporter>, ExportError> {
        if config.endpoint.is_empty() {
            return Ok(None);
        }
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(ExportError)?;
        let batches = BatchSpanProcessor::builder(spans)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(BATCH_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(sampler(config.sampling_rate_per_million))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Some(Exporter { provider }))
    }

    /// The subscriber layer that turns spans at info level and above into exported
    /// ones (debug spans, if any, stay local).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("crius"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    }

    /// Sends what is queued and stops; blocking (at most the export timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans to the collector");
        }
    }
}

/// The caller's trace from a call's W3C trace context (`traceparent`, with its
/// `tracestate`), which the kubelet sends when its own tracing is on: the call's span
/// joins that trace as a child of the caller's span. `None` without a valid one.
pub fn caller_trace(metadata: &tonic::metadata::MetadataMap) -> Option<opentelemetry::Context> {
    metadata.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Metadata(metadata));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A call's metadata as the propagator reads it (text values only).
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

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

/// A call is traced with probability `per_million` / 1e6; a call whose caller's
/// trace is sampled (or not) follows it.
fn sampler(per_million: u32) -> Sampler {
    let root = match per_million {
        1_000_000.. => Sampler::AlwaysOn,
        0 => Sampler::AlwaysOff,
        n => Sampler::TraceIdRatioBased(f64::from(n) / 1e6),
    };
    Sampler::ParentBased(Box::new(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_per_million_picks_the_sampler() {
        let name = |n| format!("{:?}", sampler(n));
        assert!(name(1_000_000).contains("AlwaysOn"), "{}", name(1_000_000));
        assert!(name(0).contains("AlwaysOff"), "{}", name(0));
        assert!(name(250_000).contains("0.25"), "{}", name(250_000));
    }

    #[test]
    fn the_callers_trace_context_is_read_from_the_metadata() {
        use opentelemetry::trace::TraceContextExt;
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(caller_trace(&md).is_none(), "no traceparent");
        md.insert("traceparent", "not-a-trace".parse().unwrap());
        assert!(caller_trace(&md).is_none(), "a malformed one");
        md.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        md.insert("tracestate", "kubelet=1".parse().unwrap());
        let cx = caller_trace(&md).expect("a valid traceparent");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("kubelet"), Some("1"));
    }

    #[test]
    fn no_endpoint_no_exporter() {
        assert!(
            Exporter::start(&TracingConfig::default())
                .unwrap()
                .is_none()
        );
    }
}
