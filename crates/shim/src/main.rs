//! crius-shim: one process per container that drives runc or crun and holds the
//! container's stdio (see DESIGN.md, "Processes").
//!
//! The Task service lands with the containers work (issue 4). Until then the binary
//! only reports its version, and refuses every other invocation loudly so nothing
//! mistakes it for a working shim.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-v") => {
            println!("crius-shim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("crius-shim: the shim v2 Task service is not built yet");
            ExitCode::from(2)
        }
    }
}
