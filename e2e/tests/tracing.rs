//! OpenTelemetry export: a criusd with `[tracing] endpoint` set sends its spans to an
//! OTLP/gRPC receiver the test runs on loopback. Each CRI call is a server span named
//! after its RPC; the slow steps are its children in the same trace (the pull and its
//! layers, network setup, the shim's start and the runtime's create and start); a
//! failed call is marked an error with its message; a call that carries its caller's
//! W3C trace context joins the caller's trace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use crius_cri_api::v1 as cri;
use crius_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Every span received, with its resource's service.name.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut all = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_of(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    fn named(&self, name: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn services(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(svc, _)| svc.clone())
            .collect()
    }
}

/// The one span named `name` whose parent is `parent` (in its trace).
fn child_of(rx: &Receiver, parent: &Span, name: &str) -> Option<Span> {
    rx.named(name)
        .into_iter()
        .find(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
}

/// The attribute `key` as text (a string as is, another value as its debug form).
fn string_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            Value::StringValue(s) => s,
            other => format!("{other:?}"),
        })
}

/// The W3C trace context of a sampled kubelet span, and of one not sampled.
const KUBELET_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED_PARENT: &str = "00-1bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-00";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    string_of(&span.attributes, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_cri_call_is_a_span_with_its_slow_steps_as_children_sent_by_otlp() {
    let rx = Receiver::default();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("binding the OTLP receiver");
    let addr = incoming.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(rx.clone()))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let mut f = Fixture::start(
        "tracing",
        Options::config(format!(
            "[tracing]\nendpoint = \"http://{addr}\"\nservice_name = \"crius-e2e\"\n"
        )),
    )
    .await;
    let image = f.pull_busybox().await;
    let pod = f.pod(PodBuilder::new("traced")).await;
    let id = f
        .run(
            &pod,
            ContainerBuilder::new("app", &image)
                .command(["/bin/sleep", "1000"])
                .no_log(),
        )
        .await;
    let missing =
        f.d.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: "no-such-container".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // A kubelet with tracing on sends its trace context: the call joins its trace,
    // and a caller's trace it did not sample is not sampled here either.
    for traceparent in [UNSAMPLED_PARENT, KUBELET_PARENT] {
        let mut req = tonic::Request::new(cri::ListPodSandboxRequest::default());
        req.metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        f.d.rt.list_pod_sandbox(req).await.unwrap();
    }

    // Spans go out in batches every half second.
    let calls = [
        "PullImage",
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
    ];
    eventually(DEADLINE, "the calls' spans at the receiver", || {
        let rx = rx.clone();
        async move {
            let have = calls.iter().all(|c| !rx.named(c).is_empty())
                && !rx.named("ContainerStatus").is_empty()
                && !rx.named("runtime.start").is_empty()
                && rx
                    .named("ListPodSandbox")
                    .iter()
                    .any(|s| hex(&s.trace_id) == KUBELET_PARENT[3..35]);
            have.then_some(())
        }
    })
    .await;
    assert!(
        rx.services().iter().all(|s| s == "crius-e2e"),
        "{:?}",
        rx.services()
    );
    let one = |name: &str| {
        let found = rx.named(name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found.into_iter().next().unwrap()
    };
    for call in calls {
        let span = one(call);
        // A server span (kind 2), the root of its own trace, done without error.
        assert_eq!(span.kind, 2, "{call}");
        assert!(span.parent_span_id.is_empty(), "{call}");
        assert_eq!(attr(&span, "rpc").as_deref(), Some(call));
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert_ne!(span.status.as_ref().map_or(0, |s| s.code), 2, "{call}");
    }

    let pull = one("PullImage");
    let image_pull = child_of(&rx, &pull, "image.pull").expect("image.pull under PullImage");
    assert_eq!(attr(&image_pull, "image").as_deref(), Some(image.as_str()));
    let layer = child_of(&rx, &image_pull, "image.layer").expect("image.layer under image.pull");
    child_of(&rx, &layer, "image.fetch").expect("image.fetch under image.layer");

    let run = one("RunPodSandbox");
    child_of(&rx, &run, "network.setup").expect("network.setup under RunPodSandbox");
    let create = one("CreateContainer");
    child_of(&rx, &create, "shim.start").expect("shim.start under CreateContainer");
    child_of(&rx, &create, "runtime.create").expect("runtime.create under CreateContainer");
    let start = one("StartContainer");
    child_of(&rx, &start, "runtime.start").expect("runtime.start under StartContainer");

    let joined: Vec<Span> = rx
        .named("ListPodSandbox")
        .into_iter()
        .filter(|s| hex(&s.trace_id) == KUBELET_PARENT[3..35])
        .collect();
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(
        hex(&joined[0].parent_span_id),
        KUBELET_PARENT[36..52],
        "a child of the kubelet's span"
    );
    let all = rx.spans.lock().unwrap().clone();
    assert!(
        all.iter()
            .all(|(_, s)| hex(&s.trace_id) != UNSAMPLED_PARENT[3..35]),
        "a span of the unsampled trace was exported"
    );

    let failed = one("ContainerStatus");
    let status = failed.status.clone().expect("a status");
    assert_eq!(status.code, 2, "an error: {failed:?}");
    assert!(status.message.contains("no-such-container"), "{status:?}");

    f.stop_container(&id, 0).await;
    f.finish().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
