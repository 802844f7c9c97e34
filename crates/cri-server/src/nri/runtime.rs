//! The runtime side of NRI: the socket plugins connect to, the pre-installed plugins
//! criusd starts, and the delivery of lifecycle events to the plugins subscribed to
//! them, in index order.
//!
//! No lock is held across a call to a plugin: each delivery works on a snapshot of
//! the plugin list. A plugin that does not answer within the request timeout, or
//! whose connection is gone, is dropped and the call goes on without it; a plugin
//! that answers with an error fails the CRI call for the events that may fail it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crius_cri_api::v1 as cri;
use crius_spec::adjust::Adjustment;
use crius_store::{ContainerRecord, ContainerState, PodRecord, PodState, Store};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use super::adjust::{merge, merge_updates};
use super::config::NriConfig;
use super::plugin::{Plugin, PluginError, Preset, Setup, UpdateHandler, event_names};
use super::ttrpc::CallError;
use super::{Nri, NriError, Updater, api, convert};
use crate::error::CriResult;

/// The NRI adaptation of one daemon.
pub struct Adaptation {
    cfg: NriConfig,
    store: Store,
    plugins: Mutex<Vec<Arc<Plugin>>>,
    next_key: AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Carries out the container updates plugins ask for (set once the container
    /// manager exists).
    updater: std::sync::OnceLock<Updater>,
}

impl Adaptation {
    /// The adaptation, with no plugin yet.
    pub fn new(cfg: NriConfig, store: Store) -> Arc<Adaptation> {
        Arc::new(Adaptation {
            cfg,
            store,
            plugins: Mutex::new(Vec::new()),
            next_key: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            updater: std::sync::OnceLock::new(),
        })
    }

    /// The validator's verdict on a creation (`[nri.validator]`).
    fn validate(
        &self,
        pod: &PodRecord,
        consulted: &[String],
        replies: &[(String, api::ContainerAdjustment)],
    ) -> Result<(), NriError> {
        self.cfg
            .validator
            .validate(&pod.config.annotations, consulted, replies)
            .map_err(|r| NriError::Invalid {
                plugin: r.plugin,
                message: r.message,
            })
    }

    /// How plugins' container updates are carried out.
    pub fn set_updater(&self, updater: Updater) {
        let _ = self.updater.set(updater);
    }

    /// Listens on the socket (unless connections are disabled) and starts the
    /// pre-installed plugins.
    pub async fn start(self: &Arc<Self>) -> Result<(), NriError> {
        let this = self;
        if !this.cfg.disable_connections {
            let listener = listen(&this.cfg.socket_path)?;
            info!(socket = %this.cfg.socket_path.display(), "NRI socket listening");
            let weak = Arc::downgrade(this);
            let task = tokio::spawn(async move {
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, say: not a busy loop.
                            warn!(error = %e, "NRI: accepting a plugin connection");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Some(this) = weak.upgrade() else { return };
                    tokio::spawn(async move { this.admit(stream, None, None).await });
                }
            });
            this.track(task);
        }
        this.start_preinstalled().await;
        Ok(())
    }

