//! Which credentials a pull sends to a registry endpoint.
//!
//! The kubelet's credentials (the CRI `auth` of the request) go to the image's own
//! registry only, never to a mirror: a mirror gets the credentials configured for
//! its host, or none. Within the request, a username and password win over the
//! docker-style `auth` field (base64 of `user:password`), which wins over a
//! registry token. Identity (refresh) tokens are refused: exchanging them needs an
//! OAuth flow crius does not implement.

use crius_cri_api::v1::AuthConfig;
use oci_client::secrets::RegistryAuth;

use crate::config::ImagesConfig;
use crate::error::ImageError;

const NOT_BASE64_USER_PASSWORD: &str = "is not base64 of user:password";

/// The credentials for `host` when pulling an image of `upstream`.
pub(crate) fn auth_for(
    cfg: &ImagesConfig,
    host: &str,
    upstream: &str,
    given: Option<&AuthConfig>,
) -> Result<RegistryAuth, ImageError> {
    if let Some(a) = given.filter(|_| host == upstream) {
        if !a.username.is_empty() || !a.password.is_empty() {
            return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
        }
        if !a.auth.is_empty() {
            let invalid = || ImageError::InvalidAuth {
                field: "auth.auth",
                reason: NOT_BASE64_USER_PASSWORD,
            };
            let decoded = base64_decode(&a.auth).ok_or_else(invalid)?;
            let (u, p) = decoded.split_once(':').ok_or_else(invalid)?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        if !a.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
        }
        if !a.identity_token.is_empty() {
            return Err(ImageError::InvalidAuth {
                field: "auth.identity_token",
                reason: "identity (refresh) tokens are not supported; send a registry_token or a username and password",
            });
        }
    }
    Ok(match cfg.credentials.get(host) {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    })
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
    use crate::config::Credential;

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
            Credential {
                username: "m".into(),
                password: "p".into(),
            },
        );
        let given = AuthConfig {
            username: "u".into(),
            password: "pw".into(),
            ..Default::default()
        };
        // CRI credentials go to the image's own registry only, never to a mirror.
        assert!(
            matches!(auth_for(&cfg, "up.io", "up.io", Some(&given)).unwrap(), RegistryAuth::Basic(u, _) if u == "u")
        );
        assert!(
            matches!(auth_for(&cfg, "mirror:5000", "up.io", Some(&given)).unwrap(), RegistryAuth::Basic(u, _) if u == "m")
        );
        assert!(matches!(
            auth_for(&cfg, "other:1", "up.io", None).unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn bad_request_credentials_name_the_field() {
        let cfg = ImagesConfig::default();
        for (a, field) in [
            (
                AuthConfig {
                    auth: "!!".into(),
                    ..Default::default()
                },
                "auth.auth",
            ),
            (
                AuthConfig {
                    auth: "bm9jb2xvbg==".into(), // "nocolon"
                    ..Default::default()
                },
                "auth.auth",
            ),
            (
                AuthConfig {
                    identity_token: "t".into(),
                    ..Default::default()
                },
                "auth.identity_token",
            ),
        ] {
            match auth_for(&cfg, "up.io", "up.io", Some(&a)) {
                Err(ImageError::InvalidAuth { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let token = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(matches!(
            auth_for(&cfg, "up.io", "up.io", Some(&token)).unwrap(),
            RegistryAuth::Bearer(t) if t == "tok"
        ));
    }
}
