//! Talking to the service manager over D-Bus: start, stop and reload, and wait for the
//! jobs to end.
//!
//! Design: cairn asks systemd to do things (mount a disk through its `.mount` unit, stop
//! and restart services for a snapshot) instead of doing them behind its back, so unit
//! dependencies, logging and `systemctl status` stay right. Calls go through zbus's
//! blocking API to `org.freedesktop.systemd1`. Waiting for a job polls its object
//! (every 100 ms, bounded by a timeout) rather than listening for `JobRemoved`: a blocking
//! signal stream cannot time out, and a job that has vanished is a reliable "finished";
//! the unit's `ActiveState` then says whether it worked. Nothing here is used unless
//! systemd is PID 1 ([`is_running`]).

use std::path::Path;
use std::time::{Duration, Instant};

use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const JOB: &str = "org.freedesktop.systemd1.Job";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// What went wrong talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// No connection to the system bus.
    #[error("cannot connect to the system D-Bus: {0}")]
    Connect(#[source] Box<zbus::Error>),
    /// A method call failed; `what` says which.
    #[error("systemd refused to {what}: {source}")]
    Call {
        /// E.g. `start srv-backup.mount`.
        what: String,
        /// The D-Bus error.
        #[source]
        source: Box<zbus::Error>,
    },
    /// A reply did not have the expected shape.
    #[error("unexpected reply from systemd to {what}: {detail}")]
    Reply {
        /// The call.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The job did not finish in time.
    #[error("systemd did not {what} within {timeout:?}")]
    Timeout {
        /// The call.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Whether systemd is the running service manager (`sd_booted()`: `/run/systemd/system`
/// exists).
pub fn is_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The state of a unit after a job, as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `active`, `inactive`, `failed`, `activating`…
    pub active_state: String,
    /// Unit-type specific (`mounted`, `running`, `dead`…).
    pub sub_state: String,
}

impl UnitState {
    /// `active`.
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }

    /// Up: `active`, or `reloading` (which is active, re-reading its configuration).
    pub fn is_up(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading")
    }

    /// Running or on its way there: up, or `activating` (starting, or waiting to be
    /// restarted) — a process that may write its data.
    pub fn is_running(&self) -> bool {
        self.is_up() || self.active_state == "activating"
    }

    /// Stopped: `inactive` or `failed`.
    pub fn is_stopped(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed")
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.active_state, self.sub_state)
    }
}

/// A unit's load state and state ([`Systemd::unit_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// `loaded`, `not-found`, `masked`, `bad-setting`, `error`.
    pub load_state: String,
    /// Active state and sub-state.
    pub state: UnitState,
}

impl UnitStatus {
    /// Whether systemd has a unit of that name (`loaded`; a masked unit is not).
    pub fn is_loaded(&self) -> bool {
        self.load_state == "loaded"
    }
}

/// A connection to systemd on the system bus.
pub struct Systemd {
    conn: Connection,
}

