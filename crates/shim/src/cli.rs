//! The `crius-shim` command line, compatible with containerd's shim v2 binary protocol.
//!
//! ```text
//! crius-shim [flags] start    # spawn the detached shim server, print its address, exit
//! crius-shim [flags] delete   # clean up after a dead shim: runc delete, print DeleteResponse
//! crius-shim [flags]          # (internal) the server itself, started by `start`
//! ```
//!
//! Flags (`-flag value`, `--flag value` or `--flag=value`):
//! - `-id ID` (required): the container id.
//! - `-bundle DIR`: the OCI bundle (default: the working directory, as containerd does).
//! - `-namespace NS`, `-address ADDR`, `-publish-binary PATH`, `-debug`: containerd's;
//!   accepted (namespace and address feed the default socket name).
//! - `-socket PATH`: where to serve ttrpc (default `/run/crius/s/<hash>.sock`).
//! - `-runtime PATH`: the OCI runtime binary (default `runc` from PATH).
//! - `-runtime-root DIR`: the runtime's `--root` (default `<bundle>/.crius-runtime`).
//! - `-log-path PATH`: write the container's stdout/stderr as a CRI log there.
//! - `-exit-file PATH`: where the exit record goes (default `<bundle>/exit.json`).
//! - `-shim-log PATH`: the shim's own diagnostics (default: containerd's `log` FIFO in
//!   the bundle if it exists, else discarded).
//!
//! `start` prints `unix://<socket>` on stdout once the server is accepting connections.

use std::collections::hash_map::DefaultHasher;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;

use crate::crius_service::CriusService;
use crate::runtime::Runtime;
use crate::service::{Config, Shim};
use crate::task::TaskService;
use crate::{exitfile, reaper, sys};

#[derive(Default, Debug)]
struct Args {
    action: Option<String>,
    id: String,
    bundle: Option<PathBuf>,
    namespace: String,
    address: String,
    socket: Option<PathBuf>,
    runtime: Option<PathBuf>,
    runtime_root: Option<PathBuf>,
    log_path: Option<PathBuf>,
    exit_file: Option<PathBuf>,
    shim_log: Option<PathBuf>,
    debug: bool,
}

fn parse(argv: Vec<OsString>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy().into_owned();
        if !s.starts_with('-') {
            if a.action.is_some() {
                return Err(format!("unexpected argument {s:?}"));
            }
            a.action = Some(s);
            continue;
        }
        let flag = s.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(OsString::from(v))),
            None => (flag.to_string(), None),
        };
        if name == "debug" {
            a.debug = true;
            continue;
        }
        if name == "v" || name == "version" {
            a.action = Some("version".into());
            continue;
        }
        let value = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return Err(format!("flag -{name} needs a value")),
        };
        let text = value.to_string_lossy().into_owned();
        let path = PathBuf::from(&value);
        match name.as_str() {
            "id" => a.id = text,
            "bundle" => a.bundle = Some(path),
            "namespace" => a.namespace = text,
            "address" => a.address = text,
            "publish-binary" => {}
            "socket" => a.socket = Some(path),
            "runtime" => a.runtime = Some(path),
            "runtime-root" => a.runtime_root = Some(path),
            "log-path" => a.log_path = Some(path),
            "exit-file" => a.exit_file = Some(path),
            "shim-log" => a.shim_log = Some(path),
            _ => return Err(format!("unknown flag -{name}")),
        }
    }
    Ok(a)
}

impl Args {
    fn bundle(&self) -> PathBuf {
        self.bundle
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            let mut h = DefaultHasher::new();
            (&self.address, &self.namespace, &self.id, self.bundle()).hash(&mut h);
            PathBuf::from(format!("/run/crius/s/{:016x}.sock", h.finish()))
        })
    }

    fn runtime(&self) -> Runtime {
        let bundle = self.bundle();
        Runtime {
            binary: self
                .runtime
                .clone()
                .unwrap_or_else(|| PathBuf::from("runc")),
            root: self
                .runtime_root
                .clone()
                .unwrap_or_else(|| bundle.join(".crius-runtime")),
            log: bundle.join("runtime-log.json"),
        }
    }

    fn exit_file(&self) -> PathBuf {
        self.exit_file
            .clone()
            .unwrap_or_else(|| self.bundle().join("exit.json"))
    }

    /// The arguments that start the server with the same configuration.
    fn server_args(&self, socket: &Path) -> Vec<OsString> {
        let bundle = self.bundle();
        ServerFlags {
            id: &self.id,
            bundle: &bundle,
            socket,
            namespace: &self.namespace,
            address: &self.address,
            runtime: self.runtime.as_deref(),
            runtime_root: self.runtime_root.as_deref(),
            log_path: self.log_path.as_deref(),
            exit_file: self.exit_file.as_deref(),
            shim_log: self.shim_log.as_deref(),
        }
        .to_args()
    }
}

