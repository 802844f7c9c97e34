//! `sha256:<hex>` content digests and OCI chain ids.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// A validated content digest, `sha256:` followed by 64 lowercase hex digits.
///
/// Only sha256 is supported; other algorithms are refused with [`Error::InvalidDigest`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

const PREFIX: &str = "sha256:";

impl Digest {
    /// Parses and validates `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let bad = |reason| Error::InvalidDigest {
            digest: s.to_owned(),
            reason,
        };
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(bad("expected <algorithm>:<hex>"));
        };
        if alg != "sha256" {
            return Err(bad("unsupported algorithm (only sha256 is supported)"));
        }
        if hex.len() != 64 {
            return Err(bad("sha256 hex must be 64 characters"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("sha256 hex must be lowercase hexadecimal"));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part only.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        let out = h.finalize();
        let mut s = String::with_capacity(PREFIX.len() + 64);
        s.push_str(PREFIX);
        for b in out {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest(s)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The OCI chain id of a layer: `diff_id` for the base layer, otherwise
/// `sha256(chain(parent) + " " + diff_id)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(p.as_str().as_bytes());
            h.update(b" ");
            h.update(diff_id.as_str().as_bytes());
            Digest::from_hasher(h)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_hash() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.as_str(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), d);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha512:abcd",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &EMPTY.to_uppercase().replace("SHA256", "sha256"),
            &EMPTY[..70],
            &format!("{EMPTY}0"),
            "sha256:../../../../../../../../../../../../../../../../../../../../../..",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(Error::InvalidDigest { .. })),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<Digest>("\"sha1:00\"").is_err());
    }

    #[test]
    fn chain_ids() {
        // Values from the OCI image spec's algorithm, computed independently with sha256sum.
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        assert_eq!(chain_id(None, &a), a);
        let ab = chain_id(Some(&a), &b);
        let expect = Digest::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(ab, expect);
    }
}
