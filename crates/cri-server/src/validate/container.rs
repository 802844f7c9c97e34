//! CreateContainer: the checks that need nothing but the request. What depends on
//! the pod, the image or the host (the pod being ready, the image being present,
//! each spec field) is checked by the container manager and the spec generator,
//! before anything is made.

use std::path::{Component, Path};

use crius_cri_api::v1 as cri;

use crate::error::{CriError, CriResult};

/// A CreateContainer request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidContainer {
    pub pod_sandbox_id: String,
    pub config: cri::ContainerConfig,
    /// The container's name (`config.metadata.name`).
    pub name: String,
    /// The image as the kubelet names it (`config.image.image`).
    pub image: String,
    /// The pod config the kubelet sent along, if any.
    pub sandbox_config: Option<cri::PodSandboxConfig>,
}

/// Checks a CreateContainer request.
pub fn create_container(req: cri::CreateContainerRequest) -> CriResult<ValidContainer> {
    if req.pod_sandbox_id.is_empty() {
        return Err(CriError::invalid("pod_sandbox_id", "must not be empty"));
    }
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "is required"))?;
    let md = config
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
    if md.name.is_empty() || md.name.contains('/') || md.name.contains(char::is_control) {
        return Err(CriError::invalid(
            "config.metadata.name",
            format!(
                "{:?} must be non-empty, without '/' or control characters",
                md.name
            ),
        ));
    }
    let name = md.name.clone();
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image.is_empty() {
        return Err(CriError::invalid("config.image.image", "must not be empty"));
    }
    log_path(&config.log_path)?;
    if cri::Signal::try_from(config.stop_signal).is_err() {
        return Err(CriError::invalid(
            "config.stop_signal",
            format!("{} is not a CRI Signal value", config.stop_signal),
        ));
    }
    Ok(ValidContainer {
        pod_sandbox_id: req.pod_sandbox_id,
        config,
        name,
        image,
        sandbox_config: req.sandbox_config,
    })
}

/// `log_path` is relative to the pod's log directory and must stay inside it: an
/// absolute path or a `..` would make criusd write (and at removal, delete) a file
/// anywhere on the host.
fn log_path(path: &str) -> CriResult<()> {
    const FIELD: &str = "config.log_path";
    if path.contains(char::is_control) {
        return Err(CriError::invalid(
            FIELD,
            format!("{path:?} must not contain control characters"),
        ));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(CriError::invalid(
            FIELD,
            format!("{path:?} must be relative to the pod's log directory"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(CriError::invalid(
            FIELD,
            format!("{path:?} must stay inside the pod's log directory"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, image: &str, log: &str) -> cri::CreateContainerRequest {
        cri::CreateContainerRequest {
            pod_sandbox_id: "p".into(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                log_path: log.into(),
                ..Default::default()
            }),
            sandbox_config: None,
        }
    }

    fn field_of(r: CriResult<ValidContainer>) -> String {
        match r {
            Err(CriError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn kubelet_shaped_requests_pass() {
        let v = create_container(request("web", "nginx:1.27", "web/0.log")).unwrap();
        assert_eq!((v.name.as_str(), v.image.as_str()), ("web", "nginx:1.27"));
        create_container(request("c", "busybox", "")).unwrap();
        create_container(request("c", "busybox", "c.0.log")).unwrap();
    }

    #[test]
    fn log_paths_stay_in_the_pod_log_directory() {
        for bad in [
            "/tmp/x/victim.txt",
            "/var/log/pods/x/0.log",
            "../escape.log",
            "a/../../b.log",
            "a\n.log",
        ] {
            assert_eq!(
                field_of(create_container(request("c", "busybox", bad))),
                "config.log_path",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        assert_eq!(
            field_of(create_container(request("", "busybox", ""))),
            "config.metadata.name"
        );
        assert_eq!(
            field_of(create_container(request("a/b", "busybox", ""))),
            "config.metadata.name"
        );
        assert_eq!(
            field_of(create_container(request("a\nb", "busybox", ""))),
            "config.metadata.name"
        );
        assert_eq!(
            field_of(create_container(request("c", "", ""))),
            "config.image.image"
        );
        let mut r = request("c", "busybox", "");
        r.pod_sandbox_id.clear();
        assert_eq!(field_of(create_container(r)), "pod_sandbox_id");
        let mut r = request("c", "busybox", "");
        r.config = None;
        assert_eq!(field_of(create_container(r)), "config");
    }
}
