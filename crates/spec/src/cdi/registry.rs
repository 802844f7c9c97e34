//! The devices the spec directories define: one scan of every spec file, the priority
//! and conflict rules, the errors of the files that failed, and the resolution of a
//! container's requests into the edits to apply.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CdiEdits, CdiError, DeviceNode, QualifiedName, ValidSpec};

/// A device a container asks for, and the request field that asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub field: String,
}

/// A spec file that failed to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenFile {
    pub path: PathBuf,
    /// Its `kind`, when the file could be read that far.
    pub kind: Option<String>,
    pub error: String,
}

/// A loaded spec file.
#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    priority: usize,
    spec: ValidSpec,
}

/// A device of the registry: its file and index there.
#[derive(Debug, Clone)]
struct Entry {
    file: Arc<Loaded>,
    index: usize,
}

/// A device the registry knows (for `crictl info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KnownDevice {
    pub name: String,
    #[serde(rename = "specFile")]
    pub spec_file: PathBuf,
}

/// What one scan of the spec directories found.
#[derive(Debug, Default)]
pub struct Registry {
    dirs: Vec<PathBuf>,
    devices: BTreeMap<String, Entry>,
    /// Devices defined more than once at their highest priority, with the files.
    ambiguous: BTreeMap<String, Vec<PathBuf>>,
    broken: Vec<BrokenFile>,
}

/// The spec files of `dirs`, in priority order (lowest first; by name within a
/// directory). A missing directory has none.
pub fn spec_files(dirs: &[PathBuf]) -> Vec<(usize, PathBuf)> {
    let mut out = Vec::new();
    for (priority, dir) in dirs.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json") | Some("yaml")
                ) && !p.is_dir()
            })
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|p| (priority, p)));
    }
    out
}

/// A cheap summary of the spec directories' contents: each spec file's path, inode,
/// size and modification time (nanoseconds). Equal stamps mean nothing to re-read,
/// once the stamp is [settled](Stamp::settled).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp(Vec<(PathBuf, u64, u64, i64, i64)>);

/// How old every file's modification time must be for a stamp to be trusted.
const SETTLE_SECS: i64 = 2;

impl Stamp {
    /// Whether every file was last modified more than [`SETTLE_SECS`] ago. A file's
    /// time has the file system's granularity (often a clock tick), so a file
    /// rewritten in place with the same size within that tick keeps its stamp: a
    /// stamp with a recent file is not kept, and the files are read again at the
    /// next call, until they are older.
    pub fn settled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.0.iter().all(|f| f.3 >= 0 && now - f.3 > SETTLE_SECS)
    }

    pub fn of(dirs: &[PathBuf]) -> Stamp {
        Stamp(
            spec_files(dirs)
                .into_iter()
                .map(|(_, p)| {
                    let m = std::fs::metadata(&p).ok();
                    let f = |g: fn(&std::fs::Metadata) -> i64| m.as_ref().map_or(-1, g);
                    let (ino, size) = m.as_ref().map_or((0, 0), |m| (m.ino(), m.size()));
                    (p, ino, size, f(|m| m.mtime()), f(|m| m.mtime_nsec()))
                })
                .collect(),
        )
    }
}

/// Reads a spec file and its `kind` even when it does not validate.
fn load(path: &Path) -> Result<ValidSpec, (Option<String>, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| (None, e.to_string()))?;
    let yaml = path.extension().is_some_and(|e| e == "yaml");
    super::parse_spec(&text, yaml).map_err(|error| {
        let loose: Option<serde_json::Value> = if yaml {
            serde_saphyr::from_str(&text).ok()
        } else {
            serde_json::from_str(&text).ok()
        };
        let kind = loose
            .as_ref()
            .and_then(|v| v.get("kind"))
            .and_then(|k| k.as_str())
            .map(str::to_string);
        (kind, error)
    })
}

impl Registry {
    /// Reads every spec file of `dirs` (blocking).
    pub fn scan(dirs: &[PathBuf]) -> Registry {
        let mut reg = Registry {
            dirs: dirs.to_vec(),
            ..Registry::default()
        };
        // Every definition of each device, in priority order.
        let mut defs: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (priority, path) in spec_files(dirs) {
            match load(&path) {
                Ok(spec) => {
                    let file = Arc::new(Loaded {
                        path,
                        priority,
                        spec,
                    });
                    for (index, d) in file.spec.file.devices.iter().enumerate() {
                        let name = format!("{}/{}={}", file.spec.vendor, file.spec.class, d.name);
                        defs.entry(name).or_default().push(Entry {
                            file: file.clone(),
                            index,
                        });
                    }
                }
                Err((kind, error)) => reg.broken.push(BrokenFile { path, kind, error }),
            }
        }
        for (name, entries) in defs {
            let top = entries.iter().map(|e| e.file.priority).max().unwrap_or(0);
            let mut at_top: Vec<Entry> = entries
                .into_iter()
                .filter(|e| e.file.priority == top)
                .collect();
            if at_top.len() == 1 {
                if let Some(e) = at_top.pop() {
                    reg.devices.insert(name, e);
                }
            } else {
                let paths = at_top.iter().map(|e| e.file.path.clone()).collect();
                reg.ambiguous.insert(name, paths);
            }
        }
        reg
    }

