//! criusd: the crius CRI v1 server. The command line is `crius_cri_server::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    crius_cri_server::cli::main()
}
