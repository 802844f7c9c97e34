//! The resolved edits of a container's CDI devices, applied to its OCI spec.
//!
//! How each edit lands:
//! - `env`: `NAME=value` replaces the process's `NAME`, else is appended.
//! - `deviceNodes`: replace a `linux.devices` entry with the same path, else are
//!   appended; owner: as given, else the process's uid/gid when not root (so a
//!   non-root container can open its device); b, c and u nodes get an allow rule in
//!   `linux.resources.devices` with their permissions (`rwm` by default, none for
//!   `"none"`).
//! - `mounts`: replace a mount at the same destination, then all mounts are ordered
//!   shallow destinations first (a stable sort, so equal depths keep their order) so
//!   that no mount hides one made before it.
//! - `hooks`: appended to their list. `additionalGids`: added once each (0 ignored).
//! - `intelRdt`: set; a later device's replaces an earlier one's.

use oci_spec::runtime::{
    Hook, HookBuilder, Hooks, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxIntelRdt, LinuxResources, Mount, MountBuilder, Spec,
};

use super::ContainerEdits;
use crate::error::{Result, build};
use crate::mounts::clean;

/// The edits of a container's CDI devices, in the order they apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdiEdits {
    /// The devices, fully qualified, each once, in request order.
    pub devices: Vec<String>,
    /// Each file's spec-level edits before its first device's, then the device's.
    pub edits: Vec<ContainerEdits>,
}

fn device_type(t: &str) -> LinuxDeviceType {
    match t {
        "b" => LinuxDeviceType::B,
        "u" => LinuxDeviceType::U,
        "p" => LinuxDeviceType::P,
        _ => LinuxDeviceType::C,
    }
}

fn depth(path: &std::path::Path) -> usize {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
}

impl CdiEdits {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Applies every edit to `spec`.
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        for e in &self.edits {
            apply_one(spec, e)?;
        }
        Ok(())
    }
}

fn apply_one(spec: &mut Spec, e: &ContainerEdits) -> Result<()> {
    let (uid, gid) = spec
        .process()
        .as_ref()
        .map_or((0, 0), |p| (p.user().uid(), p.user().gid()));
    if let Some(process) = spec.process_mut().as_mut() {
        let env = process.env_mut().get_or_insert_with(Vec::new);
        for var in &e.env {
            let key = var.split('=').next().unwrap_or_default();
            let prefix = format!("{key}=");
            match env.iter_mut().find(|v| v.starts_with(&prefix)) {
                Some(v) => v.clone_from(var),
                None => env.push(var.clone()),
            }
        }
        let user = process.user_mut();
        let gids = user.additional_gids_mut().get_or_insert_with(Vec::new);
        for g in &e.additional_gids {
            if *g != 0 && !gids.contains(g) {
                gids.push(*g);
            }
        }
        if gids.is_empty() {
            user.set_additional_gids(None);
        }
    }

    if !e.device_nodes.is_empty() {
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        let mut rules = Vec::new();
        let mut added: Vec<LinuxDevice> = Vec::new();
        for n in &e.device_nodes {
            let typ = device_type(&n.typ);
            let mut b = LinuxDeviceBuilder::default()
                .path(n.path.as_str())
                .typ(typ)
                .major(n.major)
                .minor(n.minor);
            if let Some(mode) = n.file_mode {
                b = b.file_mode(mode);
            }
            match (n.uid, uid) {
                (Some(u), _) => b = b.uid(u),
                (None, u) if u > 0 => b = b.uid(u),
                _ => {}
            }
            match (n.gid, gid) {
                (Some(g), _) => b = b.gid(g),
                (None, g) if g > 0 => b = b.gid(g),
                _ => {}
            }
            added.push(b.build().map_err(build("CDI device nodes"))?);
            if matches!(
                typ,
                LinuxDeviceType::B | LinuxDeviceType::C | LinuxDeviceType::U
            ) {
                let access = match n.permissions.as_str() {
                    "" => "rwm",
                    "none" => "",
                    p => p,
                };
                let rule_type = if typ == LinuxDeviceType::B {
                    LinuxDeviceType::B
                } else {
                    LinuxDeviceType::C
                };
                rules.push(
                    LinuxDeviceCgroupBuilder::default()
                        .allow(true)
                        .typ(rule_type)
                        .major(n.major)
                        .minor(n.minor)
                        .access(access)
                        .build()
                        .map_err(build("CDI device rules"))?,
                );
            }
        }
        let devices = linux.devices_mut().get_or_insert_with(Vec::new);
        for d in added {
            devices.retain(|old| old.path() != d.path());
            devices.push(d);
        }
        if !rules.is_empty() {
            let resources = linux
                .resources_mut()
                .get_or_insert_with(LinuxResources::default);
            resources
                .devices_mut()
                .get_or_insert_with(Vec::new)
                .extend(rules);
        }
    }

    if !e.mounts.is_empty() {
        let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
        for m in &e.mounts {
            let dest = clean(&m.container_path);
            let mut b = MountBuilder::default()
                .destination(dest.as_str())
                .source(m.host_path.as_str());
            if !m.typ.is_empty() {
                b = b.typ(m.typ.as_str());
            }
            if !m.options.is_empty() {
                b = b.options(m.options.clone());
            }
            let mount: Mount = b.build().map_err(build("CDI mounts"))?;
            mounts.retain(|old| clean(&old.destination().to_string_lossy()) != dest);
            mounts.push(mount);
        }
        mounts.sort_by_key(|m| depth(m.destination()));
    }

    if !e.hooks.is_empty() {
        let hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
        for h in &e.hooks {
            let mut b = HookBuilder::default().path(h.path.as_str());
            if !h.args.is_empty() {
                b = b.args(h.args.clone());
            }
            if !h.env.is_empty() {
                b = b.env(h.env.clone());
            }
            if let Some(t) = h.timeout {
                b = b.timeout(t);
            }
            let hook: Hook = b.build().map_err(build("CDI hooks"))?;
            #[allow(deprecated)] // prestart: deprecated in the OCI spec, still run by runc and crun
            let list = match h.hook_name.as_str() {
                "prestart" => hooks.prestart_mut(),
                "createRuntime" => hooks.create_runtime_mut(),
                "createContainer" => hooks.create_container_mut(),
                "startContainer" => hooks.start_container_mut(),
                "poststart" => hooks.poststart_mut(),
                // The names were checked when the file was read.
                _ => hooks.poststop_mut(),
            };
            list.get_or_insert_with(Vec::new).push(hook);
        }
    }

    if let Some(rdt) = &e.intel_rdt {
        let mut r = LinuxIntelRdt::default();
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        r.set_clos_id(some(&rdt.clos_id));
        r.set_l3_cache_schema(some(&rdt.l3_cache_schema));
        r.set_mem_bw_schema(some(&rdt.mem_bw_schema));
        r.set_schemata(rdt.schemata.clone());
        r.set_enable_monitoring(rdt.enable_monitoring.then_some(true));
        spec.linux_mut()
            .get_or_insert_with(Default::default)
            .set_intel_rdt(Some(r));
    }
    Ok(())
}