impl Systemd {
    /// Connect to the system bus (honours `$DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn connect() -> Result<Systemd, SystemdError> {
        Ok(Systemd {
            conn: Connection::system().map_err(|e| SystemdError::Connect(Box::new(e)))?,
        })
    }

    fn call<B, R>(
        &self,
        what: &str,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let msg = self
            .conn
            .call_method(Some(DEST), path, Some(iface), method, body)
            .map_err(|source| SystemdError::Call {
                what: what.to_string(),
                source: Box::new(source),
            })?;
        msg.body()
            .deserialize::<R>()
            .map_err(|e| SystemdError::Reply {
                what: what.to_string(),
                detail: e.to_string(),
            })
    }

    fn property(&self, path: &str, iface: &str, name: &str) -> Result<OwnedValue, SystemdError> {
        self.call(
            &format!("read {name}"),
            path,
            PROPERTIES,
            "Get",
            &(iface, name),
        )
    }

    fn string_property(&self, path: &str, iface: &str, name: &str) -> Result<String, SystemdError> {
        let v = self.property(path, iface, name)?;
        String::try_from(v).map_err(|e| SystemdError::Reply {
            what: format!("read {name}"),
            detail: e.to_string(),
        })
    }

    /// The object path of a unit, loading it if needed (`LoadUnit`).
    fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.call(&format!("load {unit}"), PATH, MANAGER, "LoadUnit", &(unit,))
    }

    /// Whether systemd knows the unit: its `LoadState` is `loaded` (a `.mount` unit exists
    /// only when /etc/fstab or a unit file describes the mount).
    pub fn unit_exists(&self, unit: &str) -> Result<bool, SystemdError> {
        let path = self.unit_path(unit)?;
        Ok(self.string_property(path.as_str(), UNIT, "LoadState")? == "loaded")
    }

    /// The unit's current state.
    pub fn unit_state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let path = self.unit_path(unit)?;
        Ok(UnitState {
            active_state: self.string_property(path.as_str(), UNIT, "ActiveState")?,
            sub_state: self.string_property(path.as_str(), UNIT, "SubState")?,
        })
    }

    /// The unit's load state (`loaded`, `not-found`, `masked`…) and current state, read
    /// after one `LoadUnit`.
    pub fn unit_status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let path = self.unit_path(unit)?;
        Ok(UnitStatus {
            load_state: self.string_property(path.as_str(), UNIT, "LoadState")?,
            state: UnitState {
                active_state: self.string_property(path.as_str(), UNIT, "ActiveState")?,
                sub_state: self.string_property(path.as_str(), UNIT, "SubState")?,
            },
        })
    }

    /// A timer's next and last elapse (wall clock), as `systemctl list-timers` shows them;
    /// `None` for a time systemd does not know (disabled timer, never triggered).
    pub fn timer_times(&self, timer: &str) -> Result<TimerTimes, SystemdError> {
        const TIMER: &str = "org.freedesktop.systemd1.Timer";
        let path = self.unit_path(timer)?;
        let usec = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, SystemdError> {
            let v = self.property(path.as_str(), TIMER, name)?;
            let us = u64::try_from(v).map_err(|e| SystemdError::Reply {
                what: format!("read {name}"),
                detail: e.to_string(),
            })?;
            Ok((us != 0 && us != u64::MAX)
                .then(|| chrono::DateTime::from_timestamp_micros(us as i64))
                .flatten())
        };
        Ok((usec("NextElapseUSecRealtime")?, usec("LastTriggerUSec")?))
    }

    /// How long systemd gives the unit to stop before it kills it: `TimeoutStopUSec` of a
    /// service, `TimeoutUSec` of a mount, swap or socket. `None` when it has no such
    /// timeout (other unit types) or it is infinite.
    pub fn unit_stop_timeout(&self, unit: &str) -> Result<Option<Duration>, SystemdError> {
        let (iface, name) = match unit.rsplit_once('.').map(|(_, t)| t) {
            Some("service") => ("org.freedesktop.systemd1.Service", "TimeoutStopUSec"),
            Some("mount") => ("org.freedesktop.systemd1.Mount", "TimeoutUSec"),
            Some("swap") => ("org.freedesktop.systemd1.Swap", "TimeoutUSec"),
            Some("socket") => ("org.freedesktop.systemd1.Socket", "TimeoutUSec"),
            _ => return Ok(None),
        };
        let path = self.unit_path(unit)?;
        let v = self.property(path.as_str(), iface, name)?;
        let usec = u64::try_from(v).map_err(|e| SystemdError::Reply {
            what: format!("read {name}"),
            detail: e.to_string(),
        })?;
        Ok((usec != u64::MAX && usec != 0).then(|| Duration::from_micros(usec)))
    }

    /// Start `unit` (mode `replace`) and wait up to `timeout` for the job to end; returns
    /// the unit's state then (callers check [`UnitState::is_active`]).
    pub fn start_unit(&self, unit: &str, timeout: Duration) -> Result<UnitState, SystemdError> {
        self.run_job("StartUnit", "start", unit, timeout)
    }

    /// Stop `unit` and wait up to `timeout` for the job to end.
    pub fn stop_unit(&self, unit: &str, timeout: Duration) -> Result<UnitState, SystemdError> {
        self.run_job("StopUnit", "stop", unit, timeout)
    }

    fn run_job(
        &self,
        method: &str,
        verb: &str,
        unit: &str,
        timeout: Duration,
    ) -> Result<UnitState, SystemdError> {
        let what = format!("{verb} {unit}");
        let job: OwnedObjectPath = self.call(&what, PATH, MANAGER, method, &(unit, "replace"))?;
        self.wait_job(&job, what, timeout)?;
        self.unit_state(unit)
    }

    /// Mount `what` on `at` through a transient `.mount` unit (`StartTransientUnit`, as
    /// `systemd-mount` does), so that systemd itself mounts it in the host's namespace
    /// and tracks it: a mount(2) from inside a sandboxed service would stay in that
    /// service's private mount namespace. Waits for the job like [`Self::start_unit`].
    pub fn start_transient_mount(
        &self,
        unit: &str,
        what: &Path,
        at: &Path,
        fs_type: &str,
        options: &str,
        timeout: Duration,
    ) -> Result<UnitState, SystemdError> {
        use zbus::zvariant::Value;
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let props: Vec<(&str, Value<'_>)> = vec![
            (
                "Description",
                Value::from(format!("cairn backup disk {}", at.display())),
            ),
            ("What", Value::from(text(what))),
            ("Where", Value::from(text(at))),
            ("Type", Value::from(fs_type.to_string())),
            ("Options", Value::from(options.to_string())),
        ];
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let desc = format!("start a transient {unit}");
        let job: OwnedObjectPath = self.call(
            &desc,
            PATH,
            MANAGER,
            "StartTransientUnit",
            &(unit, "fail", props, aux),
        )?;
        self.wait_job(&job, desc, timeout)?;
        self.unit_state(unit)
    }

    fn wait_job(
        &self,
        job: &OwnedObjectPath,
        what: String,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let deadline = Instant::now() + timeout;
        // The job object exists until the job is done; reading its State fails after.
        while self.property(job.as_str(), JOB, "State").is_ok() {
            if Instant::now() >= deadline {
                return Err(SystemdError::Timeout { what, timeout });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The unit file's enablement (`enabled`, `disabled`, `static`…), or `None` when
    /// systemd has no unit file of that name.
    pub fn unit_file_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        match self.call::<_, String>(
            &format!("read the state of {unit}"),
            PATH,
            MANAGER,
            "GetUnitFileState",
            &(unit,),
        ) {
            Ok(state) => Ok(Some(state)),
            Err(SystemdError::Call { source, .. })
                if matches!(&*source, zbus::Error::MethodError(name, _, _)
                    if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit"
                        || name.as_str() == "org.freedesktop.DBus.Error.FileNotFound") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `systemctl enable UNIT…` (not `--now`): enable the unit files, then reload.
    pub fn enable_unit_files(&self, units: &[&str]) -> Result<(), SystemdError> {
        type Changes = Vec<(String, String, String)>;
        self.call::<_, (bool, Changes)>(
            &format!("enable {}", units.join(" ")),
            PATH,
            MANAGER,
            "EnableUnitFiles",
            &(units, false, false),
        )?;
        self.reload()
    }

    /// `systemctl daemon-reload`: re-read unit files and regenerate units from /etc/fstab.
    pub fn reload(&self) -> Result<(), SystemdError> {
        self.call::<_, ()>("reload its configuration", PATH, MANAGER, "Reload", &())
    }
}

/// A timer's (next, last) elapse, wall clock.
pub type TimerTimes = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// The name of the `.mount` unit for a mount point, as `systemd-escape --path --suffix=mount`
/// makes it: `/srv/backup` → `srv-backup.mount`, `/mnt/my disk` → `mnt-my\x20disk.mount`.
pub fn mount_unit_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return "-.mount".to_string();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, &b) in part.iter().enumerate() {
            let plain = b.is_ascii_alphanumeric()
                || b == b':'
                || b == b'_'
                || (b == b'.' && (i, j) != (0, 0));
            if plain {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push_str(".mount");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_unit_names_match_systemd_escape() {
        // Expected values from `systemd-escape --path --suffix=mount`.
        let cases = [
            ("/srv/backup", "srv-backup.mount"),
            ("/srv/backup/", "srv-backup.mount"),
            ("/mnt/my disk", "mnt-my\\x20disk.mount"),
            ("/mnt/a-b", "mnt-a\\x2db.mount"),
            ("/mnt/.hidden", "mnt-.hidden.mount"),
            ("/.hidden", "\\x2ehidden.mount"),
            ("/mnt/v1.2", "mnt-v1.2.mount"),
            ("/", "-.mount"),
        ];
        for (path, unit) in cases {
            assert_eq!(mount_unit_name(Path::new(path)), unit, "{path}");
        }
    }
}
