//! One connected NRI plugin: its registration, configuration and the calls the
//! runtime makes to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::api;
use super::mux::{Mux, PLUGIN_CONN, RUNTIME_CONN};
use super::ttrpc::{self, CallError, Handler, Status, code};

/// The ttrpc service a plugin serves.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// The ttrpc service the runtime serves.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

/// Every event a plugin may subscribe to (bit `event - 1` of the mask).
pub const VALID_EVENTS: i32 = (1 << (api::Event::Last as i32 - 1)) - 1;

/// Why a plugin could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("it did not register within {0:?}")]
    NoRegistration(Duration),
    #[error("its connection closed before it registered")]
    ClosedBeforeRegistration,
    #[error("it registered with {0}")]
    BadRegistration(String),
    #[error("Configure failed: {0}")]
    Configure(#[source] CallError),
    #[error("it subscribed to unknown events (mask {0:#x})")]
    BadEvents(i32),
    #[error("Synchronize failed: {0}")]
    Synchronize(#[source] CallError),
}

/// A plugin's name and index as a pre-installed plugin's file name gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub name: String,
    pub index: String,
}

/// A connected, configured plugin.
pub struct Plugin {
    /// Unique among the plugins this daemon has had.
    pub key: u64,
    pub name: String,
    pub index: String,
    /// The events it subscribed to.
    pub events: i32,
    /// Set for a plugin the daemon started.
    pub child: Mutex<Option<tokio::process::Child>>,
    client: ttrpc::Client,
    mux: Mux,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Checks the index a plugin registers with: two digits.
pub fn check_index(index: &str) -> Result<(), String> {
    if index.len() == 2 && index.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "index {index:?} (two digits, 00 to 99, are needed)"
        ))
    }
}

/// Checks the name a plugin registers with.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        Err(format!(
            "name {name:?} (a non-empty name without '/' is needed)"
        ))
    } else {
        Ok(())
    }
}

/// The names of the events in `mask`.
pub fn event_names(mask: i32) -> Vec<&'static str> {
    (1..api::Event::Last as i32)
        .filter(|e| mask & (1 << (e - 1)) != 0)
        .filter_map(|e| api::Event::try_from(e).ok())
        .map(|e| e.as_str_name())
        .collect()
}

/// How the runtime answers a plugin's unsolicited UpdateContainers.
pub type UpdateHandler = Arc<
    dyn Fn(
            Vec<api::ContainerUpdate>,
        ) -> futures_util::future::BoxFuture<'static, Vec<api::ContainerUpdate>>
        + Send
        + Sync,
>;

/// A plugin's configuration text, given its name and index.
pub type ConfigFn = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Where RegisterPlugin hands over the name and index (or why they are refused).
type Registration = Arc<Mutex<Option<oneshot::Sender<Result<(String, String), String>>>>>;

/// What connecting needs to know.
pub struct Setup {
    pub key: u64,
    pub preset: Option<Preset>,
    /// The plugin's configuration text, given its name and index.
    pub config: ConfigFn,
    pub registration_timeout: Duration,
    pub request_timeout: Duration,
    pub runtime_version: String,
    pub updates: UpdateHandler,
}

fn runtime_handler(registered: Registration, updates: UpdateHandler) -> Handler {
    Arc::new(move |service: String, method: String, payload: Bytes| {
        let registered = registered.clone();
        let updates = updates.clone();
        Box::pin(async move {
            if service != RUNTIME_SERVICE {
                return Err(Status::new(
                    code::UNIMPLEMENTED,
                    format!("unknown service {service}"),
                ));
            }
            match method.as_str() {
                "RegisterPlugin" => {
                    let req: api::RegisterPluginRequest = ttrpc::decode(payload)?;
                    let checked = check_name(&req.plugin_name)
                        .and_then(|()| check_index(&req.plugin_idx))
                        .map(|()| (req.plugin_name.clone(), req.plugin_idx.clone()));
                    let waiter = registered.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(w) = waiter {
                        let _ = w.send(checked.clone());
                    }
                    match checked {
                        Ok(_) => ttrpc::reply(&api::Empty {}),
                        Err(e) => Err(Status::new(
                            code::INVALID_ARGUMENT,
                            format!("invalid plugin {e}"),
                        )),
                    }
                }
                "UpdateContainers" => {
                    let req: api::UpdateContainersRequest = ttrpc::decode(payload)?;
                    let failed = updates(req.update).await;
                    ttrpc::reply(&api::UpdateContainersResponse { failed })
                }
                _ => Err(Status::new(
                    code::UNIMPLEMENTED,
                    format!("unknown method {method}"),
                )),
            }
        })
    })
}

