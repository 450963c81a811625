//! Small helpers shared across modules: host name, byte formatting, path bytes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// This machine's host name (lossy UTF-8), or "localhost" if it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|| "localhost".into())
}

/// Human-readable byte count with binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bytes of a path or name, shown to people (non-UTF-8 bytes escaped as \xNN).
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A time as a POSIX decimal number of seconds ("-0.900000000" for 0.9 s before the
/// epoch), as pax `mtime` records and JSON output use it.
pub fn decimal_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

static ZEROS: [u8; 65536] = [0; 65536];

/// Feed zeros to `hasher` until the logical position `*pos` reaches `to` (holes of a
/// sparse file hash as zeros).
pub fn hash_zeros(hasher: &mut blake3::Hasher, pos: &mut u64, to: u64) {
    while *pos < to {
        let n = (to - *pos).min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        *pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn show_escapes_invalid_utf8_and_controls() {
        assert_eq!(super::show(b"caf\xe9\n"), "caf\\xe9\\n");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::decimal_time(-1, 100_000_000), "-0.900000000");
        assert_eq!(super::decimal_time(-2, 0), "-2.000000000");
        assert_eq!(super::decimal_time(5, 7), "5.000000007");
    }
}

/// A duration for humans, in its two largest units: `3d 4h`, `2h 5min`, `40s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}min {secs}s"),
        (0, h, m) => format!("{h}h {m}min"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn human_durations() {
        use std::time::Duration;
        assert_eq!(super::human_duration(Duration::from_secs(40)), "40s");
        assert_eq!(super::human_duration(Duration::from_secs(125)), "2min 5s");
        assert_eq!(super::human_duration(Duration::from_secs(7500)), "2h 5min");
        assert_eq!(
            super::human_duration(Duration::from_secs(16 * 86_400 + 3600)),
            "16d 1h"
        );
    }
}
