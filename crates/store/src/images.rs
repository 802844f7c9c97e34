//! The `images` table (image records by id, the config digest) and `image_refs`
//! (tag or digest reference → image id).

use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::table::{Index, Owned, Records, decode, encode, keys_pointing_at, redb_err};
use crate::{Db, StoreError};

pub(crate) const IMAGES: Records = TableDefinition::new("images");
pub(crate) const IMAGE_REFS: Index = TableDefinition::new("image_refs");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let op = "creating the image tables";
    txn.open_table(IMAGES).map_err(redb_err(op))?;
    txn.open_table(IMAGE_REFS).map_err(redb_err(op))?;
    Ok(())
}

/// One layer of an image, as pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as the registry serves it (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// OCI chain id: the snapshot key of this layer and those below it.
    pub chain_id: String,
    /// Compressed size.
    pub size: u64,
    pub media_type: String,
}

/// An image, as stored. Its id is the config digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    /// `registry/repo:tag` references that point here.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:...` references that point here.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    pub layers: Vec<LayerRecord>,
    /// Bytes of the image as distributed (config plus compressed layers).
    pub size: u64,
    /// Pulled at, nanoseconds since the epoch.
    pub pulled_at: i64,
}

impl ImageRecord {
    /// Every reference of this image (tags, then digests).
    pub fn refs(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().chain(self.repo_digests.iter())
    }

    pub(crate) fn drop_ref(&mut self, reference: &str) {
        self.repo_tags.retain(|t| t != reference);
        self.repo_digests.retain(|t| t != reference);
    }
}

pub(crate) type ImagesTable<'t> = Table<'t, &'static str, &'static [u8]>;

/// Rewrites image `id` with `f` applied, if it exists; returns the new record.
pub(crate) fn edit_image(
    images: &mut ImagesTable<'_>,
    id: &str,
    f: impl FnOnce(&mut ImageRecord),
) -> Result<Option<ImageRecord>, StoreError> {
    let op = "editing an image";
    let old = images.get(id).owned(op)?;
    let Some(old) = old else {
        return Ok(None);
    };
    let mut img: ImageRecord = decode(IMAGES.name(), id, &old)?;
    f(&mut img);
    let bytes = encode(IMAGES.name(), &img)?;
    images.insert(id, bytes.as_slice()).map_err(redb_err(op))?;
    Ok(Some(img))
}

impl Db {
    /// Writes an image and points each of its references at it. A reference that
    /// pointed at another image moves here (that image keeps its other references).
    pub fn put_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let op = "writing an image";
        let bytes = encode(IMAGES.name(), image)?;
        self.write(op, |txn| {
            let mut images = txn.open_table(IMAGES).map_err(redb_err(op))?;
            let mut refs = txn.open_table(IMAGE_REFS).map_err(redb_err(op))?;
            for r in image.refs() {
                let previous = refs.insert(r.as_str(), image.id.as_str()).owned(op)?;
                if let Some(prev) = previous.filter(|p| *p != image.id) {
                    edit_image(&mut images, &prev, |old| old.drop_ref(r))?;
                }
            }
            images
                .insert(image.id.as_str(), bytes.as_slice())
                .map_err(redb_err(op))?;
            Ok(())
        })
    }

    /// One image by id.
    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.get(IMAGES, id)
    }

    /// Every image (those whose record does not decode are skipped).
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.all(IMAGES)
    }

    /// The image a tag or digest reference points at.
    pub fn image_id_by_ref(&self, reference: &str) -> Result<Option<String>, StoreError> {
        self.lookup(IMAGE_REFS, reference)
    }

    /// Removes one reference from its image. Returns the image as it is afterwards.
    pub fn remove_image_ref(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let op = "removing an image reference";
        self.write(op, |txn| {
            let mut refs = txn.open_table(IMAGE_REFS).map_err(redb_err(op))?;
            let Some(id) = refs.remove(reference).owned(op)? else {
                return Ok(None);
            };
            let mut images = txn.open_table(IMAGES).map_err(redb_err(op))?;
            edit_image(&mut images, &id, |img| img.drop_ref(reference))
        })
    }

    /// Deletes an image and every reference to it.
    pub fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let op = "deleting an image";
        self.write(op, |txn| {
            let mut images = txn.open_table(IMAGES).map_err(redb_err(op))?;
            let old = images.remove(id).owned(op)?;
            let mut refs = txn.open_table(IMAGE_REFS).map_err(redb_err(op))?;
            // Every reference pointing here goes, whether or not the record decodes.
            let stale: Vec<String> = match old.map(|o| decode::<ImageRecord>(IMAGES.name(), id, &o))
            {
                Some(Ok(img)) => img.refs().cloned().collect(),
                _ => keys_pointing_at(&refs, id)?,
            };
            for r in stale {
                if refs
                    .get(r.as_str())
                    .map_err(redb_err(op))?
                    .is_some_and(|v| v.value() == id)
                {
                    refs.remove(r.as_str()).map_err(redb_err(op))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("r@{id}")],
            manifest_digest: "m".into(),
            layers: vec![],
            size: 1,
            pulled_at: 1,
        }
    }

    #[test]
    fn image_refs_move_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Db::open(&dir.path().join("s.redb")).unwrap();
        store.put_image(&image("a", &["r:1", "r:latest"])).unwrap();
        assert_eq!(
            store.image_id_by_ref("r:latest").unwrap().as_deref(),
            Some("a")
        );
        // The tag moves to a newer image; the old one keeps its other references.
        store.put_image(&image("b", &["r:latest"])).unwrap();
        assert_eq!(
            store.image_id_by_ref("r:latest").unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(store.image("a").unwrap().unwrap().repo_tags, vec!["r:1"]);
        let left = store.remove_image_ref("r:1").unwrap().unwrap();
        assert!(left.repo_tags.is_empty());
        assert_eq!(store.remove_image_ref("r:1").unwrap(), None);
        store.delete_image("a").unwrap();
        assert!(store.image("a").unwrap().is_none());
        assert!(store.image_id_by_ref("r@a").unwrap().is_none());
        assert_eq!(store.images().unwrap().len(), 1);
    }
}
