//! `sd_notify` messages to the service manager: `READY=1`, `STATUS=`,
//! `EXTEND_TIMEOUT_USEC=`, `WATCHDOG=1`.
//!
//! The `sd-notify` crate formats the states; the datagram is sent here because the socket
//! address is taken once at start from `$NOTIFY_SOCKET` and then passed explicitly (tests
//! point it at their own socket without touching the process environment), and because
//! systemd may hand out an abstract socket (`@name`), which a plain path `connect` cannot
//! reach. Without `$NOTIFY_SOCKET` every call is a no-op; a failed send never fails a stage.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

pub(crate) use sd_notify::NotifyState;

/// Where notifications go: the service manager's socket, or nowhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub(crate) fn from_env() -> Notifier {
        Notifier::new(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// To this socket address (a path, or `@name` for an abstract socket); `None` or empty
    /// disables notifications.
    pub(crate) fn new(socket: Option<OsString>) -> Notifier {
        Notifier {
            socket: socket.filter(|s| !s.is_empty()),
        }
    }

    /// Whether a service manager is listening.
    pub(crate) fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send these states in one datagram. Ok without a socket.
    pub(crate) fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let mut text = String::new();
        for s in states {
            text.push_str(&s.to_string());
            text.push('\n');
        }
        notify_to(socket, &text)
    }
}

/// Send `message` as one datagram to the notification socket `addr`.
pub(crate) fn notify_to(addr: &OsStr, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = addr.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(message.as_bytes(), &sa)?
    } else if bytes.starts_with(b"/") {
        sock.send_to(message.as_bytes(), addr)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("unsupported NOTIFY_SOCKET address {:?}", addr),
        ));
    };
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram truncated",
        ));
    }
    Ok(())
}

/// `EXTEND_TIMEOUT_USEC=` for a duration, saturating.
pub(crate) fn extend_timeout_line(d: std::time::Duration) -> String {
    let usec = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    format!("EXTEND_TIMEOUT_USEC={usec}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.clone().into_os_string()));
        assert!(n.is_enabled());
        n.send(&[NotifyState::Ready, NotifyState::Status("hello")])
            .unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=hello\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("cairn-test-{}", std::process::id());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let arx = UnixDatagram::bind_addr(&sa).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1\n").unwrap();
        let len = arx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
    }

    #[test]
    fn disabled_without_socket() {
        assert!(!Notifier::new(None).is_enabled());
        assert!(!Notifier::new(Some(OsString::new())).is_enabled());
        Notifier::new(None).send(&[NotifyState::Ready]).unwrap();
        assert!(notify_to(OsStr::new("vsock:2:1"), "READY=1\n").is_err());
    }

    #[test]
    fn extend_timeout_in_microseconds() {
        assert_eq!(
            extend_timeout_line(Duration::from_secs(90)),
            "EXTEND_TIMEOUT_USEC=90000000"
        );
        assert_eq!(
            extend_timeout_line(Duration::MAX),
            format!("EXTEND_TIMEOUT_USEC={}", u64::MAX)
        );
    }
}
