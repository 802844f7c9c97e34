//! The service manager's notification protocol (systemd's `sd_notify`): a unit of
//! `Type=notify` learns that criusd is ready (`READY=1`, sent once the CRI socket
//! listens and start-up recovery is done), that it is going down (`STOPPING=1`), and,
//! when the unit sets `WatchdogSec=`, that it is alive (`WATCHDOG=1`, twice per
//! period).
//!
//! The protocol: `NOTIFY_SOCKET` names a datagram socket (a path, or `@name` for an
//! abstract one); each datagram is newline-separated `KEY=VALUE` lines. The watchdog
//! period comes from `WATCHDOG_USEC`, meant for us only when `WATCHDOG_PID` is unset
//! or our pid. criusd takes these variables out of its environment before it starts
//! any thread, so that no child (shim, runc, CNI plugin) inherits them: runc treats
//! `NOTIFY_SOCKET` as a request to relay the container's own notifications.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The environment variables of the protocol.
pub const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Why the notification settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?}: not an absolute path or an @abstract name")]
    Address(String),
    #[error("NOTIFY_SOCKET {addr:?}: {source}")]
    Socket {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WATCHDOG_USEC {0:?}: not a positive number of microseconds")]
    Watchdog(String),
}

/// A connection to the service manager.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// How often to ping the watchdog (half its period), when it is on.
    watchdog: Option<Duration>,
}

/// The protocol's settings, as read from the environment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings {
    pub socket: Option<String>,
    pub watchdog_usec: Option<String>,
    pub watchdog_pid: Option<String>,
}

impl Settings {
    /// Settings from `get` (the environment, or a table in tests).
    pub fn from(get: impl Fn(&str) -> Option<String>) -> Settings {
        let [socket, usec, pid] = ENV_VARS.map(get);
        Settings {
            socket,
            watchdog_usec: usec,
            watchdog_pid: pid,
        }
    }
}

/// The watchdog ping interval the settings ask of process `pid`: half the period,
/// or `None` when there is no watchdog or it watches another process.
pub fn watchdog_interval(s: &Settings, pid: u32) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = s.watchdog_usec.as_deref() else {
        return Ok(None);
    };
    if let Some(target) = s.watchdog_pid.as_deref() {
        if target.trim().parse::<u32>().ok() != Some(pid) {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_micros(n) / 2)),
        _ => Err(NotifyError::Watchdog(usec.to_string())),
    }
}

/// The address `NOTIFY_SOCKET` names.
fn address(value: &str) -> Result<SocketAddr, NotifyError> {
    let bad = |_| NotifyError::Address(value.to_string());
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(bad)
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value).map_err(bad)
    } else {
        Err(NotifyError::Address(value.to_string()))
    }
}

impl Notifier {
    /// The notifier the settings describe, or `None` when no service manager listens.
    pub fn new(s: &Settings, pid: u32) -> Result<Option<Notifier>, NotifyError> {
        let Some(value) = s.socket.as_deref().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let addr = address(value)?;
        let socket_err = |source| NotifyError::Socket {
            addr: value.to_string(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(socket_err)?;
        // Never block a runtime thread on a manager that does not read: a full queue
        // fails the send (EAGAIN) instead.
        sock.set_nonblocking(true).map_err(socket_err)?;
        Ok(Some(Notifier {
            sock,
            addr,
            watchdog: watchdog_interval(s, pid)?,
        }))
    }

    /// Sends one notification (`KEY=VALUE` lines); fails with `WouldBlock` rather
    /// than wait when the manager's queue is full.
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        self.sock
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
    }

    /// How often [`Notifier::ping_watchdog`] should run, when the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Tells the service manager criusd is serving.
    pub fn ready(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ))
    }

    /// Tells the service manager criusd is shutting down.
    pub fn stopping(&self) -> std::io::Result<()> {
        self.send("STOPPING=1\nSTATUS=shutting down")
    }

    /// One watchdog keep-alive.
    pub fn ping_watchdog(&self) -> std::io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(socket: Option<&str>, usec: Option<&str>, pid: Option<&str>) -> Settings {
        Settings {
            socket: socket.map(str::to_string),
            watchdog_usec: usec.map(str::to_string),
            watchdog_pid: pid.map(str::to_string),
        }
    }

    #[test]
    fn no_socket_means_no_notifier() {
        assert!(Notifier::new(&Settings::default(), 1).unwrap().is_none());
        assert!(
            Notifier::new(&settings(Some(""), None, None), 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_relative_socket_is_refused_by_name() {
        let err = Notifier::new(&settings(Some("run/notify"), None, None), 1).unwrap_err();
        assert!(err.to_string().contains("run/notify"), "{err}");
    }

    #[test]
    fn the_watchdog_pings_at_half_its_period_for_its_own_pid_only() {
        let s = settings(None, Some("2000000"), None);
        assert_eq!(
            watchdog_interval(&s, 7).unwrap(),
            Some(Duration::from_secs(1))
        );
        let mine = settings(None, Some("2000000"), Some("7"));
        assert_eq!(
            watchdog_interval(&mine, 7).unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(&mine, 8).unwrap(), None);
        assert_eq!(watchdog_interval(&Settings::default(), 7).unwrap(), None);
        for bad in ["0", "-5", "soon", ""] {
            let s = settings(None, Some(bad), None);
            assert!(watchdog_interval(&s, 7).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("crius-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let abstract_name = format!("crius-notify-unit-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .unwrap();
        let at_path = settings(path.to_str(), Some("100000"), None);
        let n = Notifier::new(&at_path, 1).unwrap().unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(50)));
        n.ready("serving").unwrap();
        n.stopping().unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let first = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            first.starts_with("READY=1\nSTATUS=serving\nMAINPID="),
            "{first}"
        );
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"STOPPING=1"));
        let at_abstract = settings(Some(&format!("@{abstract_name}")), None, None);
        let n = Notifier::new(&at_abstract, 1).unwrap().unwrap();
        n.ping_watchdog().unwrap();
        let len = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_manager_that_does_not_read_never_blocks_the_sender() {
        let name = format!("crius-notify-full-{}", std::process::id());
        let _unread =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(&settings(Some(&format!("@{name}")), None, None), 1)
            .unwrap()
            .unwrap();
        let mut refused = None;
        for _ in 0..10_000 {
            if let Err(e) = n.ping_watchdog() {
                refused = Some(e.kind());
                break;
            }
        }
        assert_eq!(refused, Some(std::io::ErrorKind::WouldBlock));
    }
}
