//! Repository locks: shared for backup and restore, exclusive for maintenance.
//!
//! A lock is a small JSON object under `locks/` naming host, pid and time. Taking a lock
//! writes ours first, then looks at the others, and backs off if one conflicts — so two
//! racing processes can both back off, but never both proceed. Holders rewrite their lock
//! every few minutes; a lock is stale when its process is gone (same host) or when it has
//! not been refreshed for [`STALE_AFTER`] (any host). Stale locks are removed and logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Kind};
use crate::crypto;

/// A lock not refreshed for this long is stale, whoever holds it.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub time: chrono::DateTime<chrono::Utc>,
    pub exclusive: bool,
    #[serde(default)]
    pub command: String,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "{} lock held by {} (pid {}, {}) since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.host,
            self.pid,
            self.command,
            self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// Why this lock is stale, if it is.
    pub fn stale_reason(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        let age = now
            .signed_duration_since(self.time)
            .to_std()
            .unwrap_or_default();
        if age > STALE_AFTER {
            return Some(format!("not refreshed for {} min", age.as_secs() / 60));
        }
        if self.host == crate::util::hostname() && !process_alive(self.pid) {
            return Some(format!("process {} no longer runs on this host", self.pid));
        }
        None
    }
}

fn process_alive(pid: u32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A held lock; released (its object removed) on drop.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    refresher: Option<JoinHandle<()>>,
}

/// What happened while taking a lock.
pub struct Acquired {
    pub lock: RepoLock,
    /// Stale locks that were removed, described for the log.
    pub removed_stale: Vec<String>,
}

fn write_lock(backend: &dyn Backend, info: &LockInfo) -> std::io::Result<String> {
    let name = hex::encode(crypto::random_bytes::<16>());
    backend.write(Some(Kind::Locks), &name, &serde_json::to_vec(info).unwrap())?;
    Ok(name)
}

/// Take a lock. `Err` holds a one-line explanation of the conflicting lock.
pub fn acquire(
    backend: Arc<dyn Backend>,
    exclusive: bool,
    command: &str,
) -> Result<Acquired, LockError> {
    let info = LockInfo {
        host: crate::util::hostname(),
        pid: std::process::id(),
        time: chrono::Utc::now(),
        exclusive,
        command: command.to_string(),
    };
    let ours = write_lock(&*backend, &info).map_err(LockError::Io)?;
    let mut removed_stale = Vec::new();
    let now = chrono::Utc::now();
    for name in backend.list(Kind::Locks).map_err(LockError::Io)? {
        if name == ours {
            continue;
        }
        let other: LockInfo = match backend.read(Some(Kind::Locks), &name) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(l) => l,
                Err(_) => {
                    // Unreadable lock: cannot judge it; treat it as held unless old by mtime.
                    let _ = backend.remove(Kind::Locks, &ours);
                    return Err(LockError::Conflict(format!(
                        "lock object locks/{name} is unreadable; if no cairn process is running, remove it with `cairn unlock`"
                    )));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let _ = backend.remove(Kind::Locks, &ours);
                return Err(LockError::Io(e));
            }
        };
        if let Some(why) = other.stale_reason(now) {
            if backend.remove(Kind::Locks, &name).is_ok() {
                removed_stale.push(format!(
                    "removed stale lock locks/{name}: {} ({why})",
                    other.describe()
                ));
            }
            continue;
        }
        if exclusive || other.exclusive {
            let _ = backend.remove(Kind::Locks, &ours);
            return Err(LockError::Conflict(format!(
                "repository is locked: {}; wait for it to finish, or if that process is gone run `cairn unlock`",
                other.describe()
            )));
        }
    }
    let name = Arc::new(Mutex::new(ours));
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = {
        let (backend, name, stop) = (backend.clone(), name.clone(), stop.clone());
        std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || {
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    waited += Duration::from_millis(200);
                    if waited >= REFRESH_EVERY {
                        waited = Duration::ZERO;
                        let info = LockInfo {
                            time: chrono::Utc::now(),
                            ..info.clone()
                        };
                        if let Ok(new) = write_lock(&*backend, &info) {
                            let mut n = name.lock().unwrap();
                            let _ = backend.remove(Kind::Locks, &n);
                            *n = new;
                        }
                    }
                }
            })
            .ok()
    };
    Ok(Acquired {
        lock: RepoLock {
            backend,
            name,
            stop,
            refresher,
        },
        removed_stale,
    })
}