    /// The devices it knows, by name.
    pub fn devices(&self) -> Vec<KnownDevice> {
        self.devices
            .iter()
            .map(|(name, e)| KnownDevice {
                name: name.clone(),
                spec_file: e.file.path.clone(),
            })
            .collect()
    }

    /// Devices that are defined twice at their highest priority, with the files.
    pub fn ambiguous(&self) -> &BTreeMap<String, Vec<PathBuf>> {
        &self.ambiguous
    }

    /// The spec files that failed to load.
    pub fn broken(&self) -> &[BrokenFile] {
        &self.broken
    }

    /// The edits of the requested devices, each device once (the first request
    /// names it), every host device node's missing facts read from the host
    /// (blocking).
    pub fn resolve(&self, requests: &[Request]) -> Result<CdiEdits, CdiError> {
        let mut out = CdiEdits::default();
        let mut files_done: Vec<&Path> = Vec::new();
        for req in requests {
            let qualified: QualifiedName =
                req.name.parse().map_err(|reason| CdiError::InvalidName {
                    field: req.field.clone(),
                    name: req.name.clone(),
                    reason,
                })?;
            let name = qualified.to_string();
            if out.devices.contains(&name) {
                continue;
            }
            let entry = self.find(&qualified, req)?;
            let file = &entry.file;
            let device = &file.spec.file.devices[entry.index];
            let mut found = Vec::new();
            if !files_done.contains(&file.path.as_path()) {
                files_done.push(&file.path);
                if !file.spec.file.container_edits.is_empty() {
                    found.push(file.spec.file.container_edits.clone());
                }
            }
            found.push(device.container_edits.clone());
            for mut edits in found {
                let fail = |message: String| CdiError::HostDevice {
                    field: req.field.clone(),
                    name: name.clone(),
                    path: file.path.clone(),
                    message,
                };
                if !edits.net_devices.is_empty() {
                    return Err(CdiError::Unsupported {
                        field: req.field.clone(),
                        name: name.clone(),
                        path: file.path.clone(),
                        message: "netDevices are not supported by crius (its runtimes do not move host interfaces into containers)".into(),
                    });
                }
                for node in &mut edits.device_nodes {
                    fill_from_host(node).map_err(&fail)?;
                }
                out.edits.push(edits);
            }
            out.devices.push(name);
        }
        Ok(out)
    }

    fn find(&self, q: &QualifiedName, req: &Request) -> Result<&Entry, CdiError> {
        let name = q.to_string();
        if let Some(e) = self.devices.get(&name) {
            return Ok(e);
        }
        if let Some(paths) = self.ambiguous.get(&name) {
            return Err(CdiError::Ambiguous {
                field: req.field.clone(),
                name,
                paths: paths.clone(),
            });
        }
        let kind = q.kind();
        if let Some(b) = self
            .broken
            .iter()
            .rev()
            .find(|b| b.kind.as_deref() == Some(kind.as_str()))
        {
            return Err(CdiError::BrokenFile {
                field: req.field.clone(),
                name,
                kind,
                path: b.path.clone(),
                error: b.error.clone(),
            });
        }
        let unknown_kind: Vec<String> = self
            .broken
            .iter()
            .filter(|b| b.kind.is_none())
            .map(|b| format!("{}: {}", b.path.display(), b.error))
            .collect();
        Err(CdiError::Unknown {
            field: req.field.clone(),
            name,
            dirs: super::join_paths(&self.dirs),
            broken: if unknown_kind.is_empty() {
                String::new()
            } else {
                format!(
                    "; spec files that failed to load: {}",
                    unknown_kind.join("; ")
                )
            },
        })
    }
}

/// Completes a device node from the host node at `hostPath` (or `path`): its type,
/// major and minor when the spec leaves them out, and its file mode unless given. A
/// node the spec describes fully (type and major, or a FIFO) may be missing on the
/// host.
fn fill_from_host(node: &mut DeviceNode) -> Result<(), String> {
    if node.host_path.is_empty() {
        node.host_path = node.path.clone();
    }
    let complete = !node.typ.is_empty() && (node.major != 0 || node.typ == "p");
    let meta = match std::fs::metadata(&node.host_path) {
        Ok(m) => m,
        Err(_) if complete => return Ok(()),
        Err(e) => {
            return Err(format!(
                "host device node {:?} of {:?}: {e}",
                node.host_path, node.path
            ));
        }
    };
    if node.file_mode.is_none() {
        node.file_mode = Some(meta.mode() & 0o7777);
    }
    if complete {
        return Ok(());
    }
    let ft = meta.file_type();
    let host_type = if ft.is_block_device() {
        "b"
    } else if ft.is_char_device() {
        "c"
    } else if ft.is_fifo() {
        "p"
    } else {
        return Err(format!(
            "host path {:?} of {:?} is not a device node",
            node.host_path, node.path
        ));
    };
    if node.typ.is_empty() {
        node.typ = host_type.to_string();
    }
    let same = node.typ == host_type || (node.typ == "u" && host_type == "c");
    if !same {
        return Err(format!(
            "device node {:?} is of type {:?} but the host node {:?} is of type {host_type:?}",
            node.path, node.typ, node.host_path
        ));
    }
    if node.typ != "p" && node.major == 0 {
        let rdev = meta.rdev();
        node.major = i64::from(libc::major(rdev));
        node.minor = i64::from(libc::minor(rdev));
    }
    Ok(())
}
