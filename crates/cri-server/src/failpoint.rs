//! Failure points in the managers' steps (see `crius_failpoints`): compiled in only
//! in `criusd-failpoints`, the `failpoints` feature's binary.

use crate::error::{CriError, CriResult};

/// Passes the named point: an error when the failpoint file sets it to `error`, a
/// crash when it sets it to `abort`.
#[inline(always)]
pub fn hit(name: &'static str) -> CriResult<()> {
    crius_failpoints::hit(name).map_err(|e| CriError::Internal(e.to_string()))
}