/// The live exclusive lock, if one is held (described for a message): what a shared lock
/// taken now would conflict with. Stale and unreadable locks are ignored; nothing is
/// written or removed, so this needs neither the key nor write access.
pub fn exclusive_holder(backend: &dyn Backend) -> std::io::Result<Option<String>> {
    let now = chrono::Utc::now();
    for name in backend.list(Kind::Locks)? {
        let Ok(bytes) = backend.read(Some(Kind::Locks), &name) else {
            continue;
        };
        if let Ok(info) = serde_json::from_slice::<LockInfo>(&bytes) {
            if info.exclusive && info.stale_reason(now).is_none() {
                return Ok(Some(format!("locks/{name}: {}", info.describe())));
            }
        }
    }
    Ok(None)
}

/// Remove every stale lock (or, with `all`, every lock). Returns descriptions.
pub fn unlock(backend: &dyn Backend, all: bool) -> std::io::Result<Vec<String>> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for name in backend.list(Kind::Locks)? {
        let info: Option<LockInfo> = backend
            .read(Some(Kind::Locks), &name)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let why = match &info {
            Some(i) => i.stale_reason(now),
            None => Some("unreadable".into()),
        };
        if all || why.is_some() {
            backend.remove(Kind::Locks, &name)?;
            out.push(format!(
                "removed locks/{name}: {}",
                info.map(|i| i.describe())
                    .unwrap_or_else(|| "unreadable lock".into())
            ));
        }
    }
    Ok(out)
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let n = self.name.lock().unwrap();
        let _ = self.backend.remove(Kind::Locks, &n);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Conflict(String),
    #[error("cannot write the lock: {0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn repo() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path());
        b.create_layout().unwrap();
        (d, Arc::new(b))
    }

    #[test]
    fn shared_locks_coexist_exclusive_conflicts() {
        let (_d, b) = repo();
        let a = acquire(b.clone(), false, "t").unwrap();
        let c = acquire(b.clone(), false, "t").unwrap();
        let err = acquire(b.clone(), true, "t").err().unwrap().to_string();
        assert!(err.contains("a shared lock held by"), "{err}");
        drop((a, c));
        let x = acquire(b.clone(), true, "t").unwrap();
        assert!(acquire(b.clone(), false, "t").is_err());
        drop(x);
        assert!(
            b.list(Kind::Locks).unwrap().is_empty(),
            "locks are removed on release"
        );
    }

    #[test]
    fn stale_locks_are_removed() {
        let (_d, b) = repo();
        // A lock of a process that no longer exists on this host.
        let dead = LockInfo {
            host: crate::util::hostname(),
            pid: 999_999_999,
            time: chrono::Utc::now(),
            exclusive: true,
            command: "x".into(),
        };
        write_lock(&*b, &dead).unwrap();
        // A lock from another host, too old.
        let old = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            time: chrono::Utc::now() - chrono::Duration::hours(2),
            exclusive: true,
            command: "x".into(),
        };
        write_lock(&*b, &old).unwrap();
        let got = acquire(b.clone(), true, "t").unwrap();
        assert_eq!(got.removed_stale.len(), 2);
        // A fresh lock from another host is respected.
        drop(got);
        let live = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            time: chrono::Utc::now(),
            exclusive: true,
            command: "x".into(),
        };
        write_lock(&*b, &live).unwrap();
        assert!(acquire(b.clone(), false, "t").is_err());
        assert_eq!(unlock(&*b, false).unwrap().len(), 0);
        assert_eq!(unlock(&*b, true).unwrap().len(), 1);
    }
}
