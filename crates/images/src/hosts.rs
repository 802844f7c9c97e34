//! Where a registry's images are fetched from: the endpoints of one pull, in the
//! order they are tried.
//!
//! Two sources, as a node moving from containerd expects:
//! - `[images.mirrors]` of criusd's own config: hosts tried before the upstream;
//! - containerd's registry host directories (`images.config_path`, containerd's
//!   `config_path`): `<dir>/<registry host>/hosts.toml`, or `<dir>/_default/` for a
//!   registry without its own, with `server` (the endpoint tried last, by default
//!   the registry itself), `[host."<url>"]` tables tried first in file order, and
//!   per endpoint `capabilities`, `ca` and `skip_verify`. A directory without
//!   hosts.toml is read the docker way: its `*.crt` files are CAs for the registry.
//!
//! The files are read at each pull, so an edit applies without a restart. What
//! crius's registry client cannot do (client certificates, extra headers, another
//! API path) fails the pull with the file and the key named, rather than pulling
//! without it. With `images.mirror_only`, the registry itself is never contacted.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ImagesConfig;
use crate::error::ImageError;
use crate::reference::is_loopback_host;

/// One place a pull may fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]` as contacted.
    pub(crate) host: String,
    /// Plain HTTP instead of TLS.
    pub(crate) plain_http: bool,
    /// May resolve tags (hosts without it serve pulls by digest only).
    pub(crate) resolve: bool,
    /// Extra CA certificates (PEM) trusted for this endpoint.
    pub(crate) ca_pem: Vec<Vec<u8>>,
    /// TLS certificates are not verified.
    pub(crate) skip_verify: bool,
}

/// Docker Hub's API host, the upstream of `docker.io` images.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// Whether `host` is the registry's own (a request there leaves for the upstream).
fn is_upstream(host: &str, registry: &str) -> bool {
    host == registry || (registry == "docker.io" && matches!(host, DOCKER_HUB | "index.docker.io"))
}

/// The endpoints of a pull from `registry`, in order; `by_digest` keeps the hosts
/// that may not resolve tags.
pub(crate) fn endpoints(
    cfg: &ImagesConfig,
    registry: &str,
    by_digest: bool,
) -> Result<Vec<Endpoint>, ImageError> {
    let plain =
        |host: &str| is_loopback_host(host) || cfg.insecure_registries.iter().any(|h| h == host);
    let mut out: Vec<Endpoint> = cfg
        .mirrors
        .get(registry)
        .into_iter()
        .flatten()
        .map(|host| Endpoint {
            host: host.clone(),
            plain_http: plain(host),
            resolve: true,
            ca_pem: Vec::new(),
            skip_verify: false,
        })
        .collect();
    let upstream = Endpoint {
        host: registry.to_string(),
        plain_http: plain(registry),
        resolve: true,
        ca_pem: Vec::new(),
        skip_verify: false,
    };
    match host_dir(&cfg.config_path, registry) {
        Some(dir) => out.extend(read_host_dir(&dir, upstream)?),
        None => out.push(upstream),
    }
    out.retain(|e| by_digest || e.resolve);
    let mirror_only = cfg.mirror_only || cfg.mirror_only_registries.iter().any(|r| r == registry);
    if mirror_only {
        out.retain(|e| !is_upstream(&e.host, registry));
    }
    if out.is_empty() {
        return Err(ImageError::NoEndpoint {
            registry: registry.to_string(),
            reason: if mirror_only {
                "images.mirror_only (or mirror_only_registries) holds for it and no mirror \
                 serves it (add one to [images.mirrors] or a hosts.toml under images.config_path)"
            } else {
                "its hosts.toml leaves no host that may resolve a tag (capability \"resolve\"); \
                 pull by digest or add the capability"
            },
        });
    }
    Ok(out)
}

/// The registry's host directory: the first of `config_path`'s directories (`:`
/// between them) holding `<registry>/` or else `_default/`.
fn host_dir(config_path: &str, registry: &str) -> Option<PathBuf> {
    let roots: Vec<&Path> = config_path
        .split(':')
        .filter(|p| !p.is_empty())
        .map(Path::new)
        .collect();
    for name in [registry, "_default"] {
        if let Some(d) = roots.iter().map(|r| r.join(name)).find(|d| d.is_dir()) {
            return Some(d);
        }
    }
    None
}