    fn track(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Stops listening, disconnects every plugin (stopping those criusd started) and
    /// removes the socket.
    pub async fn shutdown(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let plugins: Vec<_> = self
            .plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for p in plugins {
            p.close().await;
        }
        if !self.cfg.disable_connections {
            let _ = std::fs::remove_file(&self.cfg.socket_path);
        }
    }

    /// The plugins connected now, in index order.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration text of plugin `name` with `index`: `<index>-<name>.conf`,
    /// else `<name>.conf`, in plugin_config_path; none is empty.
    fn plugin_config(dir: &Path, name: &str, index: &str) -> String {
        for file in [format!("{index}-{name}.conf"), format!("{name}.conf")] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                return text;
            }
        }
        String::new()
    }

    /// A plugin's own UpdateContainers requests, carried out at once.
    /// `name` is the plugin's `NN-name` once it has registered.
    fn updates_handler(self: &Arc<Self>, name: Arc<std::sync::OnceLock<String>>) -> UpdateHandler {
        let weak = Arc::downgrade(self);
        Arc::new(move |updates| {
            let weak = weak.clone();
            let plugin = name
                .get()
                .cloned()
                .unwrap_or_else(|| "an unregistered plugin".into());
            Box::pin(async move {
                match weak.upgrade() {
                    Some(this) => this.apply_updates(&plugin, updates, None).await,
                    None => updates,
                }
            })
        })
    }

    /// Carries out `updates` asked by `plugin` (but none of container `skip`, which
    /// the caller applies itself); returns those that failed and may not.
    async fn apply_updates(
        &self,
        plugin: &str,
        updates: Vec<api::ContainerUpdate>,
        skip: Option<&str>,
    ) -> Vec<api::ContainerUpdate> {
        let mut failed = Vec::new();
        for u in updates {
            if Some(u.container_id.as_str()) == skip {
                continue;
            }
            let resources = u.linux.as_ref().and_then(|l| l.resources.clone());
            let result: CriResult<()> = match (resources, self.updater.get()) {
                (None, _) => Ok(()),
                (Some(r), Some(updater)) => match merge_updates(&[(plugin.to_string(), r)]) {
                    Ok(adjust) => updater(u.container_id.clone(), adjust).await,
                    Err(c) => Err(NriError::from(super::adjust::MergeError::from(c)).into()),
                },
                (Some(_), None) => Err(crate::error::CriError::Unavailable(
                    "container updates are not possible yet".into(),
                )),
            };
            match result {
                Ok(()) => {
                    info!(plugin, container_id = %u.container_id, "NRI: container resources updated")
                }
                Err(e) => {
                    warn!(plugin, container_id = %u.container_id, error = %e, "NRI: a container update failed");
                    if !u.ignore_failure {
                        failed.push(u);
                    }
                }
            }
        }
        failed
    }

    /// Registers, configures and synchronizes a plugin on `stream`; then it gets
    /// events.
    async fn admit(
        self: &Arc<Self>,
        stream: UnixStream,
        preset: Option<Preset>,
        child: Option<tokio::process::Child>,
    ) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let name_cell = Arc::new(std::sync::OnceLock::new());
        let dir = self.cfg.plugin_config_path.clone();
        let setup = Setup {
            key,
            preset: preset.clone(),
            config: Box::new(move |name, index| Self::plugin_config(&dir, name, index)),
            registration_timeout: self.cfg.registration_timeout(),
            request_timeout: self.cfg.request_timeout(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            updates: self.updates_handler(name_cell.clone()),
        };
        let what = preset.as_ref().map_or_else(
            || "a plugin on the NRI socket".to_string(),
            |p| format!("pre-installed plugin {}-{}", p.index, p.name),
        );
        let plugin = match Plugin::connect(stream, setup).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                warn!(error = %e, "NRI: {what} was refused");
                if let Some(mut c) = child {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
                return;
            }
        };
        *plugin.child.lock().unwrap_or_else(|p| p.into_inner()) = child;
        let _ = name_cell.set(plugin.full_name());
        if let Err(e) = self.synchronize(&plugin).await {
            warn!(plugin = %plugin.full_name(), error = %e, "NRI: plugin dropped");
            plugin.close().await;
            return;
        }
        info!(plugin = %plugin.full_name(), events = ?event_names(plugin.events), "NRI plugin connected");
        // A plugin whose connection ends (it exited, or closed it) is dropped at once,
        // not at the next event it would have had.
        let (weak, closed, key, name) = (
            Arc::downgrade(self),
            plugin.closed(),
            plugin.key,
            plugin.full_name(),
        );
        let watcher = tokio::spawn(async move {
            closed.await;
            if let Some(this) = weak.upgrade() {
                let gone = {
                    let mut plugins = this.plugins.lock().unwrap_or_else(|p| p.into_inner());
                    let before = plugins.len();
                    plugins.retain(|p| p.key != key);
                    before != plugins.len()
                };
                if gone {
                    info!(plugin = %name, "NRI plugin disconnected");
                }
            }
        });
        self.track(watcher);
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        plugins.push(plugin);
        plugins.sort_by(|a, b| (&a.index, &a.name, a.key).cmp(&(&b.index, &b.name, b.key)));
    }

    /// Tells a new plugin of every pod and container.
    async fn synchronize(&self, plugin: &Plugin) -> Result<(), PluginError> {
        let pods = self.store.pods().await.unwrap_or_default();
        let containers = self.store.containers().await.unwrap_or_default();
        let ctrs = tokio::task::spawn_blocking(move || {
            containers
                .iter()
                .filter(|c| c.state != ContainerState::Creating)
                .map(|c| convert::container(c, convert::read_spec(&c.bundle).as_ref()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let req = api::SynchronizeRequest {
            pods: pods
                .iter()
                .filter(|p| p.state != PodState::Creating)
                .map(convert::pod)
                .collect(),
            containers: ctrs,
            more: false,
        };
        let reply: api::SynchronizeResponse = plugin
            .call("Synchronize", &req, self.cfg.request_timeout())
            .await
            .map_err(PluginError::Synchronize)?;
        self.apply_updates(&plugin.full_name(), reply.update, None)
            .await;
        Ok(())
    }

    /// Starts each executable `NN-name` of plugin_path, in index order, its end of a
    /// socket pair as fd 3 (NRI_PLUGIN_SOCKET=3) and its name and index in
    /// NRI_PLUGIN_NAME and NRI_PLUGIN_IDX.
    async fn start_preinstalled(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(&self.cfg.plugin_path) else {
            return;
        };
        let mut found: Vec<(PathBuf, Preset)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let (index, base) = name.split_once('-')?;
                super::plugin::check_index(index).ok()?;
                super::plugin::check_name(base).ok()?;
                // Through a symlink too.
                let meta = std::fs::metadata(e.path()).ok()?;
                (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| {
                    (
                        e.path(),
                        Preset {
                            name: base.to_string(),
                            index: index.to_string(),
                        },
                    )
                })
            })
            .collect();
        found.sort_by(|a, b| (&a.1.index, &a.1.name).cmp(&(&b.1.index, &b.1.name)));
        for (path, preset) in found {
            match spawn_plugin(&path, &preset) {
                Ok((stream, child)) => {
                    info!(plugin = %path.display(), "NRI: starting pre-installed plugin");
                    // In order: each is registered (or refused) before the next starts.
                    self.admit(stream, Some(preset), Some(child)).await;
                }
                Err(e) => {
                    warn!(plugin = %path.display(), error = %e, "NRI: starting a pre-installed plugin")
                }
            }
        }
    }

    /// The connected plugins subscribed to `event`, in index order.
    fn subscribed(&self, event: api::Event) -> Vec<Arc<Plugin>> {
        let plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        plugins
            .iter()
            .filter(|p| p.subscribed(event))
            .cloned()
            .collect()
    }

    async fn drop_plugin(&self, plugin: &Plugin, why: &CallError) {
        warn!(plugin = %plugin.full_name(), error = %why, "NRI: plugin disconnected");
        self.plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p.key != plugin.key);
        plugin.close().await;
    }

    /// Calls `method` of `plugin`: `Ok(None)` when the plugin was dropped (it timed out
    /// or its connection is gone), an error when it refused.
    async fn call<Q, A>(
        &self,
        plugin: &Plugin,
        method: &'static str,
        what: &'static str,
        req: &Q,
    ) -> Result<Option<A>, NriError>
    where
        Q: prost::Message,
        A: prost::Message + Default,
    {
        match plugin.call(method, req, self.cfg.request_timeout()).await {
            Ok(a) => Ok(Some(a)),
            Err(e @ (CallError::Timeout(_) | CallError::Closed | CallError::Io(_))) => {
                self.drop_plugin(plugin, &e).await;
                Ok(None)
            }
            Err(e) => Err(NriError::Refused {
                plugin: plugin.full_name(),
                event: what,
                message: e.to_string(),
            }),
        }
    }

    /// A StateChange event to every subscribed plugin.
    async fn state_change(
        &self,
        event: api::Event,
        pod: api::PodSandbox,
        ctr: Option<api::Container>,
    ) -> Result<(), NriError> {
        let plugins = self.subscribed(event);
        if plugins.is_empty() {
            return Ok(());
        }
        let req = api::StateChangeEvent {
            event: event as i32,
            pod: Some(pod),
            container: ctr,
        };
        for p in plugins {
            self.call::<_, api::Empty>(&p, "StateChange", event_method(event), &req)
                .await?;
        }
        Ok(())
    }
}

