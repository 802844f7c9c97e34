//! The daemon's wiring: open the stores, choose the network backend, recover what a
//! previous daemon left, bind the CRI socket and the streaming server, serve until
//! SIGTERM.
//!
//! Order matters at start-up: the socket is bound first (a second daemon on the same
//! socket fails before it touches any state), recovery runs before the first request
//! is served (nothing races it), and the bridge is reconciled with the store before
//! any new pod gets an address.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crius_cri_api::v1::image_service_server::ImageServiceServer;
use crius_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::notify::Notifier;
use crate::{container, host, sandbox, services, streaming};

/// The largest CRI message accepted or sent (the kubelet's own limit).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Logs to stderr at the configured level (`RUST_LOG` wins when set), and exports
/// spans by OTLP when `[tracing] endpoint` is set: returns the exporter's provider,
/// to be shut down (flushing what is queued) when the daemon stops. Call it inside
/// the async runtime (the OTLP client runs on it).
pub fn init_logging(config: &Config) -> Option<crate::otel::Exporter> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => tracing_subscriber::EnvFilter::try_new(&v)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level)),
        _ => tracing_subscriber::EnvFilter::new(&config.log_level),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let (exporter, failed) = match crate::otel::Exporter::start(&config.tracing) {
        Ok(e) => (e, None),
        Err(e) => (None, Some(e)),
    };
    let otel = exporter.as_ref().map(|e| e.layer());
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if let Some(e) = failed {
        warn!(endpoint = %config.tracing.endpoint, error = %e, "tracing export is off");
    }
    exporter
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Binds the CRI socket: replaces a stale one, refuses one a live daemon answers on.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        make_dir(dir, 0o711)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another daemon is serving on {}; stop it first or configure another socket",
                    path.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(socket = %path.display(), "replacing a stale socket left by a daemon that is gone");
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("probing the existing socket {}", path.display())
                    });
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// The backend the config asks for, and the built-in bridge when one is in use
/// (it needs a reconcile at start-up).
type Backends = (Arc<dyn crius_cni::NetworkBackend>, Option<BridgeHandle>);

/// The built-in bridge, reached directly or through the auto backend.
enum BridgeHandle {
    Direct(Arc<crius_cni::BridgeBackend>),
    Auto(Arc<crius_cni::AutoBackend>),
}

impl BridgeHandle {
    async fn reconcile(
        &self,
        live: &[crius_cni::PodNetworkRequest],
    ) -> Result<crius_cni::ReconcileReport, crius_cni::NetworkError> {
        match self {
            BridgeHandle::Direct(b) => b.reconcile(live).await,
            BridgeHandle::Auto(a) => a.bridge().reconcile(live).await,
        }
    }
}

fn network_backend(config: &Config, store: &crius_store::Store) -> Result<Backends> {
    use crate::config::NetworkBackendKind as Kind;
    let net = &config.network;
    let leases: Arc<dyn crius_cni::LeaseStore> = Arc::new(store.clone());
    let bridge = || -> Result<crius_cni::BridgeBackend> {
        Ok(crius_cni::BridgeBackend::new(
            net.bridge_config()?,
            leases.clone(),
        )?)
    };
    let cni = || crius_cni::CniBackend::new(net.cni_config(&config.state_dir));
    Ok(match net.backend {
        Kind::None => (Arc::new(crius_cni::LoopbackOnly), None),
        Kind::Cni => (Arc::new(cni()), None),
        Kind::Bridge => {
            let b = Arc::new(bridge()?);
            (b.clone(), Some(BridgeHandle::Direct(b)))
        }
        Kind::Auto => {
            let a = Arc::new(crius_cni::AutoBackend::new(cni(), bridge()?));
            (a.clone(), Some(BridgeHandle::Auto(a)))
        }
    })
}

/// The stores under the state directory.
struct Stores {
    store: crius_store::Store,
    content: Arc<crius_snapshotter::ContentStore>,
    snapshots: Arc<crius_snapshotter::Snapshotter>,
}

/// Opens the metadata store, the content store and the snapshotter (each cleans
/// what a crash left half-written).
async fn open_stores(config: &Config) -> Result<Stores> {
    let (state, store_path) = (config.state_dir.clone(), config.store_path());
    tokio::task::spawn_blocking(move || -> Result<Stores> {
        let store = crius_store::Store::open(&store_path).context("opening the metadata store")?;
        let content = crius_snapshotter::ContentStore::open(&state.join("content"))
            .context("opening the content store")?;
        let snapshots = crius_snapshotter::Snapshotter::open(&state.join("snapshots"))
            .context("opening the snapshotter")?;
        Ok(Stores {
            store,
            content: Arc::new(content),
            snapshots: Arc::new(snapshots),
        })
    })
    .await
    .context("opening the stores")?
}

