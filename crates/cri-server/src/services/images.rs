//! ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::ImageApi;
use crate::error::{CriError, CriResult};

/// The image a request names; it must not be empty.
fn named(spec: Option<cri::ImageSpec>) -> CriResult<String> {
    let image = spec.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(CriError::invalid("image.image", "must not be empty"));
    }
    Ok(image)
}

impl ImageApi {
    pub(super) async fn list_images(
        &self,
        req: cri::ListImagesRequest,
    ) -> CriResult<cri::ListImagesResponse> {
        let images = self.images.list(req.filter).await?;
        Ok(cri::ListImagesResponse { images })
    }

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

    pub(super) async fn pull_image(
        &self,
        req: cri::PullImageRequest,
    ) -> CriResult<cri::PullImageResponse> {
        let spec = named(req.image)?;
        let image_ref = self.images.pull(&spec, req.auth.as_ref()).await?;
        Ok(cri::PullImageResponse { image_ref })
    }

    pub(super) async fn remove_image(
        &self,
        req: cri::RemoveImageRequest,
    ) -> CriResult<cri::RemoveImageResponse> {
        let spec = named(req.image)?;
        self.images.remove(&spec).await?;
        Ok(cri::RemoveImageResponse {})
    }

    pub(super) async fn image_fs_info(
        &self,
        _req: cri::ImageFsInfoRequest,
    ) -> CriResult<cri::ImageFsInfoResponse> {
        Ok(self.images.fs_info(self.config.state_dir.clone()).await?)
    }
}