/// The name errors give the RPC of an event delivered by StateChange.
fn event_method(event: api::Event) -> &'static str {
    match event {
        api::Event::RunPodSandbox => "StateChange(RunPodSandbox)",
        api::Event::StopPodSandbox => "StateChange(StopPodSandbox)",
        api::Event::RemovePodSandbox => "StateChange(RemovePodSandbox)",
        api::Event::PostCreateContainer => "StateChange(PostCreateContainer)",
        api::Event::StartContainer => "StateChange(StartContainer)",
        api::Event::PostStartContainer => "StateChange(PostStartContainer)",
        api::Event::PostUpdateContainer => "StateChange(PostUpdateContainer)",
        api::Event::RemoveContainer => "StateChange(RemoveContainer)",
        _ => "StateChange",
    }
}

/// The ttrpc method that carries `event`: StateChange, which every plugin serves,
/// except for the events whose answer means something.
fn method_of(event: api::Event) -> &'static str {
    match event {
        api::Event::CreateContainer => "CreateContainer",
        api::Event::UpdateContainer => "UpdateContainer",
        api::Event::StopContainer => "StopContainer",
        _ => "StateChange",
    }
}

/// Whether a plugin's refusal of `event` fails the CRI call (the others are logged).
fn refusal_fails(event: api::Event) -> bool {
    matches!(
        event,
        api::Event::RunPodSandbox
            | api::Event::CreateContainer
            | api::Event::StartContainer
            | api::Event::UpdateContainer
    )
}