/// A binary next to criusd, or the configured one.
fn sibling_or(configured: &Path, name: &str) -> Result<std::path::PathBuf> {
    if !configured.as_os_str().is_empty() {
        return Ok(configured.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the criusd binary")?;
    Ok(if name == "criusd" {
        exe
    } else {
        exe.with_file_name(name)
    })
}

/// Makes the managers and recovers what a previous daemon left, before anything is
/// served.
async fn start_managers(
    config: &Arc<Config>,
    stores: Stores,
) -> Result<(
    Arc<sandbox::Sandboxes>,
    Arc<container::Containers>,
    Arc<crius_images::Images>,
    Arc<dyn crius_cni::NetworkBackend>,
    Option<Arc<crate::nri::runtime::Adaptation>>,
)> {
    let Stores {
        store,
        content,
        snapshots,
    } = stores;
    let images = Arc::new(crius_images::Images::new(
        store.clone(),
        content,
        snapshots.clone(),
        &config.images,
    ));
    let (network, bridge) = network_backend(config, &store)?;
    let ns = Arc::new(host::ns::HelperNamespaces::new(sibling_or(
        &config.pinns_path,
        "criusd",
    )?));
    let scratch = config
        .state_dir
        .join(format!("userns-probe-{}", std::process::id()));
    match ns.probe_user_namespaces(&scratch).await {
        Ok(()) => tracing::info!("pods may have their own user namespace (idmapped mounts work)"),
        Err(e) => {
            tracing::warn!(error = %e, "pods cannot have their own user namespace on this node")
        }
    }
    // NRI's plugins are started and connected once recovery is done (see `serve`).
    let nri = config
        .nri
        .enabled
        .then(|| crate::nri::runtime::Adaptation::new(config.nri.clone(), store.clone()));
    let hooks: Arc<dyn crate::nri::Nri> = match &nri {
        Some(a) => a.clone(),
        None => Arc::new(crate::nri::NoNri),
    };
    let sandboxes = Arc::new(
        sandbox::Sandboxes::new(config.clone(), store.clone(), network.clone(), ns).with_nri(hooks),
    );
    sandboxes
        .recover()
        .await
        .context("recovering pod sandboxes at start-up")?;
    if let Some(bridge) = bridge {
        // Before any new pod: leases, veths and rules of pods that are gone are
        // removed, and the live pods' hostPort rules and reservations restored.
        let live = sandboxes
            .live_network_requests()
            .await
            .context("listing live pods for the network reconcile")?;
        let report = bridge
            .reconcile(&live)
            .await
            .context("reconciling the pod network with the store")?;
        info!(?report, "pod network reconciled");
    }
    let shim_binary = sibling_or(&config.shim_path, "crius-shim")?;
    let host = container::Host {
        shims: Arc::new(host::shim::RealShims {
            binary: shim_binary.clone(),
        }),
        rootfs: Arc::new(host::rootfs::SnapshotRootfs { snapshots }),
        procs: Arc::new(host::cgroup::CgroupProcesses {
            root: std::path::PathBuf::from("/sys/fs/cgroup"),
        }),
        shim_binary,
    };
    let containers = Arc::new(container::Containers::new(
        config.clone(),
        store,
        sandboxes.clone(),
        images.clone(),
        host,
    ));
    if let Some(nri) = &nri {
        let c = containers.clone();
        nri.set_updater(Arc::new(move |id, resources| {
            let c = c.clone();
            Box::pin(async move { c.update_from_nri(&id, &resources).await })
        }));
    }
    let probing = containers.clone();
    tokio::task::spawn_blocking(move || probing.probe_features())
        .await
        .context("probing the runtime handlers' features")?;
    containers
        .recover()
        .await
        .context("recovering containers at start-up")?;
    containers.start_exit_watcher();
    // Layers a crash left without an image record (a pull cut short) are garbage now
    // that every container's layers are known; its verified blobs are kept for the
    // retry until they expire, and collected then.
    let expiry = Duration::from_secs(config.images.interrupted_pull_expiry_secs);
    let again = images
        .collect_after_restart(expiry)
        .await
        .context("collecting image garbage at start-up")?;
    if let Some(after) = again {
        let images = images.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = images.collect_garbage().await {
                warn!(error = %e.report(), "collecting the blobs of an interrupted pull");
            }
        });
    }
    Ok((sandboxes, containers, images, network, nri))
}

