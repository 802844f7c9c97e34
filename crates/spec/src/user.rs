//! process.user: the security context's user and group, else the image's USER, looked
//! up in the container's /etc/passwd and /etc/group. Those files are read inside the
//! rootfs as if it were `/`: `..` stops at the rootfs and symlinks (absolute or
//! relative) are resolved against it, never against the host.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crius_cri_api::v1 as cri;
use oci_spec::runtime::{User, UserBuilder};

use crate::error::{Result, build, invalid, io};
use crate::{ImageConfig, SC};

/// Largest /etc/passwd or /etc/group read from a rootfs.
const MAX_ID_FILE: u64 = 4 << 20;
/// Symlinks followed while resolving a path inside the rootfs.
const MAX_SYMLINKS: usize = 40;

/// The resolved process user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The primary group first, then the supplementary ones, without duplicates.
    pub(crate) additional_gids: Vec<u32>,
    /// The user's home directory ("/" when unknown).
    pub(crate) home: String,
}

impl ResolvedUser {
    /// process.user.
    pub(crate) fn oci(&self) -> Result<User> {
        UserBuilder::default()
            .uid(self.uid)
            .gid(self.gid)
            .additional_gids(self.additional_gids.clone())
            .build()
            .map_err(build("user"))
    }
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The colon-separated fields of each line of an `/etc/passwd`-style file that is not a
/// comment and has at least `min_fields` of them.
fn records(text: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(move |f| f.len() >= min_fields)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text, 4)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text, 3)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `rel` inside `root` as if `root` were `/`: `..` stops at the root and
/// symlinks (absolute or relative) are resolved against the root, never the host.
fn resolve_in_root(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    let push_front = |pending: &mut Vec<OsString>, p: &Path| {
        let mut comps: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        comps.reverse();
        pending.extend(comps);
    };
    push_front(&mut pending, rel);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(std::io::Error::other("too many symlinks"));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_front(&mut pending, &target);
            }
            Ok(_) => resolved.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => resolved.push(c),
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Reads a file of the rootfs (`None` when absent), never following a symlink out of it.
fn read_rootfs_file(root: &Path, rel: &str) -> Result<Option<String>> {
    let path = resolve_in_root(root, Path::new(rel))
        .map_err(io(format!("resolving {rel} in the rootfs")))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("opening {rel} in the rootfs"))(e)),
    };
    let mut text = String::new();
    file.take(MAX_ID_FILE)
        .read_to_string(&mut text)
        .map_err(io(format!("reading {rel} in the rootfs")))?;
    Ok(Some(text))
}

enum Id {
    Num(u32),
    Name(String),
}

fn parse_id(s: &str) -> Id {
    match s.parse::<u32>() {
        Ok(n) => Id::Num(n),
        Err(_) => Id::Name(s.to_string()),
    }
}

fn id_from_i64(field: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(field, format!("{v} is not a valid id")))
}

/// Who the process runs as, before the lookup: (user, its field, group, its field).
type Wanted = (Id, String, Option<Id>, String);

fn wanted(sc: &cri::LinuxContainerSecurityContext, image: &ImageConfig) -> Result<Wanted> {
    let group_field = format!("{SC}.run_as_group");
    let group = || -> Result<Option<Id>> {
        sc.run_as_group
            .as_ref()
            .map(|g| id_from_i64(&group_field, g.value).map(Id::Num))
            .transpose()
    };
    if !sc.run_as_username.is_empty() {
        return Ok((
            parse_id(&sc.run_as_username),
            format!("{SC}.run_as_username"),
            group()?,
            group_field.clone(),
        ));
    }
    if let Some(u) = &sc.run_as_user {
        let field = format!("{SC}.run_as_user");
        let uid = id_from_i64(&field, u.value)?;
        return Ok((Id::Num(uid), field, group()?, group_field.clone()));
    }
    if sc.run_as_group.is_some() {
        return Err(invalid(
            group_field,
            "a group is given without a user (run_as_user or run_as_username)",
        ));
    }
    let (u, g) = match image.user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image.user.as_str(), None),
    };
    let u = if u.is_empty() { "0" } else { u };
    Ok((
        parse_id(u),
        "config.image (the image's USER)".to_string(),
        g.filter(|g| !g.is_empty()).map(parse_id),
        "config.image (the image's USER group)".to_string(),
    ))
}