fn listen(path: &Path) -> Result<UnixListener, NriError> {
    let err = |source| NriError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            // A socket someone answers on is another runtime's: never taken over.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process serves it (set [nri] socket_path, or enabled = false)",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

fn spawn_plugin(
    path: &Path,
    preset: &Preset,
) -> std::io::Result<(UnixStream, tokio::process::Child)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear()
        .env("NRI_PLUGIN_NAME", &preset.name)
        .env("NRI_PLUGIN_IDX", &preset.index)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null());
    crate::sys::pass_fd_as_3(&mut cmd, std::os::fd::OwnedFd::from(theirs));
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()?;
    ours.set_nonblocking(true)?;
    Ok((UnixStream::from_std(ours)?, child))
}

impl Nri for Adaptation {
    fn active(&self) -> bool {
        // A validator that requires plugins acts while none is connected.
        let requires =
            self.cfg.validator.enabled && !self.cfg.validator.required_plugins.is_empty();
        requires
            || !self
                .plugins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    fn pod_event<'a>(
        &'a self,
        event: api::Event,
        pod: &'a PodRecord,
    ) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async move {
            if self.subscribed(event).is_empty() {
                return Ok(());
            }
            match self.state_change(event, convert::pod(pod), None).await {
                Err(e) if !refusal_fails(event) => {
                    warn!(pod_id = %pod.id, error = %e, "NRI");
                    Ok(())
                }
                other => Ok(other?),
            }
        })
    }

    fn container_event<'a>(
        &'a self,
        event: api::Event,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
    ) -> BoxFuture<'a, CriResult<()>> {
        Box::pin(async move {
            if self.subscribed(event).is_empty() {
                return Ok(());
            }
            let bundle = ctr.bundle.clone();
            let spec = tokio::task::spawn_blocking(move || convert::read_spec(&bundle))
                .await
                .ok()
                .flatten();
            let c = convert::container(ctr, spec.as_ref());
            let result = if method_of(event) == "StopContainer" {
                let req = api::StopContainerRequest {
                    pod: Some(convert::pod(pod)),
                    container: Some(c),
                };
                let mut r = Ok(());
                for p in self.subscribed(event) {
                    match self
                        .call::<_, api::StopContainerResponse>(
                            &p,
                            "StopContainer",
                            "StopContainer",
                            &req,
                        )
                        .await
                    {
                        Ok(Some(reply)) => {
                            // Typically: resources the stopped container freed, given
                            // to others.
                            self.apply_updates(&p.full_name(), reply.update, Some(&ctr.id))
                                .await;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            } else {
                self.state_change(event, convert::pod(pod), Some(c)).await
            };
            match result {
                Err(e) if !refusal_fails(event) => {
                    warn!(container_id = %ctr.id, error = %e, "NRI");
                    Ok(())
                }
                other => Ok(other?),
            }
        })
    }

    fn create_container<'a>(
        &'a self,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
        spec: &'a Value,
    ) -> BoxFuture<'a, CriResult<Adjustment>> {
        Box::pin(async move {
            let plugins = self.subscribed(api::Event::CreateContainer);
            if plugins.is_empty() {
                // A required plugin may be the one missing.
                self.validate(pod, &[], &[])?;
                return Ok(Adjustment::default());
            }
            let req = api::CreateContainerRequest {
                pod: Some(convert::pod(pod)),
                container: Some(convert::container(ctr, Some(spec))),
            };
            let consulted: Vec<String> = plugins.iter().map(|p| p.full_name()).collect();
            let mut replies = Vec::new();
            for p in plugins {
                let reply: Option<api::CreateContainerResponse> = self
                    .call(&p, "CreateContainer", "CreateContainer", &req)
                    .await?;
                if let Some(r) = reply {
                    if !r.evict.is_empty() {
                        warn!(plugin = %p.full_name(), "NRI: evictions are not carried out yet");
                    }
                    self.apply_updates(&p.full_name(), r.update, Some(&ctr.id))
                        .await;
                    if let Some(a) = r.adjust {
                        replies.push((p.full_name(), a));
                    }
                }
            }
            self.validate(pod, &consulted, &replies)?;
            Ok(merge(&replies).map_err(NriError::from)?)
        })
    }

    fn update_container<'a>(
        &'a self,
        pod: &'a PodRecord,
        ctr: &'a ContainerRecord,
        requested: &'a cri::LinuxContainerResources,
    ) -> BoxFuture<'a, CriResult<cri::LinuxContainerResources>> {
        Box::pin(async move {
            let plugins = self.subscribed(api::Event::UpdateContainer);
            if plugins.is_empty() {
                return Ok(requested.clone());
            }
            let bundle = ctr.bundle.clone();
            let spec = tokio::task::spawn_blocking(move || convert::read_spec(&bundle))
                .await
                .ok()
                .flatten();
            let req = api::UpdateContainerRequest {
                pod: Some(convert::pod(pod)),
                container: Some(convert::container(ctr, spec.as_ref())),
                linux_resources: Some(convert::from_cri(requested)),
            };
            let mut replies = Vec::new();
            for p in plugins {
                let reply: Option<api::UpdateContainerResponse> = self
                    .call(&p, "UpdateContainer", "UpdateContainer", &req)
                    .await?;
                let updates = reply.map(|r| r.update).unwrap_or_default();
                let (own, others): (Vec<_>, Vec<_>) =
                    updates.into_iter().partition(|u| u.container_id == ctr.id);
                self.apply_updates(&p.full_name(), others, None).await;
                for u in own {
                    if let Some(r) = u.linux.and_then(|l| l.resources) {
                        replies.push((p.full_name(), r));
                    }
                }
            }
            let merged = merge_updates(&replies)
                .map_err(|c| NriError::from(super::adjust::MergeError::from(c)))?;
            Ok(convert::cri_resources(requested, &merged))
        })
    }

    fn info(&self) -> Value {
        let plugins: Vec<Value> = self
            .plugins()
            .iter()
            .map(|p| json!({"name": p.name, "index": p.index, "events": event_names(p.events)}))
            .collect();
        json!({
            "enabled": true,
            "socket_path": if self.cfg.disable_connections { Value::Null } else { json!(self.cfg.socket_path) },
            "plugins": plugins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_socket_is_never_taken_over_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("nri/nri.sock");
        std::fs::create_dir_all(path.parent().unwrap_or(dir.path()))
            .unwrap_or_else(|e| panic!("{e}"));
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = listen(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("another process serves it"), "{err}");
        drop(other);
        assert!(
            path.exists(),
            "a stale socket file is left by the other process"
        );
        let ours = listen(&path).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        drop(ours);
        std::fs::write(dir.path().join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            listen(&dir.path().join("file")).is_err(),
            "a file that is not a socket is left alone"
        );
    }

    #[test]
    fn events_are_carried_by_state_change_unless_their_answer_matters() {
        assert_eq!(method_of(api::Event::CreateContainer), "CreateContainer");
        assert_eq!(method_of(api::Event::UpdateContainer), "UpdateContainer");
        assert_eq!(method_of(api::Event::StopContainer), "StopContainer");
        for e in [
            api::Event::RunPodSandbox,
            api::Event::PostStartContainer,
            api::Event::RemoveContainer,
        ] {
            assert_eq!(method_of(e), "StateChange");
        }
        assert!(
            refusal_fails(api::Event::RunPodSandbox) && refusal_fails(api::Event::StartContainer)
        );
        assert!(
            !refusal_fails(api::Event::StopPodSandbox)
                && !refusal_fails(api::Event::PostCreateContainer)
        );
    }
}
