//! The Kubernetes Container Runtime Interface as crius speaks it: the prost
//! messages, tonic clients and tonic servers of package `runtime.v1`, generated
//! at build time from `proto/cri/runtime/v1/api.proto`.
//!
//! Paths follow the package: `crius_cri_api::v1::ListContainersRequest`,
//! `crius_cri_api::v1::runtime_service_server::RuntimeService`,
//! `crius_cri_api::v1::image_service_client::ImageServiceClient`.

/// Package `runtime.v1`: both services (`RuntimeService`, `ImageService`) and every message.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    rustdoc::all
)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// Serde for `KeyValue.value`: bytes on the wire, but a JSON string whenever they
/// are UTF-8 (as every value was when the field was a string), an array of
/// numbers otherwise. Both forms are read back.
mod text_or_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(value) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(TextOrBytes)
    }

    struct TextOrBytes;

    impl<'de> Visitor<'de> for TextOrBytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    /// A container config as crius-store wrote it with the bindings of cri-api v0.32:
    /// no stop_signal, no image_sub_path, env values as strings. It still reads,
    /// and writes back the same way.
    #[test]
    fn older_store_json_reads() {
        let old = r#"{"metadata":{"name":"web","attempt":1},
            "image":{"image":"busybox","annotations":{},"user_specified_image":"busybox","runtime_handler":""},
            "command":["sh"],"args":[],"working_dir":"","envs":[{"key":"A","value":"b=c"}],
            "mounts":[{"container_path":"/d","host_path":"/h","readonly":true,"selinux_relabel":false,
                "propagation":2,"uid_mappings":[],"gid_mappings":[],"recursive_read_only":false,"image":null}],
            "devices":[],"labels":{},"annotations":{},"log_path":"","stdin":false,"stdin_once":false,
            "tty":false,"linux":null,"windows":null,"cdi_devices":[]}"#;
        let c: v1::ContainerConfig = match serde_json::from_str(old) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.envs[0].value, b"b=c");
        assert_eq!(c.stop_signal, v1::Signal::RuntimeDefault as i32);
        assert_eq!(
            c.mounts[0].propagation,
            v1::MountPropagation::PropagationBidirectional as i32
        );
        assert!(c.mounts[0].image_sub_path.is_empty());
        let json = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(json["envs"][0]["value"], "b=c");

        let mut bin = c.clone();
        bin.envs[0].value = vec![0xff, 0];
        let text = serde_json::to_string(&bin).unwrap_or_default();
        let back: v1::ContainerConfig = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back.envs[0].value, vec![0xff, 0]);
    }
}
