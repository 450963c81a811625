//! The last lines a unit wrote to the journal, read through systemd's own journal API
//! (`sd-journal`), for the `alert UNIT` mail.
//!
//! Design: the `libsystemd` crate cairn uses for logging writes to the journal but cannot
//! read it, and the crates that bind `sd_journal_*` link against `libsystemd.so`, which
//! needs Debian's `libsystemd-dev` at build time. So the reader loads `libsystemd.so.0` —
//! part of every system that runs systemd — with `dlopen(3)` when it is needed and calls
//! the documented C API (`sd_journal_open`, `_add_match`, `_seek_tail`, `_previous`,
//! `_get_data`, `_get_realtime_usec`): no build dependency, no `journalctl` subprocess and
//! its output format to parse, and exactly the matches `journalctl -u UNIT` uses (the
//! unit's own processes, `_SYSTEMD_UNIT=UNIT`, or systemd's messages about it, `UNIT=UNIT`
//! from PID 1). Reading needs the right to read the system journal (root, or the groups
//! `systemd-journal` / `adm`); without it the journal simply shows nothing, which the mail
//! then says. All unsafe code of the reader is in this file.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use chrono::{DateTime, Local, TimeZone, Utc};

/// One journal entry, as much of it as a mail shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was logged.
    pub time: DateTime<Utc>,
    /// `SYSLOG_IDENTIFIER`, else `_COMM`, else `?`.
    pub identifier: String,
    /// `_PID`, if any.
    pub pid: Option<String>,
    /// `PRIORITY` (0–7), if any.
    pub priority: Option<u8>,
    /// The message (lossy UTF-8, control characters escaped).
    pub message: String,
}

impl Entry {
    /// `2026-05-01 03:00:01 cairn-snapshot[412]: message`, in local time, as
    /// `journalctl -o short-iso` shows it (without the host).
    pub fn line(&self) -> String {
        let t = Local.from_utc_datetime(&self.time.naive_utc());
        let pid = self
            .pid
            .as_ref()
            .map(|p| format!("[{p}]"))
            .unwrap_or_default();
        format!(
            "{} {}{pid}: {}",
            t.format("%Y-%m-%d %H:%M:%S"),
            self.identifier,
            self.message
        )
    }
}

/// Why the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// `libsystemd.so.0` is not there, or lacks a function.
    #[error("cannot load the journal API (libsystemd.so.0): {0}")]
    Load(String),
    /// An `sd_journal_*` call failed.
    #[error("{call} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Call {
        /// The function.
        call: &'static str,
        /// Its error number.
        errno: i32,
    },
}

type Journal = c_void;

type OpenFn = unsafe extern "C" fn(*mut *mut Journal, c_int) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut Journal);
type MatchFn = unsafe extern "C" fn(*mut Journal, *const c_void, usize) -> c_int;
type StepFn = unsafe extern "C" fn(*mut Journal) -> c_int;
type DataFn =
    unsafe extern "C" fn(*mut Journal, *const c_char, *mut *const c_void, *mut usize) -> c_int;
type TimeFn = unsafe extern "C" fn(*mut Journal, *mut u64) -> c_int;

struct Api {
    open: OpenFn,
    close: CloseFn,
    add_match: MatchFn,
    add_disjunction: StepFn,
    seek_tail: StepFn,
    previous: StepFn,
    get_data: DataFn,
    get_realtime_usec: TimeFn,
}

/// `SD_JOURNAL_LOCAL_ONLY | SD_JOURNAL_SYSTEM`: this machine's system journal.
const OPEN_FLAGS: c_int = 1 | 4;

fn load() -> Result<&'static Api, JournalError> {
    static API: std::sync::OnceLock<Result<Api, String>> = std::sync::OnceLock::new();
    API.get_or_init(|| {
        let name = c"libsystemd.so.0";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is never closed, so
        // the function pointers taken from it stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(dl_error());
        }
        let sym = |n: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: a valid handle and symbol name.
            let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
            if p.is_null() {
                Err(format!("no symbol {}", n.to_string_lossy()))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is the documented sd-journal function with exactly the C
        // signature given in `Api` (sd-journal(3)); transmuting a non-null symbol address
        // to a function pointer of that signature is how dlsym is meant to be used.
        unsafe {
            Ok(Api {
                open: std::mem::transmute::<*mut c_void, OpenFn>(sym(c"sd_journal_open")?),
                close: std::mem::transmute::<*mut c_void, CloseFn>(sym(c"sd_journal_close")?),
                add_match: std::mem::transmute::<*mut c_void, MatchFn>(sym(
                    c"sd_journal_add_match",
                )?),
                add_disjunction: std::mem::transmute::<*mut c_void, StepFn>(sym(
                    c"sd_journal_add_disjunction",
                )?),
                seek_tail: std::mem::transmute::<*mut c_void, StepFn>(sym(
                    c"sd_journal_seek_tail",
                )?),
                previous: std::mem::transmute::<*mut c_void, StepFn>(sym(c"sd_journal_previous")?),
                get_data: std::mem::transmute::<*mut c_void, DataFn>(sym(c"sd_journal_get_data")?),
                get_realtime_usec: std::mem::transmute::<*mut c_void, TimeFn>(sym(
                    c"sd_journal_get_realtime_usec",
                )?),
            })
        }
    })
    .as_ref()
    .map_err(|e| JournalError::Load(e.clone()))
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a valid C string owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// An open journal, closed on drop.
struct Handle {
    api: &'static Api,
    j: *mut Journal,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `j` came from a successful sd_journal_open and is closed once.
        unsafe { (self.api.close)(self.j) }
    }
}

