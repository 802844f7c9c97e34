//! The seed corpus: each target's real-shaped inputs, made by the generators next
//! to the targets (tars from GNU tar, frames from the protocol encoders, requests
//! encoded as the kubelet sends them, documents as registries serve them), written
//! to `fuzz/corpus/<target>/` by `cargo test -p crius-fuzz --test fuzz --
//! --ignored write_seed_corpus`. Regression inputs sit in the same directories
//! (named `regression-*`) and are never rewritten.

use std::path::Path;

use super::{
    challenge, cni_result, config, cri_calls, cri_requests, layer, manifest, reference,
    spdy_frames, spdy_session, websocket,
};

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Every target's seeds.
pub fn all() -> Vec<(&'static str, Seeds)> {
    vec![
        ("layer", layer::seeds()),
        ("reference", reference::seeds()),
        ("manifest", manifest::seeds()),
        ("challenge", challenge::seeds()),
        ("pod_sandbox", cri_requests::pod_seeds()),
        ("create_container", cri_requests::container_seeds()),
        ("cri_calls", cri_calls::seeds()),
        ("spdy_frames", spdy_frames::seeds()),
        ("spdy_session", spdy_session::seeds()),
        ("websocket", websocket::seeds()),
        ("cni_result", cni_result::seeds()),
        ("config", config::seeds()),
    ]
}

/// Writes the seeds under `root/<target>/seed-<name>`, replacing earlier seeds.
pub fn write(root: &Path) -> std::io::Result<()> {
    for (target, seeds) in all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(e.path())?;
            }
        }
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data)?;
        }
    }
    Ok(())
}