/// A hosts.toml, as far as crius reads it. Unknown keys are refused: a key crius
/// ignored silently could change where images come from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    settings: HostSettings,
    #[serde(default)]
    host: Hosts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSettings {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    skip_verify: Option<bool>,
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    override_path: Option<bool>,
    dial_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The `[host."<url>"]` tables in file order (toml keeps it with `preserve_order`).
#[derive(Debug, Default)]
struct Hosts(Vec<(String, HostSettings)>);

impl<'de> Deserialize<'de> for Hosts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hosts, D::Error> {
        struct Ordered;
        impl<'de> serde::de::Visitor<'de> for Ordered {
            type Value = Hosts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("tables of host settings keyed by URL")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Hosts, M::Error> {
                let mut hosts = Vec::new();
                while let Some(entry) = m.next_entry::<String, HostSettings>()? {
                    hosts.push(entry);
                }
                Ok(Hosts(hosts))
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// The endpoints a host directory names: its hosts, then its server (`upstream`
/// unless `server` says otherwise). A URL's scheme says whether it is plain HTTP.
fn read_host_dir(dir: &Path, upstream: Endpoint) -> Result<Vec<Endpoint>, ImageError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![docker_style(dir, upstream)?]);
        }
        Err(e) => return Err(hosts_error(&file, format!("reading it: {e}"))),
    };
    let parsed: HostsFile =
        toml::from_str(&text).map_err(|e| hosts_error(&file, e.message().to_string()))?;
    let mut out = Vec::new();
    for (url, settings) in &parsed.host.0 {
        let at = format!("host.{url:?}");
        let (host, plain_http) = parse_url(url, &file, &at)?;
        out.push(endpoint(host, plain_http, settings, dir, &file, &at)?);
    }
    let server = match &parsed.server {
        Some(url) => parse_url(url, &file, "server")?,
        None => (upstream.host, upstream.plain_http),
    };
    out.push(endpoint(
        server.0,
        server.1,
        &parsed.settings,
        dir,
        &file,
        "",
    )?);
    Ok(out)
}

/// A host directory without hosts.toml: its `*.crt` files are CAs for the registry;
/// a client certificate (`*.cert`, `*.key`) cannot be used.
fn docker_style(dir: &Path, mut upstream: Endpoint) -> Result<Endpoint, ImageError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| hosts_error(dir, format!("reading the directory: {e}")))?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => upstream.ca_pem.push(read_pem(&path, dir)?),
            Some("cert" | "key") => {
                return Err(hosts_error(&path, CLIENT_CERTS.to_string()));
            }
            _ => {}
        }
    }
    Ok(upstream)
}

const CLIENT_CERTS: &str = "client certificates are not supported by crius's registry client; \
                            remove it, or reach the registry without one";

/// `scheme://host[:port][/v2]` → (`host[:port]`, plain HTTP).
fn parse_url(url: &str, file: &Path, key: &str) -> Result<(String, bool), ImageError> {
    let bad = |why: &str| hosts_error(file, format!("{key}: {url:?} {why}"));
    let (plain_http, rest) = if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if url.contains("://") {
        return Err(bad("must be an http:// or https:// URL"));
    } else {
        (false, url)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(bad("has no usable host"));
    }
    if !matches!(path.trim_end_matches('/'), "" | "v2") {
        return Err(bad(
            "has a path: crius's registry client reaches the API at /v2 only",
        ));
    }
    Ok((host.to_string(), plain_http))
}

fn endpoint(
    host: String,
    plain_http: bool,
    s: &HostSettings,
    dir: &Path,
    file: &Path,
    at: &str,
) -> Result<Endpoint, ImageError> {
    let key = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    let unsupported = |k: &str, why: &str| hosts_error(file, format!("{}: {why}", key(k)));
    if s.client.is_some() {
        return Err(unsupported("client", CLIENT_CERTS));
    }
    if s.header.is_some() {
        return Err(unsupported(
            "header",
            "extra request headers are not supported by crius's registry client",
        ));
    }
    if s.override_path == Some(true) {
        return Err(unsupported(
            "override_path",
            "crius's registry client reaches the API at /v2 only",
        ));
    }
    if let Some(t) = &s.dial_timeout {
        tracing::debug!(file = %file.display(), dial_timeout = %t, "dial_timeout: crius connects with a 30 s timeout");
    }
    let caps = s
        .capabilities
        .clone()
        .unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
    for c in &caps {
        if !matches!(c.as_str(), "pull" | "resolve" | "push") {
            return Err(unsupported(
                "capabilities",
                &format!("{c:?} is not one of \"pull\", \"resolve\", \"push\""),
            ));
        }
    }
    if !caps.iter().any(|c| c == "pull") {
        return Err(unsupported(
            "capabilities",
            "has no \"pull\": crius only pulls; drop the host or give it \"pull\"",
        ));
    }
    let ca = match &s.ca {
        None => Vec::new(),
        Some(OneOrMany::One(p)) => vec![p.clone()],
        Some(OneOrMany::Many(ps)) => ps.clone(),
    };
    let ca_pem = ca
        .iter()
        .map(|p| read_pem(&dir.join(p), file))
        .collect::<Result<_, _>>()?;
    Ok(Endpoint {
        host,
        plain_http,
        resolve: caps.iter().any(|c| c == "resolve"),
        ca_pem,
        skip_verify: s.skip_verify.unwrap_or(false),
    })
}

fn read_pem(path: &Path, named_in: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| hosts_error(named_in, format!("reading CA {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(hosts_error(
            named_in,
            format!("CA {} holds no PEM certificate", path.display()),
        ));
    }
    Ok(bytes)
}