impl Handle {
    fn open() -> Result<Handle, JournalError> {
        let api = load()?;
        let mut j: *mut Journal = std::ptr::null_mut();
        // SAFETY: `j` is a valid out pointer.
        let r = unsafe { (api.open)(&mut j, OPEN_FLAGS) };
        check("sd_journal_open", r)?;
        Ok(Handle { api, j })
    }

    fn add_match(&self, m: &str) -> Result<(), JournalError> {
        // SAFETY: the pointer and length describe `m`'s bytes, which sd-journal copies.
        let r = unsafe { (self.api.add_match)(self.j, m.as_ptr().cast(), m.len()) };
        check("sd_journal_add_match", r).map(|_| ())
    }

    fn add_disjunction(&self) -> Result<(), JournalError> {
        // SAFETY: a valid journal.
        check("sd_journal_add_disjunction", unsafe {
            (self.api.add_disjunction)(self.j)
        })
        .map(|_| ())
    }

    /// The value of `field` in the current entry.
    fn field(&self, field: &str) -> Option<Vec<u8>> {
        let name = CString::new(field).ok()?;
        let mut data: *const c_void = std::ptr::null();
        let mut len: usize = 0;
        // SAFETY: valid journal, field name and out pointers; the data returned stays
        // valid until the cursor moves, and is copied before that.
        let r = unsafe { (self.api.get_data)(self.j, name.as_ptr(), &mut data, &mut len) };
        if r < 0 || data.is_null() {
            return None;
        }
        // SAFETY: sd-journal returned `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        // "FIELD=value"
        bytes
            .strip_prefix(field.as_bytes())
            .and_then(|b| b.strip_prefix(b"="))
            .map(<[u8]>::to_vec)
    }

    fn entry(&self) -> Entry {
        let mut usec: u64 = 0;
        // SAFETY: valid journal and out pointer.
        let r = unsafe { (self.api.get_realtime_usec)(self.j, &mut usec) };
        let time = if r >= 0 {
            Utc.timestamp_micros(usec as i64)
                .single()
                .unwrap_or_default()
        } else {
            DateTime::<Utc>::default()
        };
        let text = |f: &str| self.field(f).map(|b| clean(&String::from_utf8_lossy(&b)));
        Entry {
            time,
            identifier: text("SYSLOG_IDENTIFIER")
                .or_else(|| text("_COMM"))
                .unwrap_or_else(|| "?".into()),
            pid: text("_PID"),
            priority: text("PRIORITY").and_then(|p| p.parse().ok()),
            message: text("MESSAGE").unwrap_or_default(),
        }
    }
}

fn check(call: &'static str, r: c_int) -> Result<c_int, JournalError> {
    if r < 0 {
        Err(JournalError::Call { call, errno: -r })
    } else {
        Ok(r)
    }
}

/// Control characters (but tabs) escaped, so a hostile log line cannot hide in a mail.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim_end_matches('\n').chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&c.escape_default().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` entries of `unit` (its processes, and systemd's messages about it), oldest
/// first, as `journalctl -u UNIT -n N` selects them.
pub fn unit_tail(unit: &str, n: usize) -> Result<Vec<Entry>, JournalError> {
    let h = Handle::open()?;
    h.add_match(&format!("_SYSTEMD_UNIT={unit}"))?;
    h.add_disjunction()?;
    h.add_match(&format!("UNIT={unit}"))?;
    h.add_match("_PID=1")?;
    // SAFETY: a valid journal.
    check("sd_journal_seek_tail", unsafe { (h.api.seek_tail)(h.j) })?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // SAFETY: a valid journal.
        let r = check("sd_journal_previous", unsafe { (h.api.previous)(h.j) })?;
        if r == 0 {
            break;
        }
        out.push(h.entry());
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned_and_formatted() {
        assert_eq!(clean("a\x1b[2Jb\tc\n"), "a\\u{1b}[2Jb\tc");
        let e = Entry {
            time: Utc.timestamp_opt(0, 0).unwrap(),
            identifier: "cairn-snapshot".into(),
            pid: Some("42".into()),
            priority: Some(3),
            message: "boom".into(),
        };
        assert!(
            e.line().ends_with(" cairn-snapshot[42]: boom"),
            "{}",
            e.line()
        );
    }

    #[test]
    fn the_api_loads_and_an_unknown_unit_has_no_lines() {
        // libsystemd.so.0 is on every machine these tests run on (systemd is installed).
        match unit_tail("cairn-no-such-unit-7f3a.service", 50) {
            Ok(lines) => assert!(lines.is_empty(), "{lines:?}"),
            // No journal files at all (a build container) is an error from open or
            // an empty result, never a crash.
            Err(JournalError::Call { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
