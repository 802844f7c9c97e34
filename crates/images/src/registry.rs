//! The registry client: resolves a reference to a platform manifest and streams
//! blobs, through `oci-client` (registry v2 protocol, bearer and basic auth, token
//! cache, digest-verifying blob streams). crius adds around it what a node needs:
//! mirrors tried in order before the upstream, plain HTTP only for listed and
//! loopback registries, per-registry credentials (see `auth`), retries with
//! backoff on transient failures, and a progress timeout (no data for that long
//! fails the attempt).
//!
//! Every failure is classified here ([`classify`]): what the registry does not
//! have, refuses, cannot deliver in time, or delivered corrupt.

use std::time::Duration;

use crius_cri_api::v1::AuthConfig;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tracing::{debug, warn};

use crate::auth::auth_for;
use crate::config::ImagesConfig;
use crate::error::{ImageError, Mismatched, chain};
use crate::manifest::{self, Descriptor, Parsed};
use crate::reference::{Reference, is_loopback_host};

/// Where a pull reads from: one registry endpoint (a mirror or the upstream).
pub(crate) struct Source {
    client: oci_client::Client,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    /// The host actually contacted.
    pub(crate) endpoint: String,
}

/// A resolved image: the top-level digest (what the tag points at), the platform
/// manifest, its config and layers.
pub(crate) struct Resolved {
    pub(crate) source: Source,
    /// Digest of what the reference resolved to (an index or a manifest).
    pub(crate) top_digest: String,
    pub(crate) top_bytes: bytes::Bytes,
    /// The platform manifest (same as top when there is no index).
    pub(crate) manifest_digest: String,
    pub(crate) manifest_bytes: bytes::Bytes,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// The registry client with crius's policy around it.
pub(crate) struct Registry {
    cfg: ImagesConfig,
}

/// Whether another attempt may succeed: connection and I/O errors, 5xx, 429.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        _ => false,
    }
}

/// Whether an error (or one of its causes) is a timeout.
pub(crate) fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        // oci-client's I/O variant is transparent: its source skips the io::Error.
        let io = c.downcast_ref::<std::io::Error>().or_else(|| {
            match c.downcast_ref::<OciDistributionError>() {
                Some(OciDistributionError::IoError(io)) => Some(io),
                _ => None,
            }
        });
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cur = c.source();
    }
    chain(e).to_lowercase().contains("timed out")
}

fn envelope_has(e: &OciDistributionError, codes: &[OciErrorCode]) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|x| codes.contains(&x.code))
        }
        _ => false,
    }
}

/// What a registry failure means for the caller. `progress_timeout_secs` names
/// the setting a timeout ran into.
pub(crate) fn classify(
    context: String,
    e: OciDistributionError,
    progress_timeout_secs: u64,
) -> ImageError {
    use OciDistributionError as O;
    let not_found = matches!(
        e,
        O::ImageManifestNotFoundError(_) | O::ServerError { code: 404, .. }
    ) || envelope_has(
        &e,
        &[
            OciErrorCode::ManifestUnknown,
            OciErrorCode::NameUnknown,
            OciErrorCode::BlobUnknown,
        ],
    );
    let unauthorized = matches!(
        e,
        O::AuthenticationFailure(_)
            | O::UnauthorizedError { .. }
            | O::ServerError {
                code: 401 | 403,
                ..
            }
    ) || envelope_has(&e, &[OciErrorCode::Unauthorized, OciErrorCode::Denied]);
    if not_found {
        ImageError::NotFound {
            context,
            source: Box::new(e),
        }
    } else if unauthorized {
        ImageError::Unauthorized {
            context,
            source: Box::new(e),
        }
    } else if matches!(e, O::DigestError(_)) {
        ImageError::Mismatch {
            context,
            source: Box::new(e),
        }
    } else if is_timeout(&e) {
        ImageError::Stalled {
            context,
            secs: progress_timeout_secs,
            source: Some(Box::new(e)),
        }
    } else {
        ImageError::Unavailable {
            context,
            source: Box::new(e),
        }
    }
}

impl Registry {
    pub(crate) fn new(cfg: ImagesConfig) -> Registry {
        Registry { cfg }
    }

