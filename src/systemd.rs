//! systemd's service notification protocol (`sd_notify`): `READY=1`, `STATUS=…`,
//! `WATCHDOG=1` and `STOPPING=1`, each a datagram to the socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`).
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`) every call does
//! nothing, and without `$WATCHDOG_USEC` there is no watchdog interval, so the daemon
//! adds no wakeup of its own. A message that cannot be sent is dropped: systemd's
//! bookkeeping never stops a rotation.
//! Not here: when to send what (that is `daemon`).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The link to systemd's notification socket, or nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok();
        Notifier::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, for the
    /// process `pid`. A watchdog meant for another process (`WATCHDOG_PID`) is not ours.
    pub fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let socket = notify_socket.and_then(|name| {
            let addr = address(name)?;
            let socket = UnixDatagram::unbound().ok()?;
            // A full socket queue must never stall the scheduler loop.
            socket.set_nonblocking(true).ok()?;
            Some((socket, addr))
        });
        let ours = watchdog_pid.is_none_or(|p| p.trim().parse() == Ok(pid));
        let watchdog = watchdog_usec
            .filter(|_| ours && socket.is_some())
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0)
            // Half the timeout, as sd_watchdog_enabled(3) advises.
            .map(|usec| Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
        Notifier { socket, watchdog }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1`: `None` when systemd watches nothing.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The service is up (and what it is doing).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// What the service is doing, shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The scheduler loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// The service is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing the steps in flight");
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket
            && let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
        {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }
}

/// The socket address `$NOTIFY_SOCKET` names: an absolute path, or `@name` for the
/// abstract namespace. Anything else is ignored (systemd sets only these).
fn address(name: &str) -> Option<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name).ok()
    } else {
        None
    }
}

/// A status is one line: a newline would start another assignment.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_no_watchdog_runs() {
        let n = Notifier::from_vars(None, Some("30000000"), None, 1);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
        n.watchdog();
    }

    #[test]
    fn messages_reach_a_socket_named_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(path.to_str(), None, None, 1);
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("next: client app\nat 03:00");
        assert_eq!(
            received(&socket),
            "READY=1\nSTATUS=next: client app at 03:00"
        );
        n.watchdog();
        assert_eq!(received(&socket), "WATCHDOG=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cds-rotator-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1);
        n.status("idle");
        assert_eq!(received(&socket), "STATUS=idle");
    }

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_and_only_for_its_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _socket = UnixDatagram::bind(&path).unwrap();
        let at = path.to_str();
        let n = Notifier::from_vars(at, Some("30000000"), None, 7);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let n = Notifier::from_vars(at, Some("30000000"), Some("7"), 7);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let n = Notifier::from_vars(at, Some("30000000"), Some("8"), 7);
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::from_vars(at, Some("0"), None, 7);
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::from_vars(at, Some("soon"), None, 7);
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn a_notify_socket_that_is_neither_a_path_nor_abstract_is_ignored() {
        assert!(!Notifier::from_vars(Some("notify"), None, None, 1).is_enabled());
        assert!(!Notifier::from_vars(Some(""), None, None, 1).is_enabled());
    }
}
