//! criusd's command line: the daemon (the default), `config default|dump`, and the
//! internal helpers `pinns` and `infra` that criusd runs as child processes.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::error;

use crius_cri_server::config::{Config, DEFAULT_CONFIG_TOML};
use crius_cri_server::{daemon, pinns};

/// criusd allocates through mimalloc, not glibc's malloc. Measured with the soak
/// benchmark (`e2e/benches/soak.rs`): once nothing per pod was kept any more, heaptrack
/// found the live heap bounded (under 1 MB allocated after lifecycle 300 was still
/// live 1,450 lifecycles later, nearly all of it the requests in flight), yet under
/// glibc the RSS kept rising about 0.9 KiB per lifecycle, with `MALLOC_ARENA_MAX=2`
/// as well, and `malloc_trim` gave back almost nothing: fragmentation of glibc's
/// arenas by criusd's churn of short-lived threads (the blocking pool, and two
/// threads per shim connection of the sync ttrpc client). The same run on another
/// allocator stayed flat.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            daemon::init_logging(&config);
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
            match runtime.block_on(daemon::serve(config)) {
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
