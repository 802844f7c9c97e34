//! The registry client: resolves a reference to a platform manifest and streams
//! blobs, through `oci-client` (registry v2 protocol, bearer and basic auth, token
//! cache, digest-verifying blob streams). crius adds around it what a node needs:
//! mirrors tried in order before the upstream, plain HTTP only for listed and
//! loopback registries, per-registry credentials, retries with backoff on transient
//! failures, and a progress timeout (no data for that long fails the attempt).

use std::time::Duration;

use k8s_cri::v1::AuthConfig;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use tracing::{debug, warn};

use super::manifest::{self, Descriptor, Parsed};
use super::reference::{Reference, is_loopback_host};
use crate::config::ImagesConfig;
use crate::error::CriError;

/// Where a pull reads from: one registry endpoint (a mirror or the upstream).
pub struct Source {
    client: oci_client::Client,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    /// The host actually contacted.
    pub endpoint: String,
}

/// A resolved image: the top-level digest (what the tag points at), the platform
/// manifest, its config and layers.
pub struct Resolved {
    pub source: Source,
    /// Digest of what the reference resolved to (an index or a manifest).
    pub top_digest: String,
    pub top_bytes: bytes::Bytes,
    /// The platform manifest (same as top when there is no index).
    pub manifest_digest: String,
    pub manifest_bytes: bytes::Bytes,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The registry client with crius's policy around it.
pub struct Registry {
    cfg: ImagesConfig,
}

fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        _ => false,
    }
}

/// An error from the registry, with the reference and endpoint for context.
fn registry_error(r: &Reference, endpoint: &str, e: &OciDistributionError) -> CriError {
    let what = format!("pulling {r} from {endpoint}");
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            CriError::NotFound(format!("{what}: manifest not found: {e}"))
        }
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => CriError::FailedPrecondition(format!(
            "{what}: the registry refused the credentials (or needs some): {e}"
        )),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            CriError::NotFound(format!("{what}: {e}"))
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            CriError::FailedPrecondition(format!(
                "{what}: the registry refused the credentials (or needs some): {e}"
            ))
        }
        _ if transient(e) => CriError::Unavailable(format!("{what}: {}", chain(e))),
        _ => CriError::Internal(format!("{what}: {}", chain(e))),
    }
}

