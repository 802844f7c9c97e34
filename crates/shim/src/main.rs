//! crius-shim: one process per container that drives runc or crun and holds the
//! container's stdio (see docs/architecture.md, "Processes", and the crate docs).

fn main() -> std::process::ExitCode {
    crius_shim::shim_main()
}
