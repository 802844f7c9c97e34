//! The RPCs and fields of the newer CRI (the Stream* twins of the List RPCs, stop
//! signals, pod checkpoint/restore and resize) against a real criusd.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crius_e2e::v1 as cri;
use crius_e2e::*;
use tonic::Code;

/// Every message of a server stream, each unwrapped to its items.
async fn drain<M, I>(mut s: tonic::Streaming<M>, items: impl Fn(M) -> Vec<I>) -> Vec<I> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await.expect("a stream message") {
        let got = items(m);
        assert!(
            !got.is_empty(),
            "a stream message carries at least one item"
        );
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_rpcs_answer_like_their_list_twins() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("stream-list", Options::default()).await;
    let other = f.pod(PodBuilder::new("stream-other")).await;
    let mut ids = Vec::new();
    for (p, name) in [(&pod, "a"), (&pod, "b"), (&other, "c")] {
        let c = ContainerBuilder::new(name, &image).sh("exec sleep 600");
        ids.push(f.run(p, c).await);
    }
    let rt = &mut f.d.rt;

    let list = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    let s = rt
        .stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let streamed = drain(s, |m| m.pod_sandboxes).await;
    assert_eq!(list.len(), 2);
    assert_eq!(streamed, list);

    let list = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    let s = rt
        .stream_containers(cri::StreamContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.len(), 3);
    assert_eq!(drain(s, |m| m.containers).await, list);
    // The filter is the List's.
    let by_pod = cri::ContainerFilter {
        pod_sandbox_id: other.clone(),
        ..Default::default()
    };
    let s = rt
        .stream_containers(cri::StreamContainersRequest {
            filter: Some(by_pod),
        })
        .await
        .unwrap()
        .into_inner();
    let only: Vec<String> = drain(s, |m| m.containers)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(only, vec![ids[2].clone()]);
    // Nothing selected: the stream ends without a message.
    let none = cri::ContainerFilter {
        id: "0000000000000000000000000000000000000000000000000000000000000000".into(),
        ..Default::default()
    };
    let s = rt
        .stream_containers(cri::StreamContainersRequest { filter: Some(none) })
        .await
        .unwrap()
        .into_inner();
    assert!(drain(s, |m| m.containers).await.is_empty());

    let list =
        f.d.img
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
    let s =
        f.d.img
            .stream_images(cri::StreamImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
    assert!(!list.is_empty());
    assert_eq!(drain(s, |m| m.images).await, list);

    // Stats move between two calls: the same containers and pods, in the same order.
    let rt = &mut f.d.rt;
    let stat_ids = |v: &[cri::ContainerStats]| -> Vec<String> {
        v.iter().map(|s| s.attributes.clone().unwrap().id).collect()
    };
    let list = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let s = rt
        .stream_container_stats(cri::StreamContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let streamed = drain(s, |m| m.container_stats).await;
    let mut want = ids.clone();
    want.sort();
    let mut got = stat_ids(&streamed);
    got.sort();
    assert_eq!(got, want);
    assert_eq!(stat_ids(&streamed), stat_ids(&list));
    assert!(
        streamed
            .iter()
            .all(|s| s.cpu.is_some() && s.memory.is_some())
    );

    let pod_ids = |v: &[cri::PodSandboxStats]| -> Vec<String> {
        v.iter().map(|s| s.attributes.clone().unwrap().id).collect()
    };
    let list = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let s = rt
        .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let streamed = drain(s, |m| m.pod_sandbox_stats).await;
    assert_eq!(pod_ids(&streamed), pod_ids(&list));
    assert_eq!(streamed.len(), 2);

    let list = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let s = rt
        .stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let streamed = drain(s, |m| m.pod_sandbox_metrics).await;
    let ids = |m: &[cri::PodSandboxMetrics]| {
        let mut ids: Vec<String> = m.iter().map(|p| p.pod_sandbox_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&streamed), ids(&list));
    assert!(
        !streamed.is_empty(),
        "the pods' running containers have metrics"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_signal_of_the_config_is_used_and_reported() {
    let (mut f, image, pod) = Fixture::with_busybox_pod("stop-signal", Options::default()).await;
    // As PID 1, the shell ignores signals it has no handler for: only USR2 ends it
    // before the SIGKILL that follows the timeout (exit 137). The test image's
    // STOPSIGNAL is SIGUSR1: the config's signal has to win.
    let mut config: cri::ContainerConfig = ContainerBuilder::new("usr2", &image)
        .sh("trap 'exit 7' USR2; echo trap-set; while true; do sleep 0.1; done")
        .into();
    config.stop_signal = cri::Signal::Sigusr2 as i32;
    let id = f.run(&pod, config).await;
    assert_eq!(f.status(&id).await.stop_signal, cri::Signal::Sigusr2 as i32);
    let plain = f
        .run(
            &pod,
            ContainerBuilder::new("plain", &image).sh("exec sleep 600"),
        )
        .await;
    assert_eq!(
        f.status(&plain).await.stop_signal,
        cri::Signal::Sigusr1 as i32,
        "without a config signal, the image's STOPSIGNAL"
    );
    // The shell handles USR2 once its trap is set: poll its log until it says so.
    let logs = f.logs();
    eventually(DEADLINE, "the trap to be set", || {
        let text = std::fs::read_to_string(logs.join("usr2.log")).unwrap_or_default();
        async move { text.contains("trap-set").then_some(()) }
    })
    .await;
    f.d.rt
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let st = f.wait_exited(&id).await;
    assert_eq!(st.exit_code, 7, "USR2 ran the trap: {st:?}");

    // A value outside the Signal enum names the field.
    let mut bad: cri::ContainerConfig = ContainerBuilder::new("bad", &image).sh("true").into();
    bad.stop_signal = 999;
    let err = f.create(&pod, bad).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "config.stop_signal");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_checkpoint_restore_and_resize_are_unimplemented() {
    let mut d = Daemon::start("ckpt-pod").await;
    let err =
        d.rt.checkpoint_pod(cri::CheckpointPodRequest {
            pod_sandbox_id: "p".into(),
            output_path: "/tmp/none".into(),
            container_ids: vec!["c".into()],
            options: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointPod"), "{}", err.message());
    let err =
        d.rt.restore_pod(cri::RestorePodRequest::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("RestorePod"), "{}", err.message());
    let err =
        d.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("UpdatePodSandboxResources"),
        "{}",
        err.message()
    );
    d.finish().await;
}