    /// The pull settings.
    pub(crate) fn config(&self) -> &ImagesConfig {
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

    /// Runs `f` up to `pull_attempts` times while it fails transiently.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        what: &str,
        mut f: F,
    ) -> Result<T, OciDistributionError>
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
    pub(crate) async fn resolve(
        &self,
        r: &Reference,
        auth: Option<&AuthConfig>,
    ) -> Result<Resolved, ImageError> {
        let mut endpoints: Vec<String> = self
            .cfg
            .mirrors
            .get(&r.registry)
            .cloned()
            .unwrap_or_default();
        endpoints.push(r.registry.clone());
        let count = endpoints.len();
        let mut i = 0;
        loop {
            let endpoint = &endpoints[i];
            match self.resolve_at(r, endpoint, auth).await {
                Ok(res) => return Ok(res),
                Err(e) if i + 1 < count => {
                    warn!(image = %r, mirror = %endpoint, error = %e.report(), "mirror failed; trying the next endpoint");
                    i += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches one manifest (with retries) and checks it hashes to `expected`, or to
    /// the digest the registry announced.
    async fn manifest(
        &self,
        source: &Source,
        reference: &oci_client::Reference,
        expected: Option<&str>,
    ) -> Result<(bytes::Bytes, String), ImageError> {
        let context = || format!("fetching manifest {reference} from {}", source.endpoint);
        let (bytes, digest) = self
            .retry("fetching manifest", || {
                source
                    .client
                    .pull_manifest_raw(reference, &source.auth, &manifest::ACCEPTED)
            })
            .await
            .map_err(|e| classify(context(), e, self.cfg.progress_timeout_secs))?;
        let actual = crius_snapshotter::Digest::sha256_of(&bytes).to_string();
        for want in [Some(digest.as_str()), expected].into_iter().flatten() {
            if actual != want {
                return Err(ImageError::Mismatch {
                    context: context(),
                    source: Box::new(Mismatched {
                        what: "manifest digest",
                        expected: want.to_string(),
                        actual,
                    }),
                });
            }
        }
        Ok((bytes, digest))
    }

    async fn resolve_at(
        &self,
        r: &Reference,
        endpoint: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<Resolved, ImageError> {
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
            auth: auth_for(&self.cfg, endpoint, &r.registry, auth)?,
            reference,
            endpoint: endpoint.to_string(),
        };
        let (top_bytes, top_digest) = self
            .manifest(&source, &source.reference, r.digest.as_deref())
            .await?;
        let invalid = |reason: String| ImageError::InvalidImage {
            context: format!("reading the manifest from {endpoint}"),
            reason,
            source: None,
        };
        let (manifest_digest, manifest_bytes, config, layers) =
            match manifest::parse(&top_bytes, None).map_err(invalid)? {
                Parsed::Manifest { config, layers } => {
                    (top_digest.clone(), top_bytes.clone(), config, layers)
                }
                Parsed::Index(list) => {
                    let chosen = select_platform(&list, endpoint)?;
                    debug!(image = %r, digest = %chosen.digest, "selected the platform manifest");
                    let by_digest = source.reference.clone_with_digest(chosen.digest.clone());
                    let (bytes, digest) = self
                        .manifest(&source, &by_digest, Some(&chosen.digest))
                        .await?;
                    match manifest::parse(&bytes, None).map_err(invalid)? {
                        Parsed::Manifest { config, layers } => (digest, bytes, config, layers),
                        Parsed::Index(_) => {
                            return Err(invalid("the index points at another index".into()));
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
    pub(crate) async fn blob_stream(
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

/// The manifest of an index for this node's platform.
fn select_platform<'a>(
    list: &'a [Descriptor],
    endpoint: &str,
) -> Result<&'a Descriptor, ImageError> {
    let want = manifest::host_platform();
    manifest::select(list, &want).ok_or_else(|| ImageError::NoMatchingPlatform {
        context: format!("reading the index from {endpoint}"),
        platform: format!(
            "{}/{}{}",
            want.os,
            want.architecture,
            want.variant
                .as_deref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        ),
        available: list
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_for_loopback_and_listed_registries() {
        let reg = Registry::new(ImagesConfig {
            insecure_registries: vec!["lab.example:5000".into()],
            ..Default::default()
        });
        assert!(reg.plain_http("127.0.0.1:5000"));
        assert!(reg.plain_http("lab.example:5000"));
        assert!(!reg.plain_http("registry.example.com"));
    }

    #[test]
    fn registry_failures_are_classified() {
        let c = || "fetching".to_string();
        let server = |code: u16| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert!(matches!(
            classify(
                c(),
                OciDistributionError::ImageManifestNotFoundError("x".into()),
                1
            ),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            classify(c(), server(404), 1),
            ImageError::NotFound { .. }
        ));
        for e in [
            OciDistributionError::UnauthorizedError { url: "u".into() },
            OciDistributionError::AuthenticationFailure("no".into()),
            server(403),
        ] {
            assert!(
                matches!(classify(c(), e, 1), ImageError::Unauthorized { .. }),
                "unauthorized"
            );
        }
        for code in [500, 502, 503, 429] {
            let e = server(code);
            assert!(transient(&e), "{code} is retried");
            assert!(matches!(
                classify(c(), e, 1),
                ImageError::Unavailable { .. }
            ));
        }
        assert!(!transient(&server(404)));
        let timed_out = OciDistributionError::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read",
        ));
        assert!(matches!(
            classify(c(), timed_out, 7),
            ImageError::Stalled { secs: 7, .. }
        ));
        let digest =
            OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
                expected: "a".into(),
                actual: "b".into(),
            });
        assert!(matches!(
            classify(c(), digest, 1),
            ImageError::Mismatch { .. }
        ));
    }

    #[test]
    fn no_platform_names_what_there_is() {
        let list = vec![Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: "sha256:x".into(),
            size: 1,
            platform: Some(manifest::Platform {
                architecture: "weird".into(),
                os: "plan9".into(),
                variant: None,
            }),
            urls: vec![],
        }];
        let e = select_platform(&list, "reg").unwrap_err();
        assert!(matches!(e, ImageError::NoMatchingPlatform { .. }));
        assert!(e.to_string().contains("plan9/weird"), "{e}");
    }
}