/// An error with its sources, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Registry {
    pub fn new(cfg: ImagesConfig) -> Registry {
        Registry { cfg }
    }

    /// The pull settings.
    pub fn config(&self) -> &ImagesConfig {
        &self.cfg
    }

    fn plain_http(&self, host: &str) -> bool {
        is_loopback_host(host) || self.cfg.insecure_registries.iter().any(|h| h == host)
    }

    fn client_for(&self, host: &str) -> oci_client::Client {
        let protocol = if self.plain_http(host) {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            read_timeout: Some(Duration::from_secs(self.cfg.progress_timeout_secs)),
            connect_timeout: Some(Duration::from_secs(30)),
            platform_resolver: None,
            user_agent: concat!("crius/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    fn auth_for(
        &self,
        host: &str,
        upstream: &str,
        given: Option<&AuthConfig>,
    ) -> Result<RegistryAuth, CriError> {
        if host == upstream {
            if let Some(a) = given {
                if !a.username.is_empty() || !a.password.is_empty() {
                    return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
                }
                if !a.auth.is_empty() {
                    let decoded = base64_decode(&a.auth).ok_or_else(|| {
                        CriError::invalid("auth.auth", "is not base64 of user:password")
                    })?;
                    let (u, p) = decoded.split_once(':').ok_or_else(|| {
                        CriError::invalid("auth.auth", "is not base64 of user:password")
                    })?;
                    return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
                }
                if !a.registry_token.is_empty() {
                    return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
                }
                if !a.identity_token.is_empty() {
                    return Err(CriError::invalid(
                        "auth.identity_token",
                        "identity (refresh) tokens are not supported; send a registry_token or a username and password",
                    ));
                }
            }
        }
        Ok(match self.cfg.credentials.get(host) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        })
    }

    /// Runs `f` up to `pull_attempts` times while it fails transiently.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && attempt < self.cfg.pull_attempts => {
                    warn!(attempt, error = %chain(&e), "{what}: transient failure; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Resolves `r` to its platform manifest, trying mirrors first.
    pub async fn resolve(
        &self,
        r: &Reference,
        auth: Option<&AuthConfig>,
    ) -> Result<Resolved, CriError> {
        let mut endpoints: Vec<String> = self
            .cfg
            .mirrors
            .get(&r.registry)
            .cloned()
            .unwrap_or_default();
        endpoints.push(r.registry.clone());
        let mut last = None;
        let count = endpoints.len();
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            match self.resolve_at(r, &endpoint, auth).await {
                Ok(res) => return Ok(res),
                Err(e) if i + 1 < count => {
                    warn!(image = %r, mirror = %endpoint, error = %e, "mirror failed; trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CriError::Internal(format!("no endpoint for {r}"))))
    }

    async fn resolve_at(
        &self,
        r: &Reference,
        endpoint: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<Resolved, CriError> {
        let mut reference = match &r.digest {
            Some(d) => oci_client::Reference::with_digest(
                r.registry.clone(),
                r.repository.clone(),
                d.clone(),
            ),
            None => oci_client::Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        if endpoint != r.registry {
            reference.set_mirror_registry(endpoint.to_string());
        }
        let source = Source {
            client: self.client_for(endpoint),
            auth: self.auth_for(endpoint, &r.registry, auth)?,
            reference,
            endpoint: endpoint.to_string(),
        };
        let (top_bytes, top_digest) = self
            .retry("fetching manifest", || {
                source.client.pull_manifest_raw(
                    &source.reference,
                    &source.auth,
                    &manifest::ACCEPTED,
                )
            })
            .await
            .map_err(|e| registry_error(r, endpoint, &e))?;
        check_digest(&top_bytes, &top_digest, r)?;
        if let Some(want) = &r.digest {
            if *want != top_digest {
                return Err(CriError::Internal(format!(
                    "pulling {r}: the registry answered with manifest {top_digest}, not the digest asked for"
                )));
            }
        }
        let (manifest_digest, manifest_bytes, config, layers) =
            match manifest::parse(&top_bytes, None)
                .map_err(|e| CriError::Internal(format!("pulling {r}: {e}")))?
            {
                Parsed::Manifest { config, layers } => {
                    (top_digest.clone(), top_bytes.clone(), config, layers)
                }
                Parsed::Index(list) => {
                    let want = manifest::host_platform();
                    let chosen = manifest::select(&list, &want).ok_or_else(|| {
                        CriError::NotFound(format!(
                            "pulling {r}: the image has no manifest for {}/{}{} (it has: {})",
                            want.os,
                            want.architecture,
                            want.variant
                                .as_deref()
                                .map(|v| format!("/{v}"))
                                .unwrap_or_default(),
                            list.iter()
                                .filter_map(|d| d.platform.as_ref())
                                .map(|p| format!("{}/{}", p.os, p.architecture))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    debug!(image = %r, digest = %chosen.digest, "selected the platform manifest");
                    let by_digest = source.reference.clone_with_digest(chosen.digest.clone());
                    let (bytes, digest) = self
                        .retry("fetching platform manifest", || {
                            source.client.pull_manifest_raw(
                                &by_digest,
                                &source.auth,
                                &manifest::ACCEPTED,
                            )
                        })
                        .await
                        .map_err(|e| registry_error(r, endpoint, &e))?;
                    check_digest(&bytes, &chosen.digest, r)?;
                    match manifest::parse(&bytes, None)
                        .map_err(|e| CriError::Internal(format!("pulling {r}: {e}")))?
                    {
                        Parsed::Manifest { config, layers } => (digest, bytes, config, layers),
                        Parsed::Index(_) => {
                            return Err(CriError::Internal(format!(
                                "pulling {r}: the index points at another index"
                            )));
                        }
                    }
                }
            };
        Ok(Resolved {
            source,
            top_digest,
            top_bytes,
            manifest_digest,
            manifest_bytes,
            config,
            layers,
        })
    }

    /// Opens a verified stream of one blob.
    pub async fn blob_stream(
        &self,
        source: &Source,
        desc: &Descriptor,
    ) -> Result<oci_client::client::SizedStream, OciDistributionError> {
        let layer = oci_client::client::LayerDescriptor {
            digest: &desc.digest,
            urls: &None,
        };
        source
            .client
            .pull_blob_stream(&source.reference, &layer)
            .await
    }
}

fn check_digest(bytes: &[u8], digest: &str, r: &Reference) -> Result<(), CriError> {
    let actual = crius_snapshotter::Digest::sha256_of(bytes);
    if actual.as_str() != digest {
        return Err(CriError::Internal(format!(
            "pulling {r}: manifest digest mismatch: expected {digest}, got {actual}"
        )));
    }
    Ok(())
}

fn base64_decode(s: &str) -> Option<String> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = T.iter().position(|&t| t == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_docker_auth() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some("user:pass"));
        assert_eq!(base64_decode("YTpi").as_deref(), Some("a:b"));
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn credentials_policy() {
        let mut cfg = ImagesConfig::default();
        cfg.credentials.insert(
            "mirror:5000".into(),
            crate::config::Credential {
                username: "m".into(),
                password: "p".into(),
            },
        );
        let reg = Registry::new(cfg);
        let given = AuthConfig {
            username: "u".into(),
            password: "pw".into(),
            ..Default::default()
        };
        // CRI credentials go to the image's own registry only, never to a mirror.
        assert!(
            matches!(reg.auth_for("up.io", "up.io", Some(&given)).unwrap(), RegistryAuth::Basic(u, _) if u == "u")
        );
        assert!(
            matches!(reg.auth_for("mirror:5000", "up.io", Some(&given)).unwrap(), RegistryAuth::Basic(u, _) if u == "m")
        );
        assert!(matches!(
            reg.auth_for("other:1", "up.io", None).unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(reg.plain_http("127.0.0.1:5000"));
        assert!(!reg.plain_http("registry.example.com"));
    }
}
