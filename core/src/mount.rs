//! The backup disk: is a path a real mount point, which filesystem is behind it, and
//! mounting it.
//!
//! Design: "the directory exists" proves nothing (an unmounted disk leaves an empty
//! directory on the root filesystem), so a mount point is what the kernel's mount table
//! (`/proc/self/mountinfo`) says, and the topmost mount on a path wins, as path lookup
//! does. The filesystem's identity (UUID, LABEL, TYPE) is read from the device itself with
//! libblkid's safe probe, the code blkid(8) uses, not from names or caches; when the
//! device cannot be opened (not root), the udev symlinks in `/dev/disk/by-uuid` and
//! `/dev/disk/by-label` are compared with the mounted device's number instead. Mounting
//! is mount(2) with the options of the fstab line, fstab-only options left out.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique mount id.
    pub mount_id: u32,
    /// The parent mount's id.
    pub parent_id: u32,
    /// Device number (`major`, `minor`) of the filesystem.
    pub dev: (u32, u32),
    /// The directory of the filesystem that is mounted here (`/` unless a bind mount).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Filesystem type (`ext4`).
    pub fs_type: String,
    /// Mount source (`/dev/sdb1`).
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountEntry {
    /// Mounted read-only (per mount or per superblock).
    pub fn read_only(&self) -> bool {
        let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        has_ro(&self.options) || has_ro(&self.super_options)
    }
}

/// Parse the text of a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect()
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u32>().ok();
    let (major, minor) = {
        let s = std::str::from_utf8(fields[2]).ok()?;
        let (a, b) = s.split_once(':')?;
        (a.parse().ok()?, b.parse().ok()?)
    };
    Some(MountEntry {
        mount_id: num(fields[0])?,
        parent_id: num(fields[1])?,
        dev: (major, minor),
        root: PathBuf::from(OsStr::from_bytes(&unescape(fields[3]))),
        mount_point: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
        options: text(fields[5]),
        fs_type: text(fields[sep + 1]),
        source: text(fields[sep + 2]),
        super_options: text(fields[sep + 3]),
    })
}

/// Undo the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`), as
/// mountinfo and fstab(5) write them.
pub(crate) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The kernel's mount table as this process sees it.
pub fn mount_table() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&fs::read("/proc/self/mountinfo")?))
}

/// The mount on `path`, if `path` is a mount point: the topmost one (the last in the
/// table), which is what path lookup reaches. `path` is compared as written and, when it
/// exists, with its symlinks resolved.
pub fn mount_at<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let wanted = normalize(path);
    let resolved = fs::canonicalize(path).ok();
    table.iter().rev().find(|m| {
        let mp = normalize(&m.mount_point);
        mp == wanted || resolved.as_deref() == Some(mp.as_path())
    })
}

/// `path` without a trailing `/` (except for `/` itself) or `.` components.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The mount whose filesystem holds `path` (the longest mount point that is a prefix of
/// it): for messages such as "… is a plain directory on the root filesystem".
pub fn mount_containing<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let wanted = fs::canonicalize(path).unwrap_or_else(|_| normalize(path));
    table
        .iter()
        .rev()
        .filter(|m| wanted.starts_with(normalize(&m.mount_point)))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

/// A filesystem's identity as its superblock records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Filesystem UUID, lowercase.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem type (`ext4`).
    pub fs_type: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());
        write!(
            f,
            "UUID={} LABEL={} TYPE={}",
            show(&self.uuid),
            show(&self.label),
            show(&self.fs_type)
        )
    }
}

/// What the right disk looks like: the configured values; `None` is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// UUID (lowercase).
    pub uuid: Option<String>,
    /// LABEL.
    pub label: Option<String>,
    /// TYPE.
    pub fs_type: Option<String>,
}

impl Expected {
    /// Every way `found` differs from what is expected, one phrase each; empty if it
    /// matches.
    pub fn mismatches(&self, found: &Identity) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, want: &Option<String>, got: &Option<String>, ci: bool| {
            if let Some(want) = want {
                let same = got.as_ref().is_some_and(|g| {
                    if ci {
                        g.eq_ignore_ascii_case(want)
                    } else {
                        g == want
                    }
                });
                if !same {
                    let got = got.as_deref().unwrap_or("none");
                    out.push(format!("{what} is {got}, expected {want}"));
                }
            }
        };
        check("UUID", &self.uuid, &found.uuid, true);
        check("LABEL", &self.label, &found.label, false);
        check("filesystem type", &self.fs_type, &found.fs_type, false);
        out
    }

    /// Whether anything is configured to check.
    pub fn is_empty(&self) -> bool {
        self.uuid.is_none() && self.label.is_none() && self.fs_type.is_none()
    }
}