impl Plugin {
    /// Takes a plugin through registration and configuration on `stream`.
    pub async fn connect(stream: UnixStream, setup: Setup) -> Result<Plugin, PluginError> {
        let (mux, mut readers) = Mux::start(stream, &[PLUGIN_CONN, RUNTIME_CONN]);
        let runtime_rx = readers.pop();
        let plugin_rx = readers.pop();
        let (Some(plugin_rx), Some(runtime_rx)) = (plugin_rx, runtime_rx) else {
            return Err(PluginError::ClosedBeforeRegistration);
        };
        let (tx, rx) = oneshot::channel();
        let registered = Arc::new(Mutex::new(Some(tx)));
        let server = ttrpc::serve(
            mux.clone(),
            RUNTIME_CONN,
            runtime_rx,
            runtime_handler(registered, setup.updates.clone()),
        );
        let client = ttrpc::Client::new(mux.clone(), PLUGIN_CONN, plugin_rx);
        let fail = |e| {
            let mux = mux.clone();
            async move {
                mux.close().await;
                Err(e)
            }
        };
        let (name, index) = match tokio::time::timeout(setup.registration_timeout, rx).await {
            Err(_) => return fail(PluginError::NoRegistration(setup.registration_timeout)).await,
            Ok(Err(_)) => return fail(PluginError::ClosedBeforeRegistration).await,
            Ok(Ok(Err(e))) => return fail(PluginError::BadRegistration(e)).await,
            Ok(Ok(Ok(got))) => match &setup.preset {
                Some(p) => (p.name.clone(), p.index.clone()),
                None => got,
            },
        };
        let req = api::ConfigureRequest {
            config: (setup.config)(&name, &index),
            runtime_name: "crius".to_string(),
            runtime_version: setup.runtime_version.clone(),
            registration_timeout: setup.registration_timeout.as_millis() as i64,
            request_timeout: setup.request_timeout.as_millis() as i64,
            nri_version: String::new(),
        };
        let reply: Result<api::ConfigureResponse, _> = client
            .call(PLUGIN_SERVICE, "Configure", &req, setup.request_timeout)
            .await;
        let events = match reply {
            Err(e) => return fail(PluginError::Configure(e)).await,
            Ok(r) if r.events == 0 => VALID_EVENTS,
            Ok(r) if r.events & !VALID_EVENTS != 0 => {
                return fail(PluginError::BadEvents(r.events)).await;
            }
            Ok(r) => r.events,
        };
        Ok(Plugin {
            key: setup.key,
            name,
            index,
            events,
            child: Mutex::new(None),
            client,
            mux,
            server,
        })
    }

    /// `NN-name`, as logs and errors name it.
    pub fn full_name(&self) -> String {
        format!("{}-{}", self.index, self.name)
    }

    pub fn subscribed(&self, event: api::Event) -> bool {
        let e = event as i32;
        e > 0 && self.events & (1 << (e - 1)) != 0
    }

    /// Calls `method` of the plugin's service.
    pub async fn call<Q, A>(&self, method: &str, req: &Q, timeout: Duration) -> Result<A, CallError>
    where
        Q: prost::Message,
        A: prost::Message + Default,
    {
        self.client.call(PLUGIN_SERVICE, method, req, timeout).await
    }

    /// Whether its connection has ended.
    pub fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }

    /// Resolves once its connection has ended.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.mux.closed()
    }

    /// Closes its connection and stops it if the daemon started it.
    pub async fn close(&self) {
        self.mux.close().await;
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}