fn hosts_error(path: &Path, reason: String) -> ImageError {
    ImageError::HostsConfig {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each endpoint's host, plain HTTP, may resolve tags.
    fn hosts_of(eps: &[Endpoint]) -> Vec<(String, bool, bool)> {
        eps.iter()
            .map(|e| (e.host.clone(), e.plain_http, e.resolve))
            .collect()
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn cfg(root: &Path) -> ImagesConfig {
        ImagesConfig {
            config_path: format!("/nonexistent:{}", root.display()),
            ..Default::default()
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn hosts_come_first_in_file_order_then_the_server() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("docker.io");
        write(&d, "ca.pem", PEM);
        write(
            &d,
            "hosts.toml",
            r#"
server = "https://registry-1.docker.io"
[host."https://zeta.example:5000"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
[host."http://alpha.example"]
  capabilities = ["pull"]
  skip_verify = true
"#,
        );
        let c = cfg(root.path());
        let eps = endpoints(&c, "docker.io", true).unwrap();
        assert_eq!(
            hosts_of(&eps),
            [
                ("zeta.example:5000".into(), false, true),
                ("alpha.example".into(), true, false),
                ("registry-1.docker.io".into(), false, true),
            ]
        );
        assert_eq!(eps[0].ca_pem, [PEM.as_bytes().to_vec()]);
        assert!(eps[1].skip_verify);
        // A tag is resolved only where "resolve" is given.
        let eps = endpoints(&c, "docker.io", false).unwrap();
        assert_eq!(eps.len(), 2);
        // Mirror-only: the upstream goes.
        let eps = endpoints(
            &ImagesConfig {
                mirror_only: true,
                ..c.clone()
            },
            "docker.io",
            false,
        )
        .unwrap();
        assert_eq!(hosts_of(&eps), [("zeta.example:5000".into(), false, true)]);
    }

    #[test]
    fn crius_mirrors_then_defaults_and_docker_style_cas() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("_default"),
            "hosts.toml",
            "[host.\"https://m.example\"]\n",
        );
        write(&root.path().join("quay.io"), "ca.crt", PEM);
        let mut c = cfg(root.path());
        c.mirrors
            .insert("gcr.io".into(), vec!["own.example:5000".into()]);
        let eps = endpoints(&c, "gcr.io", false).unwrap();
        assert_eq!(
            hosts_of(&eps),
            [
                ("own.example:5000".into(), false, true),
                ("m.example".into(), false, true),
                ("gcr.io".into(), false, true),
            ]
        );
        let eps = endpoints(&c, "quay.io", false).unwrap();
        assert_eq!(hosts_of(&eps), [("quay.io".into(), false, true)]);
        assert_eq!(eps[0].ca_pem.len(), 1);
        // No directory at all: the registry alone; loopback is plain HTTP.
        let eps = endpoints(&ImagesConfig::default(), "127.0.0.1:5000", false).unwrap();
        assert_eq!(hosts_of(&eps), [("127.0.0.1:5000".into(), true, true)]);
    }

    #[test]
    fn mirror_only_without_a_mirror_is_a_clear_error() {
        let c = ImagesConfig {
            mirror_only: true,
            ..Default::default()
        };
        let e = endpoints(&c, "gcr.io", true).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("gcr.io") && msg.contains("images.mirror_only"),
            "{msg}"
        );
    }

    #[test]
    fn what_crius_cannot_do_names_the_file_and_key() {
        let cases = [
            (
                "[host.\"https://m\"]\n  client = \"c.pem\"\n",
                "host.\"https://m\".client",
            ),
            (
                "[host.\"https://m\"]\n  header = { x = \"y\" }\n",
                "host.\"https://m\".header",
            ),
            ("[host.\"https://m/api\"]\n", "has a path"),
            (
                "[host.\"https://m\"]\n  override_path = true\n",
                "override_path",
            ),
            ("[host.\"ftp://m\"]\n", "http:// or https://"),
            (
                "[host.\"https://m\"]\n  capabilities = [\"push\"]\n",
                "no \"pull\"",
            ),
            (
                "[host.\"https://m\"]\n  capabilities = [\"fly\"]\n",
                "\"fly\"",
            ),
            (
                "[host.\"https://m\"]\n  ca = \"missing.pem\"\n",
                "missing.pem",
            ),
            ("sever = \"https://x\"\n", "sever"),
            ("client = [[\"a\", \"b\"]]\n", "client"),
        ];
        for (text, want) in cases {
            let root = tempfile::tempdir().unwrap();
            let d = root.path().join("r.example");
            write(&d, "hosts.toml", text);
            let e = endpoints(&cfg(root.path()), "r.example", false).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("hosts.toml"), "{text}: {msg}");
            assert!(msg.contains(want), "{text}: want {want:?} in {msg}");
        }
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("r.example"), "client.cert", PEM);
        let e = endpoints(&cfg(root.path()), "r.example", false).unwrap_err();
        assert!(e.to_string().contains("client.cert"), "{e}");
    }
}