/// Why identity could not be read or the disk could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// libblkid could not probe the device.
    #[error("cannot read the filesystem identity of {device}: {detail}")]
    Probe {
        /// The device.
        device: PathBuf,
        /// libblkid's error.
        detail: String,
    },
    /// The device holds no recognisable filesystem.
    #[error("{device} holds no filesystem that blkid recognises")]
    NoFilesystem {
        /// The device.
        device: PathBuf,
    },
    /// mount(2) failed.
    #[error("cannot mount {device} on {target}: {source}")]
    Mount {
        /// The device.
        device: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// errno.
        #[source]
        source: io::Error,
    },
}

/// Read the identity of the filesystem on `device` with libblkid's safe probe (needs read
/// access to the device, i.e. root).
pub fn probe(device: &Path) -> Result<Identity, MountError> {
    use libblkid_rs::{BlkidProbe, BlkidSafeprobeRet, BlkidSublks, BlkidSublksFlags};
    let err = |e: libblkid_rs::BlkidErr| MountError::Probe {
        device: device.to_path_buf(),
        detail: e.to_string(),
    };
    let mut probe = BlkidProbe::new_from_filename(device).map_err(err)?;
    probe.enable_superblocks(true).map_err(err)?;
    probe
        .set_superblock_flags(BlkidSublksFlags::new(vec![
            BlkidSublks::Label,
            BlkidSublks::Uuid,
            BlkidSublks::Type,
        ]))
        .map_err(err)?;
    match probe.do_safeprobe().map_err(err)? {
        BlkidSafeprobeRet::Success => {}
        BlkidSafeprobeRet::None => {
            return Err(MountError::NoFilesystem {
                device: device.to_path_buf(),
            })
        }
        BlkidSafeprobeRet::Ambiguous => {
            return Err(MountError::Probe {
                device: device.to_path_buf(),
                detail: "more than one filesystem signature was found (ambiguous)".to_string(),
            })
        }
    }
    let value = |name: &str| probe.lookup_value(name).ok().filter(|v| !v.is_empty());
    Ok(Identity {
        uuid: value("UUID").map(|u| u.to_ascii_lowercase()),
        label: value("LABEL"),
        fs_type: value("TYPE"),
    })
}

/// The block device behind a mount: its source when that is a device node with the
/// mount's device number, else the node named by `/sys/dev/block/MAJ:MIN`.
pub fn device_of(entry: &MountEntry) -> Option<PathBuf> {
    let (major, minor) = entry.dev;
    let matches = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_block_device()
                && rustix::fs::major(m.rdev()) == major
                && rustix::fs::minor(m.rdev()) == minor
        })
    };
    let source = Path::new(&entry.source);
    if entry.source.starts_with("/dev/") && matches(source) {
        return Some(source.to_path_buf());
    }
    let uevent = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let dev = Path::new("/dev").join(name);
    matches(&dev).then_some(dev)
}

