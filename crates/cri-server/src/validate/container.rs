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
    for (i, m) in config.mounts.iter().enumerate() {
        mount(i, m)?;
    }
    // CDI device names (the devices themselves are looked up at create time).
    crate::cdi::requests(&config)?;
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

/// The checks of one request mount that need nothing else: an image volume is
/// read-only and its `image_sub_path` a relative path inside the image; a recursive
/// read-only mount is read-only with private propagation.
fn mount(i: usize, m: &cri::Mount) -> CriResult<()> {
    let field = |f: &str| format!("config.mounts[{i}].{f}");
    if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
        if !m.readonly {
            return Err(CriError::invalid(
                field("readonly"),
                "an image volume is always read-only: readonly must be true",
            ));
        }
        let sub = &m.image_sub_path;
        if sub.contains(char::is_control) {
            return Err(CriError::invalid(
                field("image_sub_path"),
                format!("{sub:?} must not contain control characters"),
            ));
        }
        let p = Path::new(sub);
        if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(CriError::invalid(
                field("image_sub_path"),
                format!("{sub:?} must be a relative path inside the image, without '..'"),
            ));
        }
    } else if !m.image_sub_path.is_empty() {
        return Err(CriError::invalid(
            field("image_sub_path"),
            "is only for image volumes (config.mounts[].image)",
        ));
    }
    if m.recursive_read_only {
        if !m.readonly {
            return Err(CriError::invalid(
                field("readonly"),
                "a recursive read-only mount must be readonly",
            ));
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(CriError::invalid(
                field("propagation"),
                "a recursive read-only mount needs private propagation (not HOST_TO_CONTAINER or BIDIRECTIONAL)",
            ));
        }
    }
    Ok(())
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
    fn image_volumes_are_read_only_with_a_sub_path_inside() {
        let with = |m: cri::Mount| {
            let mut r = request("c", "busybox", "");
            r.config.as_mut().unwrap().mounts = vec![cri::Mount::default(), m];
            create_container(r)
        };
        let volume = cri::Mount {
            container_path: "/v".into(),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            readonly: true,
            ..Default::default()
        };
        with(volume.clone()).unwrap();
        with(cri::Mount {
            image_sub_path: "etc/ssl".into(),
            ..volume.clone()
        })
        .unwrap();
        let bad = |m: cri::Mount| field_of(with(m));
        assert_eq!(
            bad(cri::Mount {
                readonly: false,
                ..volume.clone()
            }),
            "config.mounts[1].readonly"
        );
        for sub in ["/etc", "../x", "a/../../b", "a\nb"] {
            let sub = sub.to_string();
            assert_eq!(
                bad(cri::Mount {
                    image_sub_path: sub.clone(),
                    ..volume.clone()
                }),
                "config.mounts[1].image_sub_path",
                "{sub:?}"
            );
        }
        assert_eq!(
            bad(cri::Mount {
                host_path: "/tmp".into(),
                image_sub_path: "etc".into(),
                ..Default::default()
            }),
            "config.mounts[1].image_sub_path"
        );
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private_propagation() {
        let with = |m: cri::Mount| {
            let mut r = request("c", "busybox", "");
            r.config.as_mut().unwrap().mounts = vec![m];
            create_container(r)
        };
        let rro = cri::Mount {
            container_path: "/mnt".into(),
            host_path: "/tmp".into(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        };
        with(rro.clone()).unwrap();
        for (m, f) in [
            (
                cri::Mount {
                    readonly: false,
                    ..rro.clone()
                },
                "config.mounts[0].readonly",
            ),
            (
                cri::Mount {
                    propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                    ..rro.clone()
                },
                "config.mounts[0].propagation",
            ),
            (
                cri::Mount {
                    propagation: cri::MountPropagation::PropagationBidirectional as i32,
                    ..rro.clone()
                },
                "config.mounts[0].propagation",
            ),
        ] {
            assert_eq!(field_of(with(m)), f);
        }
        // Without recursive_read_only, a writable, propagated mount is fine.
        with(cri::Mount {
            readonly: false,
            recursive_read_only: false,
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..rro
        })
        .unwrap();
    }

    #[test]
    fn malformed_cdi_device_names_are_named() {
        let mut r = request("c", "busybox", "");
        let c = r.config.as_mut().unwrap();
        c.cdi_devices = vec![cri::CdiDevice {
            name: "vendor.example.com/device=foo".into(),
        }];
        c.annotations.insert(
            "cdi.k8s.io/x".into(),
            "vendor.example.com/device=bar".into(),
        );
        create_container(r.clone()).unwrap();
        r.config.as_mut().unwrap().cdi_devices[0].name = "foo".into();
        assert_eq!(
            field_of(create_container(r.clone())),
            "config.cdi_devices[0].name"
        );
        let c = r.config.as_mut().unwrap();
        c.cdi_devices.clear();
        c.annotations
            .insert("cdi.k8s.io/x".into(), "vendor/=bar".into());
        assert_eq!(
            field_of(create_container(r)),
            "config.annotations[\"cdi.k8s.io/x\"]"
        );
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