/// The flags that configure a shim server, as `start` passes them on to the server it
/// spawns and as the client passes them to `start`. Empty text and `None` are left out
/// (the server's default).
pub(crate) struct ServerFlags<'a> {
    pub(crate) id: &'a str,
    pub(crate) bundle: &'a Path,
    pub(crate) socket: &'a Path,
    pub(crate) namespace: &'a str,
    pub(crate) address: &'a str,
    pub(crate) runtime: Option<&'a Path>,
    pub(crate) runtime_root: Option<&'a Path>,
    pub(crate) log_path: Option<&'a Path>,
    pub(crate) exit_file: Option<&'a Path>,
    pub(crate) shim_log: Option<&'a Path>,
}

impl ServerFlags<'_> {
    /// `-flag value` pairs, in a fixed order.
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let always = [
            ("-id", OsStr::new(self.id)),
            ("-bundle", self.bundle.as_os_str()),
            ("-socket", self.socket.as_os_str()),
        ];
        let texts = [("-namespace", self.namespace), ("-address", self.address)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, OsStr::new(v)));
        let paths = [
            ("-runtime", self.runtime),
            ("-runtime-root", self.runtime_root),
            ("-log-path", self.log_path),
            ("-exit-file", self.exit_file),
            ("-shim-log", self.shim_log),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?.as_os_str())));
        always
            .into_iter()
            .chain(texts)
            .chain(paths)
            .flat_map(|(k, v)| [OsString::from(k), v.to_owned()])
            .collect()
    }
}

/// Entry point of the `crius-shim` binary.
pub fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crius-shim: {e}");
            return ExitCode::from(2);
        }
    };
    let action = args.action.clone().unwrap_or_default();
    if action == "version" {
        println!("crius-shim {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.id.is_empty() {
        eprintln!("crius-shim: -id is required");
        return ExitCode::from(2);
    }
    let res = match action.as_str() {
        "start" => start(&args),
        "delete" => delete(&args),
        "" | "serve" => serve(&args),
        other => Err(format!("unknown action {other:?} (want start or delete)")),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crius-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &Args) -> Result<(), String> {
    let socket = args.socket();
    let address = format!("unix://{}", socket.display());
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        // A shim for this container already serves: hand out its address (containerd's
        // "already exists" case).
        println!("{address}");
        return Ok(());
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let bundle = args.bundle();
    let stderr = match &args.shim_log {
        Some(p) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(Stdio::from)
            .map_err(|e| format!("opening {}: {e}", p.display()))?,
        None => {
            let fifo = bundle.join("log");
            // containerd's shim log FIFO; containerd holds its read end open.
            match sys::open_fifo(&fifo, libc::O_WRONLY | libc::O_NONBLOCK) {
                Ok(f) if fifo.exists() => {
                    let _ = sys::set_blocking(f.as_raw_fd());
                    Stdio::from(f)
                }
                _ => Stdio::null(),
            }
        }
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding own binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(args.server_args(&socket))
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawning the shim server: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ok" {
        let _ = child.wait();
        let msg = line.trim();
        return Err(if msg.is_empty() {
            "the shim server exited before serving".to_string()
        } else {
            msg.to_string()
        });
    }
    // The server is detached (own session); it is reparented when we exit.
    println!("{address}");
    Ok(())
}

fn serve(args: &Args) -> Result<(), String> {
    let ready = |msg: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{msg}");
        let _ = out.flush();
    };
    let res = serve_setup(args);
    let (mut server, socket, rx) = match res {
        Ok(v) => v,
        Err(e) => {
            ready(&format!("error: {e}"));
            return Err(e);
        }
    };
    ready("ok");
    // Nobody reads our stdout any more: point it at /dev/null.
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = sys::dup2(null.as_raw_fd(), 1);
    }
    let caller = rx.recv().ok().flatten();
    // No new caller finds the shim from now on.
    let _ = std::fs::remove_file(&socket);
    // Let the Shutdown response reach the caller: it hangs up once it has it (a
    // caller that keeps its connection, as containerd does, is given 50 ms).
    match caller {
        Some(conn) => sys::wait_hangup(&conn, 50),
        None => std::thread::sleep(std::time::Duration::from_millis(50)),
    }
    server = server.stop_listen();
    drop(server);
    sys::exit_now(0)
}

type Served = (
    ttrpc::Server,
    PathBuf,
    std::sync::mpsc::Receiver<Option<std::os::fd::OwnedFd>>,
);

