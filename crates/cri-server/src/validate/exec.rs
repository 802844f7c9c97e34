//! Exec, Attach and PortForward: the checks that need nothing but the request.

use crate::error::{CriError, CriResult};

/// Exec and Attach: at least one stream, and not a tty with stderr (a terminal has
/// one output).
pub fn streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> CriResult<()> {
    if !(stdin || stdout || stderr) {
        return Err(CriError::invalid(
            "stdin",
            "one of stdin, stdout and stderr must be true",
        ));
    }
    if tty && stderr {
        return Err(CriError::invalid(
            "stderr",
            "tty and stderr cannot both be true (a terminal has one output stream)",
        ));
    }
    Ok(())
}

/// PortForward: a pod and ports 1-65535.
pub fn port_forward(pod_sandbox_id: &str, ports: &[i32]) -> CriResult<()> {
    if pod_sandbox_id.is_empty() {
        return Err(CriError::invalid("pod_sandbox_id", "must not be empty"));
    }
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(p) {
            return Err(CriError::invalid(
                format!("port[{i}]"),
                format!("{p} is not 1-65535"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_ports() {
        assert!(streams(false, true, false, false).is_ok());
        assert!(streams(true, true, false, true).is_ok());
        assert!(matches!(
            streams(false, false, false, false),
            Err(CriError::InvalidArgument { field, .. }) if field == "stdin"
        ));
        assert!(matches!(
            streams(false, true, true, true),
            Err(CriError::InvalidArgument { field, .. }) if field == "stderr"
        ));
        assert!(port_forward("p", &[80, 65535]).is_ok());
        assert!(matches!(
            port_forward("p", &[80, 0]),
            Err(CriError::InvalidArgument { field, .. }) if field == "port[1]"
        ));
        assert!(matches!(
            port_forward("", &[80]),
            Err(CriError::InvalidArgument { field, .. }) if field == "pod_sandbox_id"
        ));
    }
}
