//! Generates the NRI messages (proto/nri/api.proto) with protox, a protobuf compiler
//! written in Rust, so no system protoc is needed. Only the messages: crius carries
//! them over its own ttrpc framing (src/nri/ttrpc.rs).

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from("../../proto/nri");
    let input = root.join("api.proto");
    println!("cargo:rerun-if-changed={}", input.display());
    let fds = match protox::compile([&input], [&root]) {
        Ok(fds) => fds,
        Err(e) => panic!("compiling {}: {e}", input.display()),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)
    {
        panic!("generating the NRI messages from {}: {e}", input.display());
    }
}