fn serve_setup(args: &Args) -> Result<Served, String> {
    sys::setsid().map_err(|e| format!("setsid: {e}"))?;
    sys::set_child_subreaper().map_err(|e| format!("subreaper: {e}"))?;
    sys::limit_malloc_arenas();
    reaper::start().map_err(|e| format!("reaper thread: {e}"))?;
    let socket = args.socket();
    let runtime = args.runtime();
    let cfg = Config {
        id: args.id.clone(),
        bundle: args.bundle(),
        runtime,
        log_path: args.log_path.clone(),
        exit_file: args.exit_file(),
        socket: socket.clone(),
        publisher: crate::publisher::Publisher::new(
            std::env::var("TTRPC_ADDRESS").ok(),
            &args.namespace,
        ),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let shim = Shim::new(cfg, tx);
    let task: Arc<dyn containerd_shim_protos::Task + Send + Sync> =
        Arc::new(TaskService(Arc::clone(&shim)));
    let mut methods = containerd_shim_protos::create_task(Arc::clone(&task));
    // containerd 1.6/1.7 call the same messages under the v2 service name.
    let v2: Vec<_> = containerd_shim_protos::create_task(task)
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
                v,
            )
        })
        .collect();
    methods.extend(v2);
    let crius = crate::proto::shim_ttrpc::create_crius(Arc::new(CriusService(shim)));
    let _ = std::fs::remove_file(&socket);
    let mut server = ttrpc::Server::new()
        .bind(&format!("unix://{}", socket.display()))
        .map_err(|e| format!("binding {}: {e}", socket.display()))?
        .register_service(methods)
        .register_service(crius)
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(4);
    server.start().map_err(|e| format!("starting ttrpc: {e}"))?;
    Ok((server, socket, rx))
}

/// containerd's cleanup call for a shim that died: remove the container, report it.
fn delete(args: &Args) -> Result<(), String> {
    reaper::start().map_err(|e| format!("reaper thread: {e}"))?;
    let runtime = args.runtime();
    let _ = runtime.delete(&args.id);
    let _ = std::fs::remove_file(args.socket());
    let mut resp = DeleteResponse::new();
    match exitfile::read(&args.exit_file()) {
        Ok(Some(rec)) => {
            resp.pid = rec.pid;
            resp.exit_status = rec.exit_code;
            resp.exited_at = crate::publisher::timestamp(rec.exited_at_time());
        }
        _ => {
            resp.exit_status = 128 + 9;
            resp.exited_at = crate::publisher::timestamp(std::time::SystemTime::now());
        }
    }
    let bytes = resp.write_to_bytes().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    out.write_all(&bytes).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_containerd_style() {
        let a = parse(
            [
                "-namespace",
                "ns",
                "-address",
                "/a.sock",
                "-publish-binary",
                "/c",
                "-id",
                "x",
                "start",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
        )
        .unwrap();
        assert_eq!(a.action.as_deref(), Some("start"));
        assert_eq!(a.id, "x");
        assert_eq!(a.namespace, "ns");
        let b = parse(
            ["--id=y", "--socket", "/s", "--debug"]
                .iter()
                .map(OsString::from)
                .collect(),
        )
        .unwrap();
        assert_eq!(b.id, "y");
        assert_eq!(b.socket, Some(PathBuf::from("/s")));
        assert!(parse(vec![OsString::from("-bogus"), OsString::from("1")]).is_err());
    }

    #[test]
    fn server_flags_round_trip() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let a = parse(argv(&[
            "-namespace",
            "ns",
            "-id",
            "x",
            "-bundle",
            "/b",
            "-runtime-root",
            "/rr",
            "-log-path",
            "/l",
            "start",
        ]))
        .unwrap();
        let args = a.server_args(Path::new("/s"));
        assert_eq!(
            args,
            argv(&[
                "-id",
                "x",
                "-bundle",
                "/b",
                "-socket",
                "/s",
                "-namespace",
                "ns",
                "-runtime-root",
                "/rr",
                "-log-path",
                "/l",
            ])
        );
        let b = parse(args).unwrap();
        assert_eq!(b.action, None, "the server itself");
        assert_eq!((b.id.as_str(), b.namespace.as_str()), ("x", "ns"));
        assert_eq!(b.address, "");
        assert_eq!(b.socket.as_deref(), Some(Path::new("/s")));
        assert_eq!(b.runtime, None);
        assert_eq!(b.runtime_root.as_deref(), Some(Path::new("/rr")));
        assert_eq!(b.log_path.as_deref(), Some(Path::new("/l")));
        assert_eq!((b.exit_file, b.shim_log), (None, None));
    }
}