/// The identity of a mounted filesystem: probed from its device; when the device cannot
/// be read (not root), from the udev symlinks that point at the mounted device number, and
/// the type from the mount table.
pub fn mounted_identity(entry: &MountEntry) -> Result<Identity, MountError> {
    let device = device_of(entry);
    if let Some(dev) = &device {
        match probe(dev) {
            Ok(id) => return Ok(id),
            Err(e) if !rustix::process::geteuid().is_root() => {
                crate::stage::log(
                    crate::stage::Priority::Debug,
                    &format!("{e}; using /dev/disk symlinks instead"),
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Identity {
        uuid: udev_name_for("/dev/disk/by-uuid", entry.dev).map(|u| u.to_ascii_lowercase()),
        label: udev_name_for("/dev/disk/by-label", entry.dev).map(|l| udev_unescape(&l)),
        fs_type: Some(entry.fs_type.clone()),
    })
}

/// The name of the symlink in `dir` that resolves to the device number `dev`.
fn udev_name_for(dir: &str, dev: (u32, u32)) -> Option<String> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        if let Ok(m) = fs::metadata(entry.path()) {
            if rustix::fs::major(m.rdev()) == dev.0 && rustix::fs::minor(m.rdev()) == dev.1 {
                return Some(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// udev writes `\x20` for a space in by-label names.
fn udev_unescape(name: &str) -> String {
    let mut out = Vec::new();
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device holding the filesystem with this UUID, else this LABEL (libblkid's
/// evaluation: udev symlinks, then a scan of the block devices). No cache file is read or
/// written, so a stale cache cannot name the wrong disk; callers still probe the result.
pub fn find_device(uuid: Option<&str>, label: Option<&str>) -> Option<PathBuf> {
    let tags = [("UUID", uuid), ("LABEL", label)];
    for (tag, value) in tags {
        let Some(value) = value else { continue };
        let mut cache = libblkid_rs::BlkidCache::get_cache(Some(Path::new("/dev/null"))).ok();
        if let Ok(dev) = libblkid_rs::evaluate_tag(tag, value, cache.as_mut()) {
            return Some(dev);
        }
    }
    None
}

/// Flags and data for mount(2) from fstab options: generic options become flags,
/// options that only fstab or mount(8) understand are dropped, the rest are passed to the
/// filesystem.
pub fn mount_flags(options: &str) -> (rustix::mount::MountFlags, String) {
    use rustix::mount::MountFlags as F;
    let mut flags = F::empty();
    let mut data = Vec::new();
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= F::RDONLY,
            "rw" => flags.remove(F::RDONLY),
            "nosuid" => flags |= F::NOSUID,
            "nodev" => flags |= F::NODEV,
            "noexec" => flags |= F::NOEXEC,
            "noatime" => flags |= F::NOATIME,
            "nodiratime" => flags |= F::NODIRATIME,
            "relatime" => flags |= F::RELATIME,
            "strictatime" => flags |= F::STRICTATIME,
            "sync" => flags |= F::SYNCHRONOUS,
            "dirsync" => flags |= F::DIRSYNC,
            "lazytime" => flags |= F::LAZYTIME,
            "defaults" | "auto" | "noauto" | "nofail" | "user" | "nouser" | "users" | "owner"
            | "group" | "_netdev" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime" => {}
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o => data.push(o),
        }
    }
    (flags, data.join(","))
}

/// mount(2) `device` on `target` as `fs_type` with fstab-style `options`.
pub fn mount_device(
    device: &Path,
    target: &Path,
    fs_type: &str,
    options: &str,
) -> Result<(), MountError> {
    let (flags, data) = mount_flags(options);
    let data = std::ffi::CString::new(data).unwrap_or_default();
    rustix::mount::mount(device, target, fs_type, flags, data.as_c_str()).map_err(|e| {
        MountError::Mount {
            device: device.to_path_buf(),
            target: target.to_path_buf(),
            source: e.into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
35 22 0:30 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
90 22 7:3 / /srv/backup rw,relatime shared:40 - ext4 /dev/loop3 rw
91 22 7:4 / /mnt/my\\040disk ro,relatime shared:41 - xfs /dev/loop4 rw,attr2
92 90 7:5 / /srv/backup rw,relatime shared:42 - xfs /dev/loop5 rw
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[2].dev, (7, 3));
        assert_eq!(t[2].source, "/dev/loop3");
        assert_eq!(t[2].fs_type, "ext4");
        assert_eq!(t[3].mount_point, Path::new("/mnt/my disk"));
        assert!(t[3].read_only());
        assert!(!t[2].read_only());
    }

    #[test]
    fn topmost_mount_wins_and_plain_directories_are_not_mounts() {
        let t = parse_mountinfo(SAMPLE);
        let m = mount_at(&t, Path::new("/srv/backup/")).unwrap();
        assert_eq!(
            m.source, "/dev/loop5",
            "the later mount hides the earlier one"
        );
        assert!(mount_at(&t, Path::new("/srv")).is_none());
        assert!(mount_at(&t, Path::new("/nonexistent/dir")).is_none());
        let c = mount_containing(&t, Path::new("/nonexistent/dir")).unwrap();
        assert_eq!(c.mount_point, Path::new("/"));
    }

    #[test]
    fn mismatches_name_each_difference() {
        let want = Expected {
            uuid: Some("aaaa-bbbb".into()),
            label: Some("BACKUP".into()),
            fs_type: Some("ext4".into()),
        };
        let same = Identity {
            uuid: Some("AAAA-BBBB".into()),
            label: Some("BACKUP".into()),
            fs_type: Some("ext4".into()),
        };
        assert!(want.mismatches(&same).is_empty());
        let other = Identity {
            uuid: Some("cccc-dddd".into()),
            label: None,
            fs_type: Some("xfs".into()),
        };
        let m = want.mismatches(&other);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("cccc-dddd") && m[0].contains("aaaa-bbbb"));
        assert!(m[1].contains("LABEL is none"));
    }

    #[test]
    fn fstab_options_become_flags_and_data() {
        use rustix::mount::MountFlags as F;
        let (f, d) =
            mount_flags("defaults,nofail,x-systemd.device-timeout=30,noatime,errors=remount-ro");
        assert_eq!(f, F::NOATIME);
        assert_eq!(d, "errors=remount-ro");
        let (f, d) = mount_flags("ro,nosuid,nodev");
        assert_eq!(f, F::RDONLY | F::NOSUID | F::NODEV);
        assert_eq!(d, "");
    }

    #[test]
    fn udev_label_escapes() {
        assert_eq!(udev_unescape("my\\x20disk"), "my disk");
        assert_eq!(udev_unescape("plain"), "plain");
    }
}
