//! A test NRI plugin: it connects to the NRI socket (or, started by criusd as a
//! pre-installed plugin, uses the socket on fd 3), registers, and records every
//! request it gets as one JSON line in its record file. On CreateContainer it adds an
//! environment variable and a mount when told to. It refuses, hangs or crashes on a
//! chosen event when its control file says so (read at every request, so a test can
//! change its behaviour while it runs).
//!
//! Settings come from the environment and, for a pre-installed plugin, from the
//! configuration text criusd passes in Configure (`key=value` lines, same keys in
//! lower case without the `NRI_TEST_` prefix):
//! - `NRI_TEST_SOCKET`: the socket to connect to (else fd 3 from NRI_PLUGIN_SOCKET);
//! - `NRI_TEST_NAME`, `NRI_TEST_INDEX`: what it registers as (else NRI_PLUGIN_NAME,
//!   NRI_PLUGIN_IDX);
//! - `NRI_TEST_RECORD`: the record file (JSON lines);
//! - `NRI_TEST_CONTROL`: the control file: `refuse EVENT`, `hang EVENT` or
//!   `crash EVENT`, or `update EVENT` (it then asks, unsolicited, for the event's
//!   container's memory limit to be 128 MiB); EVENT as in the record
//!   (`CreateContainer`, `StartContainer`, …);
//! - `NRI_TEST_ENV`: `KEY=VALUE` added to each container's environment;
//! - `NRI_TEST_MOUNT`: `SOURCE:DESTINATION` bind-mounted read-only into each container;
//! - `NRI_TEST_EVENTS`: the event mask it subscribes to (default 0: all).

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crius_cri_server::nri::api;
use crius_cri_server::nri::mux::{Mux, PLUGIN_CONN, RUNTIME_CONN};
use crius_cri_server::nri::plugin::{PLUGIN_SERVICE, RUNTIME_SERVICE};
use crius_cri_server::nri::ttrpc::{self, Client, Handler, Status, code};
use serde_json::json;

#[derive(Clone, Default)]
struct Settings(HashMap<String, String>);

impl Settings {
    fn from_env() -> Settings {
        let mut m = HashMap::new();
        for (k, v) in std::env::vars() {
            if let Some(key) = k.strip_prefix("NRI_TEST_") {
                m.insert(key.to_lowercase(), v);
            }
        }
        Settings(m)
    }

    fn add_config(&mut self, text: &str) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                self.0.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

struct State {
    settings: std::sync::Mutex<Settings>,
    /// Its client of the runtime's service, for unsolicited updates.
    client: std::sync::OnceLock<Arc<Client>>,
}

impl State {
    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, line: serde_json::Value) {
        let Some(path) = self.settings().get("record").map(str::to_string) else {
            return;
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// What the control file asks for `event`: "refuse", "hang", "crash" or nothing.
    fn control(&self, event: &str) -> Option<String> {
        let path = self.settings().get("control")?.to_string();
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let (what, ev) = l.trim().split_once(' ')?;
            (ev.trim() == event).then(|| what.to_string())
        })
    }
}

