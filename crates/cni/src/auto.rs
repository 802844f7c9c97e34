//! The backend criusd uses by default: the CNI executor while its config directory
//! holds a usable network config, the built-in bridge otherwise.
//!
//! The choice is made per setup, so a conflist dropped in later takes over for new
//! pods. Teardown does not need to know which backend a pod got: it runs the CNI DEL
//! when that pod has a cached CNI result (or when a config exists, for an ADD that
//! crashed before caching), and always the bridge teardown, which is idempotent and
//! finds nothing to remove for a CNI pod.

use crate::{
    BackendStatus, BoxFuture, BridgeBackend, CniBackend, NetworkBackend, NetworkError,
    PodNetworkRequest, PodNetworkStatus,
};

/// CNI when configured, the built-in bridge otherwise.
#[derive(Debug)]
pub struct AutoBackend {
    cni: CniBackend,
    bridge: BridgeBackend,
}

impl AutoBackend {
    /// Combines the two backends.
    pub fn new(cni: CniBackend, bridge: BridgeBackend) -> Self {
        Self { cni, bridge }
    }

    /// The CNI executor (for `check`, `versions`).
    pub fn cni(&self) -> &CniBackend {
        &self.cni
    }

    /// The bridge backend (for `reconcile` at start-up).
    pub fn bridge(&self) -> &BridgeBackend {
        &self.bridge
    }
}

impl NetworkBackend for AutoBackend {
    fn name(&self) -> &'static str {
        if self.cni.status().ready {
            "cni"
        } else {
            "bridge"
        }
    }

    fn status(&self) -> BackendStatus {
        self.bridge.status()
    }

    fn setup<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            if self.cni.status().ready {
                self.cni.setup(req).await
            } else {
                self.bridge.setup(req).await
            }
        })
    }

    fn teardown<'a>(
        &'a self,
        req: &'a PodNetworkRequest,
    ) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            let cni = if self.cni.has_cached(&req.pod_id) || self.cni.status().ready {
                self.cni.teardown(req).await
            } else {
                Ok(())
            };
            let bridge = self.bridge.teardown(req).await;
            cni.and(bridge)
        })
    }
}
