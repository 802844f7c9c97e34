//! criusd with its failure points compiled in (the `failpoints` feature), for the
//! failpoint walk test; never deployed. See `crius_failpoints`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    crius_cri_server::cli::main()
}
