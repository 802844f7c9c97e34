//! The files every pod gets in its directory, later bind-mounted into its
//! containers: `hostname`, `hosts` and `resolv.conf`. Written atomically (temporary
//! file, then rename), so a crash never leaves a torn file.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crius_cri_api::v1::DnsConfig;

/// The host's resolver configuration, copied when the pod gives none.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host's hosts file, copied for host-network pods.
const HOST_HOSTS: &str = "/etc/hosts";

/// resolv.conf text from the pod's DNS config, or `None` when it asks for nothing.
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Option<String> {
    let dns = dns?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(out)
}

/// /etc/hosts for a pod in its own network namespace.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// Writes `contents` to `path` atomically with mode 0644.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile_in(dir, path)?;
    let result = (|| {
        tmp.1.write_all(contents)?;
        tmp.1.sync_all()?;
        fs::rename(&tmp.0, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp.0);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn tempfile_in(dir: &Path, target: &Path) -> io::Result<(std::path::PathBuf, fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    Ok((tmp, file))
}

/// What to write for one pod.
#[derive(Debug)]
pub struct PodFiles<'a> {
    pub hostname: &'a str,
    pub dns: Option<&'a DnsConfig>,
    pub host_network: bool,
    pub ips: &'a [String],
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `dir`.
pub fn write_all(dir: &Path, files: &PodFiles<'_>) -> io::Result<()> {
    write_atomic(
        &dir.join("hostname"),
        format!("{}\n", files.hostname).as_bytes(),
    )?;
    let hosts_text = if files.host_network {
        fs::read_to_string(HOST_HOSTS).unwrap_or_else(|_| hosts(files.hostname, &[]))
    } else {
        hosts(files.hostname, files.ips)
    };
    write_atomic(&dir.join("hosts"), hosts_text.as_bytes())?;
    let resolv = match resolv_conf(files.dns) {
        Some(text) => text,
        None => match fs::read_to_string(HOST_RESOLV_CONF) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {HOST_RESOLV_CONF}: {e}"),
                ));
            }
        },
    };
    write_atomic(&dir.join("resolv.conf"), resolv.as_bytes())
}

/// Hands the three files in `dir` to `uid`:`gid` (the host ids of a pod's root when
/// the pod has its own user namespace). A missing file is skipped.
pub fn chown_all(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for f in ["hostname", "hosts", "resolv.conf"] {
        let path = dir.join(f);
        match std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("chown {}: {e}", path.display()),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether all three files are present in `dir`.
pub fn all_present(dir: &Path) -> bool {
    ["hostname", "hosts", "resolv.conf"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5 edns0\n"
        );
        assert_eq!(resolv_conf(Some(&DnsConfig::default())), None);
        assert_eq!(resolv_conf(None), None);
    }

    #[test]
    fn hosts_names_the_pod() {
        let text = hosts("web-0", &["10.88.0.5".to_string()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.88.0.5\tweb-0\n"));
    }

    #[test]
    fn writes_all_three_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsConfig {
            servers: vec!["1.2.3.4".into()],
            ..Default::default()
        };
        write_all(
            dir.path(),
            &PodFiles {
                hostname: "h",
                dns: Some(&dns),
                host_network: false,
                ips: &[],
            },
        )
        .unwrap();
        assert!(all_present(dir.path()));
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 1.2.3.4\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "h\n"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
