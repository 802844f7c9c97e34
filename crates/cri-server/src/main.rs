//! criusd: the crius CRI v1 server (see DESIGN.md).
#![deny(unsafe_code)]

mod config;
mod container;
mod containers;
mod creations;
mod error;
mod pinns;
mod podfiles;
mod sandbox;
mod server;
mod streaming;
mod sys;
mod util;
mod validate;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info};

use crate::config::{Config, DEFAULT_CONFIG_TOML};

/// The largest CRI message accepted or sent (the kubelet's own limit).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(name = "criusd", version, about = "crius: a Kubernetes CRI runtime")]
struct Cli {
    /// Configuration file (TOML). Without it the built-in defaults are used.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Internal: start a pod's infra process in a new PID namespace.
    #[command(hide = true)]
    Infra {
        #[arg(long)]
        pidfile: PathBuf,
    },
    /// Internal: create and pin pod namespaces (run by criusd itself).
    #[command(hide = true)]
    Pinns {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        net: bool,
        #[arg(long)]
        ipc: bool,
        #[arg(long)]
        uts: bool,
        #[arg(long)]
        hostname: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// The complete default configuration, with comments.
    Default,
    /// The effective configuration (defaults plus --config).
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Infra { pidfile }) => match pinns::run_infra(&pidfile) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("criusd infra: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Pinns {
            dir,
            net,
            ipc,
            uts,
            hostname,
        }) => {
            // Runs single-threaded, before any runtime exists: unshare acts on the
            // calling thread, and this process has only one.
            let req = pinns::PinRequest {
                dir,
                net,
                ipc,
                uts,
                hostname,
            };
            match pinns::run_helper(&req) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("criusd pinns: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Config { what }) => match what {
            ConfigCommand::Default => {
                print!("{DEFAULT_CONFIG_TOML}");
                ExitCode::SUCCESS
            }
            ConfigCommand::Dump => match Config::load(cli.config.as_deref()) {
                Ok(c) => match c.to_toml() {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("criusd: {e}");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("criusd: {e}");
                    ExitCode::from(2)
                }
            },
        },
        None => {
            let config = match Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("criusd: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("criusd: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    eprintln!("criusd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(config: &Config) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => tracing_subscriber::EnvFilter::try_new(&v)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level)),
        _ => tracing_subscriber::EnvFilter::new(&config.log_level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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

async fn serve(config: Config) -> Result<()> {
    let config = Arc::new(config);
    make_dir(&config.state_dir, 0o711)?;
    make_dir(&config.run_dir, 0o711)?;
    make_dir(&config.run_dir.join("pods"), 0o711)?;
    // Bind first: a second daemon on the same socket must fail before it touches state.
    let listener = bind_socket(&config.socket)?;
    let store_path = config.state_dir.join("store.redb");
    let store = {
        let p = store_path.clone();
        tokio::task::spawn_blocking(move || crius_store::Store::open(&p))
            .await
            .context("opening the store")??
    };
    let (content, snapshots) = {
        let state = config.state_dir.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let content = crius_snapshotter::ContentStore::open(&state.join("content"))
                .context("opening the content store")?;
            let snapshots = crius_snapshotter::Snapshotter::open(&state.join("snapshots"))
                .context("opening the snapshotter")?;
            Ok((content, snapshots))
        })
        .await
        .context("opening the image stores")??
    };
    let snapshots = Arc::new(snapshots);
    let images = Arc::new(crius_images::Images::new(
        store.clone(),
        Arc::new(content),
        snapshots.clone(),
        &config.images,
    ));
    let helper = if config.pinns_path.as_os_str().is_empty() {
        std::env::current_exe().context("locating the criusd binary for the namespace helper")?
    } else {
        config.pinns_path.clone()
    };
    let (network, bridge) = network_backend(&config, &store)?;
    let sandboxes = Arc::new(sandbox::Sandboxes::new(
        config.clone(),
        store.clone(),
        network.clone(),
        helper,
    ));
    sandboxes
        .recover()
        .await
        .context("recovering state at start-up")?;
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
    let shim_binary = if config.shim_path.as_os_str().is_empty() {
        std::env::current_exe()
            .context("locating the criusd binary")?
            .with_file_name("crius-shim")
    } else {
        config.shim_path.clone()
    };
    let containers = Arc::new(containers::Containers::new(
        config.clone(),
        store.clone(),
        sandboxes.clone(),
        images.clone(),
        snapshots,
        shim_binary,
    ));
    containers
        .recover()
        .await
        .context("recovering containers at start-up")?;
    containers.start_exit_watcher();
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
    let cri = server::Cri {
        config: config.clone(),
        sandboxes,
        containers,
        network,
        streaming,
    };
    info!(
        socket = %config.socket.display(),
        version = env!("CARGO_PKG_VERSION"),
        cgroup_driver = ?config.cgroup_driver(),
        "criusd serving CRI v1"
    );
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    };
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::from_arc(Arc::new(cri))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(server::ImageApi {
                config: config.clone(),
                images,
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving gRPC")?;
    stop_streams.cancel();
    let _ = std::fs::remove_file(&config.socket);
    info!("criusd stopped");
    Ok(())
}
