//! criusd's command line: the daemon (the default), `check` (the host's
//! prerequisites), `config default|dump`,
//! `store check|repair` (the metadata store, with the daemon stopped), and the
//! internal helpers `pinns` and `infra` that criusd runs as child processes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::error;

use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::error::status_message;
use crate::{daemon, notify, pinns, sys};

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
    /// Check the host's prerequisites (kernel, overlayfs, cgroups, OCI runtimes,
    /// iptables, privileges, free space) and print them as a table. Exits 0 only when
    /// crius can run here.
    Check {
        /// Where the node's files are (its runtimes, iptables, the roots), when not
        /// at `/`: an installer in a container passes the node's root, mounted there.
        /// The kernel is the one this runs on.
        #[arg(long, default_value = "/")]
        host_root: PathBuf,
    },
    /// Print configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Check or repair the metadata store (<state_dir>/store.redb). Stop criusd
    /// first: the store is locked while a daemon holds it.
    Store {
        #[command(subcommand)]
        what: StoreCommand,
    },
    /// Internal: start a pod's infra process in a new PID namespace.
    #[command(hide = true)]
    Infra {
        #[arg(long)]
        pidfile: PathBuf,
        /// A pinned user namespace to make the PID namespace in.
        #[arg(long)]
        userns: Option<PathBuf>,
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
        /// A line of the new user namespace's uid map (`container:host:size`);
        /// with any, the other namespaces are made inside it.
        #[arg(long = "uid-map")]
        uid_maps: Vec<pinns::IdMap>,
        /// A line of its gid map.
        #[arg(long = "gid-map")]
        gid_maps: Vec<pinns::IdMap>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// The complete default configuration, with comments.
    Default,
    /// The effective configuration (defaults plus --config).
    Dump,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Report the schema version, entries per table, records that do not decode and
    /// dangling names, references and index entries. Changes nothing; exits 1 when
    /// there is a problem.
    Check,
    /// Copy the store to store.redb.bak-<time>, then remove records that do not
    /// decode and rebuild every index from the records.
    Repair,
}

/// `criusd store check|repair`: opens the store of the configuration and prints the
/// report. Exits 0 when the store is (now) clean, 1 on problems, 2 when the store
/// cannot be opened or the configuration not read.
fn store_command(config: Option<&std::path::Path>, what: StoreCommand) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("criusd: {e}");
            return ExitCode::from(2);
        }
    };
    let path = config.store_path();
    let db = match crius_store::Db::open_existing(&path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("criusd store: {}", status_message(&e));
            if matches!(e, crius_store::StoreError::Open { .. }) && path.exists() {
                eprintln!(
                    "criusd store: the file cannot be opened as a store; restore a backup copy ({}.bak-*) over it, or move it aside so that criusd starts with an empty store (what it held must then be cleaned up by hand)",
                    path.display()
                );
            }
            return ExitCode::from(2);
        }
    };
    let clean = match what {
        StoreCommand::Check => db.check().map(|r| {
            print!("{r}");
            r.is_clean()
        }),
        StoreCommand::Repair => db.repair().map(|r| {
            print!("{r}");
            r.after.is_clean()
        }),
    };
    match clean {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("criusd store: {}", status_message(&e));
            ExitCode::from(2)
        }
    }
}

/// The command line of `criusd` (and of `criusd-failpoints`, the same daemon with its
/// failure points compiled in).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Infra { pidfile, userns }) => {
            match pinns::run_infra(&pidfile, userns.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("criusd infra: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Pinns {
            dir,
            net,
            ipc,
            uts,
            hostname,
            uid_maps,
            gid_maps,
        }) => {
            // Runs single-threaded, before any runtime exists: unshare acts on the
            // calling thread, and this process has only one.
            let req = pinns::PinRequest {
                dir,
                net,
                ipc,
                uts,
                hostname,
                user: (!uid_maps.is_empty() || !gid_maps.is_empty()).then_some(pinns::UserMaps {
                    uids: uid_maps,
                    gids: gid_maps,
                }),
            };
            match pinns::run_helper(&req) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("criusd pinns: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Store { what }) => store_command(cli.config.as_deref(), what),
        Some(Command::Check { host_root }) => match Config::load(cli.config.as_deref()) {
            Ok(config) => {
                let (text, can_run) = crate::check::report(&crate::check::run(
                    std::path::Path::new("/"),
                    &host_root,
                    &config,
                ));
                print!("{text}");
                if can_run {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("criusd: {e}");
                ExitCode::from(2)
            }
        },
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
            // Before any thread starts: the settings leave the environment here.
            let settings = notify::Settings::from(|k| std::env::var(k).ok());
            for name in notify::ENV_VARS {
                sys::remove_env_before_threads(name);
            }
            let notifier = match notify::Notifier::new(&settings, std::process::id()) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("criusd: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = match Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("criusd: {e}");
                    return ExitCode::from(2);
                }
            };
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
            let exporter = {
                let _in_runtime = runtime.enter();
                daemon::init_logging(&config)
            };
            let served = runtime.block_on(daemon::serve(config, notifier));
            if let Some(e) = exporter {
                // The spans still queued go out before the daemon exits.
                let _in_runtime = runtime.enter();
                e.shutdown();
            }
            match served {
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
