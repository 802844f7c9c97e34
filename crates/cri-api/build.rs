//! Generates the CRI messages, clients and servers from proto/cri with protox,
//! a protobuf compiler written in Rust, so no system protoc is needed.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from("../../proto/cri");
    let input = root.join("runtime/v1/api.proto");
    println!("cargo:rerun-if-changed={}", input.display());
    let fds = match protox::compile([&input], [&root]) {
        Ok(fds) => fds,
        Err(e) => panic!("compiling {}: {e}", input.display()),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // crius-store keeps pod and container configs as JSON: every type is serde,
        // a field missing from an older record takes its default, and env values
        // (bytes on the wire) stay strings in the JSON.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::text_or_bytes\")]",
        )
        .compile_fds(fds)
    {
        panic!("generating tonic code for {}: {e}", input.display());
    }
}
