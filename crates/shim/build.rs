//! Generates the ttrpc bindings for crius's own shim service (proto/crius/shim/v1).

use std::{env, fs, path::PathBuf};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let proto_root = PathBuf::from("../../proto");
    let input = proto_root.join("crius/shim/v1/shim.proto");
    println!("cargo:rerun-if-changed={}", input.display());
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        panic!("OUT_DIR is not set");
    };
    let out = PathBuf::from(out_dir).join("crius");
    if let Err(e) = fs::create_dir_all(&out) {
        panic!("creating {}: {e}", out.display());
    }
    if let Err(e) = Codegen::new()
        .inputs([&input])
        .include(&proto_root)
        .rust_protobuf()
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .customize(Customize::default())
        .out_dir(&out)
        .run()
    {
        panic!("generating ttrpc code for {}: {e}", input.display());
    }
    // `include!` cannot take inner attributes or inner doc comments: drop them.
    for name in ["shim.rs", "shim_ttrpc.rs"] {
        let path = out.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => panic!("reading {}: {e}", path.display()),
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#!") && !l.starts_with("//!"))
            .collect();
        if let Err(e) = fs::write(&path, kept.join("\n")) {
            panic!("writing {}: {e}", path.display());
        }
    }
}
