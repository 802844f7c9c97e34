//! ImageStatus, and the check every image RPC makes of the image it names.

use std::collections::HashMap;

use crius_cri_api::v1 as cri;

use super::ImageApi;
use crate::error::{CriError, CriResult};

/// The image a request names; it must not be empty.
pub(super) fn named(spec: Option<cri::ImageSpec>) -> CriResult<String> {
    let image = spec.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(CriError::invalid("image.image", "must not be empty"));
    }
    Ok(image)
}

impl ImageApi {
    /// A missing image is a nil image, not an error (the CRI says so).
    pub(super) async fn image_status(
        &self,
        req: cri::ImageStatusRequest,
    ) -> CriResult<cri::ImageStatusResponse> {
        let spec = named(req.image)?;
        let Some(img) = self.images.find(&spec).await? else {
            return Ok(cri::ImageStatusResponse {
                image: None,
                info: HashMap::new(),
            });
        };
        let mut info = HashMap::new();
        if req.verbose {
            let detail = self.images.status_detail(&img).await?;
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::ImageStatusResponse {
            image: Some(self.images.to_cri(&img).await?),
            info,
        })
    }
}