/// The process user from the security context, else the image's USER.
pub(crate) fn resolve_user(
    rootfs: &Path,
    sc: &cri::LinuxContainerSecurityContext,
    image: &ImageConfig,
) -> Result<ResolvedUser> {
    let (user, user_field, group, group_field) = wanted(sc, image)?;
    let passwd = read_rootfs_file(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let (uid, mut gid, name, home) = match user {
        Id::Num(uid) => match passwd.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone()), e.home.clone()),
            None => (uid, 0, None, String::new()),
        },
        Id::Name(n) => match passwd.iter().find(|e| e.name == n) {
            Some(e) => (e.uid, e.gid, Some(n), e.home.clone()),
            None => {
                return Err(invalid(
                    user_field,
                    format!("user {n:?} is not in the container's /etc/passwd"),
                ));
            }
        },
    };
    let groups = read_rootfs_file(rootfs, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    match group {
        Some(Id::Num(g)) => gid = g,
        Some(Id::Name(g)) => match groups.iter().find(|e| e.name == g) {
            Some(e) => gid = e.gid,
            None => {
                return Err(invalid(
                    group_field,
                    format!("group {g:?} is not in the container's /etc/group"),
                ));
            }
        },
        None => {}
    }
    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    if !strict {
        if let Some(name) = &name {
            for g in &groups {
                if g.name != *name && g.members.iter().any(|m| m == name) {
                    additional.push(g.gid);
                }
            }
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        additional.push(id_from_i64(&format!("{SC}.supplemental_groups[{i}]"), *g)?);
    }
    let mut seen = BTreeSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SpecError;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nvideo:x:44:app\n\
        audio:x:29:other\nnogroup:x:65534:\n";

    struct Root {
        dir: tempfile::TempDir,
    }

    impl Root {
        fn new() -> Root {
            let dir = tempfile::tempdir().unwrap();
            let etc = dir.path().join("rootfs/etc");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("passwd"), PASSWD).unwrap();
            std::fs::write(etc.join("group"), GROUP).unwrap();
            Root { dir }
        }

        fn rootfs(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }

        fn resolve(
            &self,
            sc: &cri::LinuxContainerSecurityContext,
            image_user: &str,
        ) -> Result<ResolvedUser> {
            let image = ImageConfig {
                user: image_user.into(),
                ..Default::default()
            };
            resolve_user(&self.rootfs(), sc, &image)
        }
    }

    fn ids(u: &ResolvedUser) -> (u32, u32, Vec<u32>) {
        (u.uid, u.gid, u.additional_gids.clone())
    }

    fn field(r: Result<ResolvedUser>) -> String {
        r.unwrap_err().field().unwrap_or_default().to_string()
    }

    #[test]
    fn user_from_the_security_context() {
        let r = Root::new();
        let mut sc = cri::LinuxContainerSecurityContext::default();
        let u = r.resolve(&sc, "").unwrap();
        assert_eq!((ids(&u), u.home.as_str()), ((0, 0, vec![0]), "/root"));
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        let u = r.resolve(&sc, "").unwrap();
        assert_eq!(ids(&u), (1000, 1000, vec![1000, 10, 44]));
        assert_eq!(u.home, "/home/app");
        sc.run_as_group = Some(cri::Int64Value { value: 44 });
        assert_eq!(ids(&r.resolve(&sc, "").unwrap()), (1000, 44, vec![44, 10]));
        // A uid with no passwd entry: gid 0, HOME /.
        sc.run_as_group = None;
        sc.run_as_user = Some(cri::Int64Value { value: 4321 });
        let u = r.resolve(&sc, "").unwrap();
        assert_eq!((ids(&u), u.home.as_str()), ((4321, 0, vec![0]), "/"));
        sc.run_as_user = None;
        sc.run_as_username = "app".into();
        let u = r.resolve(&sc, "").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        sc.run_as_username = "ghost".into();
        assert_eq!(field(r.resolve(&sc, "")), format!("{SC}.run_as_username"));
        sc.run_as_username.clear();
        sc.run_as_group = Some(cri::Int64Value { value: 5 });
        assert_eq!(field(r.resolve(&sc, "")), format!("{SC}.run_as_group"));
        sc.run_as_user = Some(cri::Int64Value { value: -1 });
        assert_eq!(field(r.resolve(&sc, "")), format!("{SC}.run_as_user"));
    }

    #[test]
    fn user_from_the_image() {
        let r = Root::new();
        let mut sc = cri::LinuxContainerSecurityContext::default();
        for (u, want) in [
            ("1000", (1000, 1000)),
            ("1000:44", (1000, 44)),
            ("app", (1000, 1000)),
            ("app:video", (1000, 44)),
            ("nobody:29", (65534, 29)),
            ("5000:6000", (5000, 6000)),
            (":44", (0, 44)),
        ] {
            let got = r.resolve(&sc, u).unwrap();
            assert_eq!((got.uid, got.gid), want, "USER {u}");
        }
        assert_eq!(
            field(r.resolve(&sc, "ghost")),
            "config.image (the image's USER)"
        );
        let e = r.resolve(&sc, "app:ghosts").unwrap_err();
        assert!(e.to_string().contains("ghosts"), "{e}");
        // The security context wins over the image.
        sc.run_as_user = Some(cri::Int64Value { value: 0 });
        assert_eq!(r.resolve(&sc, "app").unwrap().uid, 0);
    }

    #[test]
    fn passwd_symlink_out_of_the_rootfs_is_not_followed() {
        let r = Root::new();
        let outside = r.dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "evil:x:4242:4242::/evil:/bin/sh\n").unwrap();
        let passwd = r.rootfs().join("etc/passwd");
        let sc = cri::LinuxContainerSecurityContext::default();
        std::fs::remove_file(&passwd).unwrap();
        symlink(outside.join("passwd"), &passwd).unwrap();
        let e = r.resolve(&sc, "evil").unwrap_err();
        assert!(e.to_string().contains("not in the container's /etc/passwd"));
        // A relative escape is clamped at the rootfs too.
        std::fs::remove_file(&passwd).unwrap();
        symlink("../../../../../../outside/passwd", &passwd).unwrap();
        let e = r.resolve(&sc, "evil").unwrap_err();
        assert!(e.to_string().contains("not in the container's /etc/passwd"));
        // A symlink inside the rootfs is followed (resolved against the rootfs).
        std::fs::remove_file(&passwd).unwrap();
        std::fs::create_dir_all(r.rootfs().join("lib")).unwrap();
        std::fs::write(r.rootfs().join("lib/passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        symlink("/lib/passwd", &passwd).unwrap();
        assert_eq!(r.resolve(&sc, "evil").unwrap().uid, 7);
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let r = Root::new();
        let mut sc = cri::LinuxContainerSecurityContext {
            supplemental_groups: vec![5000, 10],
            ..Default::default()
        };
        assert_eq!(
            r.resolve(&sc, "app").unwrap().additional_gids,
            vec![1000, 10, 44, 5000]
        );
        sc.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            r.resolve(&sc, "app").unwrap().additional_gids,
            vec![1000, 5000, 10]
        );
        sc.supplemental_groups = vec![-3];
        assert_eq!(
            field(r.resolve(&sc, "app")),
            format!("{SC}.supplemental_groups[0]")
        );
    }

    #[test]
    fn id_files_tolerate_garbage_and_symlink_loops() {
        let p = parse_passwd("bad\n:x:y:z\nok:x:5:6:g:/h:/bin/sh\nshort:x:7:8\n");
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].uid, p[0].gid, p[0].home.as_str()), (5, 6, "/h"));
        assert_eq!((p[1].uid, p[1].home.as_str()), (7, ""));
        let g = parse_group("g:x:9:a, b,,c\nbad\nh:x:10\n");
        assert_eq!(g[0].members, vec!["a", "b", "c"]);
        assert!(g[1].members.is_empty());

        let r = Root::new();
        let passwd = r.rootfs().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        symlink("/etc/passwd", &passwd).unwrap();
        let e = r
            .resolve(&cri::LinuxContainerSecurityContext::default(), "app")
            .unwrap_err();
        assert!(matches!(e, SpecError::Io { .. }), "{e}");
        assert_eq!(e.to_string(), "resolving etc/passwd in the rootfs");
    }

    #[test]
    fn missing_id_files_mean_root_and_numeric_ids() {
        let r = Root::new();
        std::fs::remove_file(r.rootfs().join("etc/passwd")).unwrap();
        std::fs::remove_file(r.rootfs().join("etc/group")).unwrap();
        let sc = cri::LinuxContainerSecurityContext::default();
        let u = r.resolve(&sc, "").unwrap();
        assert_eq!((ids(&u), u.home.as_str()), ((0, 0, vec![0]), "/"));
        assert_eq!(ids(&r.resolve(&sc, "7:8").unwrap()), (7, 8, vec![8]));
        let user = u.oci().unwrap();
        assert_eq!(
            serde_json::to_value(&user).unwrap(),
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [0]})
        );
    }
}