/// Waits for SIGTERM or SIGINT, then tells the service manager criusd is stopping.
async fn shutdown_signal(notifier: Option<Arc<Notifier>>) {
    wait_for_signal().await;
    if let Some(n) = notifier {
        if let Err(e) = n.stopping() {
            warn!("notifying the service manager of the shutdown: {e}");
        }
    }
}

/// Pings the service manager's watchdog for as long as the runtime schedules tasks.
fn spawn_watchdog(notifier: Arc<Notifier>) {
    let Some(every) = notifier.watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match notifier.ping_watchdog() {
                Ok(()) => {}
                // Its queue is full: this ping is dropped, the next one may fit.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    debug!("the service manager's queue is full: watchdog ping dropped")
                }
                Err(e) => warn!("pinging the service manager's watchdog: {e}"),
            }
        }
    });
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("installing the SIGTERM handler: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
}

/// Runs the daemon until SIGTERM or SIGINT, telling `notifier`'s service manager
/// when it is ready and when it stops.
pub async fn serve(config: Config, notifier: Option<Notifier>) -> Result<()> {
    let notifier = notifier.map(Arc::new);
    let config = Arc::new(config);
    make_dir(&config.state_dir, 0o711)?;
    make_dir(&config.run_dir, 0o711)?;
    make_dir(&config.run_dir.join("pods"), 0o711)?;
    // Bind first: a second daemon on the same socket must fail before it touches state.
    let listener = bind_socket(&config.socket)?;
    let stores = open_stores(&config).await?;
    let (sandboxes, containers, images, network, nri) = start_managers(&config, stores).await?;
    if let Some(nri) = &nri {
        nri.start().await.context("starting NRI")?;
    }

    let (streaming, stream_listener, stream_tls) =
        streaming::StreamServer::bind(&config.streaming).await?;
    let stop_streams = tokio_util::sync::CancellationToken::new();
    let streams_dir = config.run_dir.join("streams");
    // FIFOs of sessions a previous daemon was serving are dead.
    let _ = std::fs::remove_dir_all(&streams_dir);
    make_dir(&streams_dir, 0o700)?;
    streaming.clone().serve(
        stream_listener,
        stream_tls,
        Arc::new(streaming::backend::RuntimeBackend {
            containers: containers.clone(),
            sandboxes: sandboxes.clone(),
            dir: streams_dir,
        }),
        stop_streams.clone(),
    );

    let observer: Arc<dyn services::CallObserver> = if config.metrics.address.is_empty() {
        Arc::new(services::NoObserver)
    } else {
        let listener = crate::metrics::bind(&config.metrics.address).await?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (pods, ctrs, net, cfg, imgs) = (
            sandboxes.clone(),
            containers.clone(),
            network.clone(),
            config.clone(),
            images.clone(),
        );
        let snapshot: crate::metrics::SnapshotFn = Arc::new(move || {
            let (pods, ctrs, net, cfg) = (pods.clone(), ctrs.clone(), net.clone(), cfg.clone());
            let pulls = imgs.pull_counts();
            Box::pin(async move {
                let mut snap = crate::metrics::Snapshot {
                    network_ready: net.status().ready,
                    runtime_ready: services::runtime_ready(&cfg),
                    pulls,
                    ..Default::default()
                };
                let p = pods.list(None).await.unwrap_or_default();
                let c = ctrs.list(None).await.unwrap_or_default();
                snap.count(&p, &c);
                snap
            })
        });
        crate::metrics::serve(listener, metrics.clone(), snapshot, stop_streams.clone());
        metrics
    };
    let events = sandboxes.events().clone();
    let runtime = services::Cri {
        config: config.clone(),
        sandboxes,
        containers,
        network,
        streaming,
        observer: observer.clone(),
    };
    let image_api = services::ImageApi {
        config: config.clone(),
        images,
        observer,
    };
    info!(
        socket = %config.socket.display(),
        version = env!("CARGO_PKG_VERSION"),
        cgroup_driver = ?config.cgroup_driver(),
        "criusd serving CRI v1"
    );
    // The socket listens (connections queue until the server below accepts them) and
    // recovery is done: the service manager may start the kubelet now.
    if let Some(n) = &notifier {
        let status = format!("serving CRI v1 on {}", config.socket.display());
        if let Err(e) = n.ready(&status) {
            warn!("notifying the service manager of readiness: {e}");
        }
        spawn_watchdog(n.clone());
    }
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(image_api)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown_signal(notifier).await;
            // Open GetContainerEvents streams never end by themselves; the server
            // waits for them.
            events.close();
        })
        .await
        .context("serving gRPC")?;
    stop_streams.cancel();
    if let Some(nri) = &nri {
        nri.shutdown().await;
    }
    let _ = std::fs::remove_file(&config.socket);
    info!("criusd stopped");
    Ok(())
}