fn pod_json(p: &Option<api::PodSandbox>) -> serde_json::Value {
    match p {
        Some(p) => json!({
            "id": p.id, "name": p.name, "namespace": p.namespace, "uid": p.uid,
            "labels": p.labels, "annotations": p.annotations,
            "runtime_handler": p.runtime_handler, "ips": p.ips,
            "namespaces": p.linux.as_ref().map(|l| l.namespaces.iter().map(|n| json!({"type": n.r#type, "path": n.path})).collect::<Vec<_>>()),
        }),
        None => serde_json::Value::Null,
    }
}

fn ctr_json(c: &Option<api::Container>) -> serde_json::Value {
    match c {
        Some(c) => json!({
            "id": c.id, "pod_sandbox_id": c.pod_sandbox_id, "name": c.name,
            "state": api::ContainerState::try_from(c.state).map(|s| s.as_str_name()).unwrap_or("?"),
            "labels": c.labels, "annotations": c.annotations, "args": c.args, "env": c.env,
            "pid": c.pid, "exit_code": c.exit_code,
            "mounts": c.mounts.iter().map(|m| m.destination.clone()).collect::<Vec<_>>(),
            "cgroups_path": c.linux.as_ref().map(|l| l.cgroups_path.clone()),
        }),
        None => serde_json::Value::Null,
    }
}

/// Asks the runtime, unsolicited, to set container `id`'s memory limit to 128 MiB.
fn update_memory(state: &Arc<State>, id: String) {
    let state = state.clone();
    tokio::spawn(async move {
        let Some(client) = state.client.get().cloned() else {
            return;
        };
        let req = api::UpdateContainersRequest {
            update: vec![api::ContainerUpdate {
                container_id: id.clone(),
                linux: Some(api::LinuxContainerUpdate {
                    resources: Some(api::LinuxResources {
                        memory: Some(api::LinuxMemory {
                            limit: Some(api::OptionalInt64 { value: 128 << 20 }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                }),
                ignore_failure: false,
            }],
            evict: Vec::new(),
        };
        let got: Result<api::UpdateContainersResponse, _> = client
            .call(
                RUNTIME_SERVICE,
                "UpdateContainers",
                &req,
                Duration::from_secs(10),
            )
            .await;
        state.record(json!({"event": "UpdateContainersResult", "container": {"id": id},
            "failed": got.as_ref().map(|r| r.failed.len()).ok(), "error": got.err().map(|e| e.to_string())}));
    });
}

/// Does what the control file says for `event` (refuse, hang, crash, or update the
/// container), if anything.
async fn obey(state: &Arc<State>, event: &str, ctr: &Option<api::Container>) -> Result<(), Status> {
    match state.control(event).as_deref() {
        Some("update") => {
            if let Some(c) = ctr {
                update_memory(state, c.id.clone());
            }
            Ok(())
        }
        Some("refuse") => Err(Status::new(
            code::UNKNOWN,
            format!("nri-test-plugin refuses {event}"),
        )),
        Some("hang") => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Some("crash") => {
            state.record(json!({"event": "crash", "at": event}));
            std::process::exit(3);
        }
        _ => Ok(()),
    }
}

fn adjustment(s: &Settings) -> api::ContainerAdjustment {
    let mut adj = api::ContainerAdjustment::default();
    if let Some((k, v)) = s.get("env").and_then(|e| e.split_once('=')) {
        adj.env.push(api::KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    if let Some((src, dst)) = s.get("mount").and_then(|m| m.split_once(':')) {
        adj.mounts.push(api::Mount {
            destination: dst.to_string(),
            r#type: "bind".to_string(),
            source: src.to_string(),
            options: vec!["rbind".to_string(), "ro".to_string()],
        });
    }
    adj
}

async fn handle(
    state: Arc<State>,
    service: String,
    method: String,
    payload: Bytes,
) -> ttrpc::Reply {
    if service != PLUGIN_SERVICE {
        return Err(Status::new(
            code::UNIMPLEMENTED,
            format!("unknown service {service}"),
        ));
    }
    match method.as_str() {
        "Configure" => {
            let req: api::ConfigureRequest = ttrpc::decode(payload)?;
            state
                .settings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add_config(&req.config);
            state.record(json!({"event": "Configure", "runtime": req.runtime_name, "config": req.config,
                "registration_timeout": req.registration_timeout, "request_timeout": req.request_timeout}));
            let events = state
                .settings()
                .get("events")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            ttrpc::reply(&api::ConfigureResponse { events })
        }
        "Synchronize" => {
            let req: api::SynchronizeRequest = ttrpc::decode(payload)?;
            state.record(json!({"event": "Synchronize",
                "pods": req.pods.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
                "containers": req.containers.iter().map(|c| c.id.clone()).collect::<Vec<_>>()}));
            ttrpc::reply(&api::SynchronizeResponse::default())
        }
        "Shutdown" => ttrpc::reply(&api::Empty {}),
        "CreateContainer" => {
            let req: api::CreateContainerRequest = ttrpc::decode(payload)?;
            state.record(json!({"event": "CreateContainer", "pod": pod_json(&req.pod), "container": ctr_json(&req.container)}));
            obey(&state, "CreateContainer", &req.container).await?;
            ttrpc::reply(&api::CreateContainerResponse {
                adjust: Some(adjustment(&state.settings())),
                ..Default::default()
            })
        }
        "UpdateContainer" => {
            let req: api::UpdateContainerRequest = ttrpc::decode(payload)?;
            state.record(json!({"event": "UpdateContainer", "pod": pod_json(&req.pod), "container": ctr_json(&req.container),
                "memory_limit": req.linux_resources.as_ref().and_then(|r| r.memory.as_ref()).and_then(|m| m.limit.as_ref()).map(|l| l.value)}));
            obey(&state, "UpdateContainer", &req.container).await?;
            ttrpc::reply(&api::UpdateContainerResponse::default())
        }
        "StopContainer" => {
            let req: api::StopContainerRequest = ttrpc::decode(payload)?;
            state.record(json!({"event": "StopContainer", "pod": pod_json(&req.pod), "container": ctr_json(&req.container)}));
            obey(&state, "StopContainer", &req.container).await?;
            ttrpc::reply(&api::StopContainerResponse::default())
        }
        "StateChange" => {
            let req: api::StateChangeEvent = ttrpc::decode(payload)?;
            let name = match api::Event::try_from(req.event) {
                Ok(api::Event::RunPodSandbox) => "RunPodSandbox",
                Ok(api::Event::StopPodSandbox) => "StopPodSandbox",
                Ok(api::Event::RemovePodSandbox) => "RemovePodSandbox",
                Ok(api::Event::PostCreateContainer) => "PostCreateContainer",
                Ok(api::Event::StartContainer) => "StartContainer",
                Ok(api::Event::PostStartContainer) => "PostStartContainer",
                Ok(api::Event::PostUpdateContainer) => "PostUpdateContainer",
                Ok(api::Event::RemoveContainer) => "RemoveContainer",
                _ => "unknown",
            };
            state.record(json!({"event": name, "pod": pod_json(&req.pod), "container": ctr_json(&req.container)}));
            obey(&state, name, &req.container).await?;
            ttrpc::reply(&api::Empty {})
        }
        _ => Err(Status::new(
            code::UNIMPLEMENTED,
            format!("unknown method {method}"),
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("nri-test-plugin: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::from_env();
    let stream = match settings.get("socket") {
        Some(path) => tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("connecting to {path}: {e}"))?,
        None => {
            let fd: i32 = std::env::var("NRI_PLUGIN_SOCKET")
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or("neither NRI_TEST_SOCKET nor NRI_PLUGIN_SOCKET is set")?;
            // SAFETY: criusd passes this fd, a connected unix socket, for this process
            // to own; nothing else here uses it.
            let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
            std.set_nonblocking(true).map_err(|e| e.to_string())?;
            tokio::net::UnixStream::from_std(std).map_err(|e| e.to_string())?
        }
    };
    let name = settings
        .get("name")
        .map(str::to_string)
        .or_else(|| std::env::var("NRI_PLUGIN_NAME").ok())
        .unwrap_or_else(|| "test".to_string());
    let index = settings
        .get("index")
        .map(str::to_string)
        .or_else(|| std::env::var("NRI_PLUGIN_IDX").ok())
        .unwrap_or_else(|| "50".to_string());
    let state = Arc::new(State {
        settings: std::sync::Mutex::new(settings),
        client: std::sync::OnceLock::new(),
    });
    let (mux, mut readers) = Mux::start(stream, &[PLUGIN_CONN, RUNTIME_CONN]);
    let runtime_rx = readers.pop().ok_or("no runtime connection")?;
    let plugin_rx = readers.pop().ok_or("no plugin connection")?;
    let st = state.clone();
    let handler: Handler = Arc::new(move |service, method, payload| {
        Box::pin(handle(st.clone(), service, method, payload))
    });
    let server = ttrpc::serve(mux.clone(), PLUGIN_CONN, plugin_rx, handler);
    let client = Arc::new(Client::new(mux.clone(), RUNTIME_CONN, runtime_rx));
    let _ = state.client.set(client.clone());
    let req = api::RegisterPluginRequest {
        plugin_name: name.clone(),
        plugin_idx: index.clone(),
        nri_version: String::new(),
    };
    let registered: Result<api::Empty, _> = client
        .call(
            RUNTIME_SERVICE,
            "RegisterPlugin",
            &req,
            Duration::from_secs(10),
        )
        .await;
    state.record(json!({"event": "Registered", "name": name, "index": index, "error": registered.as_ref().err().map(|e| e.to_string())}));
    registered.map_err(|e| format!("registering: {e}"))?;
    // Serve until criusd closes the connection.
    let _ = server.await;
    state.record(json!({"event": "Disconnected"}));
    Ok(())
}
