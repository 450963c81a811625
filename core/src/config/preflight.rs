//! `[preflight]`: which disk the backup goes to and how `cairn-preflight` may heal it.
//!
//! Design: the section states what the right disk *is* (mount point, UUID, LABEL,
//! filesystem type, owner) and what preflight may *do* about it (`auto_mount`,
//! `ensure_fstab`, `fix_owner`). Identity values are checked for shape here (a UUID is
//! hex with dashes, a label has no whitespace or `=` that would break an fstab line);
//! whether a user named in `owner` exists is a run-time question, since `cairn setup`
//! creates the `cairn` user after the file is written. `ensure_fstab` needs a UUID to
//! write `UUID=…`; without one it is a configuration error unless a LABEL lets preflight
//! find the disk and read its UUID.

use std::path::PathBuf;
use std::time::Duration;

use super::value::{parse_duration, parse_size};
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "preflight",
    instances: false,
    keys: &[
        KeySpec::plain("mount"),
        KeySpec::plain("label"),
        KeySpec::plain("uuid"),
        KeySpec::plain("fs_type"),
        KeySpec::plain("owner"),
        KeySpec::plain("fix_owner"),
        KeySpec::plain("auto_mount"),
        KeySpec::plain("ensure_fstab"),
        KeySpec::plain("mount_options"),
        KeySpec::plain("min_free"),
        KeySpec::plain("max_age"),
    ],
    example: "[preflight]\nmount = /srv/backup\nuuid = 0a1b2c3d-4e5f-6789-abcd-ef0123456789\n",
};

/// The mount options preflight writes into a new `/etc/fstab` line: `nofail` so a missing
/// backup disk never blocks boot, a short device timeout for the same reason.
pub const DEFAULT_MOUNT_OPTIONS: &str = "defaults,nofail,x-systemd.device-timeout=30";

/// `[preflight]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightConfig {
    /// The backup disk's mount point (absolute). Required.
    pub mount: PathBuf,
    /// Expected filesystem LABEL.
    pub label: Option<String>,
    /// Expected filesystem UUID, lowercase.
    pub uuid: Option<String>,
    /// Expected filesystem type (`ext4`, `xfs`, `btrfs`…).
    pub fs_type: Option<String>,
    /// Who must own the repository directory.
    pub owner: Option<Owner>,
    /// Change the repository's owner to `owner` when it differs (default no: report only).
    pub fix_owner: bool,
    /// Mount the disk when it is not mounted (default yes).
    pub auto_mount: bool,
    /// Add an `/etc/fstab` line for the disk when none names its UUID or mount point
    /// (default no).
    pub ensure_fstab: bool,
    /// Options of the fstab line that `ensure_fstab` writes.
    pub mount_options: String,
    /// Free space the disk must have.
    pub min_free: Option<MinFree>,
    /// The pipeline must have succeeded within this long, else a STALE alert.
    pub max_age: Option<Duration>,
}

/// `owner = user` or `owner = user:group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// User name or number.
    pub user: String,
    /// Group name or number; `None`: the group is not checked.
    pub group: Option<String>,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// `min_free = 20GiB` or `min_free = 10%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// At least this many bytes available to unprivileged users.
    Bytes(u64),
    /// At least this percentage (0–100) of the filesystem's size available.
    Percent(u8),
}

impl MinFree {
    /// The number of bytes required on a filesystem of `total` bytes.
    pub fn required(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (u128::from(total) * u128::from(p) / 100) as u64,
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Bytes(b) => f.write_str(&super::format_size(*b)),
            MinFree::Percent(p) => write!(f, "{p}%"),
        }
    }
}

pub(crate) fn parse(s: &Section<'_>) -> Result<PreflightConfig, ConfigError> {
    let mount = s.absolute_path("mount")?;
    let mount = s.required("mount", mount, "mount = /srv/backup")?;
    if mount == std::path::Path::new("/") {
        return Err(s.invalid(
            "mount",
            "`/` is the root filesystem, not a backup disk; write the backup disk's own \
             mount point, e.g. `/srv/backup`"
                .to_string(),
        ));
    }
    let uuid = s.parsed("uuid", uuid)?;
    let label = s.parsed("label", label)?;
    let ensure_fstab = s.bool("ensure_fstab", false)?;
    if ensure_fstab && uuid.is_none() && label.is_none() {
        return Err(s.invalid(
            "ensure_fstab",
            "needs the disk's `uuid` (or a `label` to find it by) to write an \
             `UUID=…` line; add `uuid = …` (see `blkid DEVICE`)"
                .to_string(),
        ));
    }
    Ok(PreflightConfig {
        mount,
        label,
        uuid,
        fs_type: s.parsed("fs_type", fs_type)?,
        owner: s.parsed("owner", owner)?,
        fix_owner: s.bool("fix_owner", false)?,
        auto_mount: s.bool("auto_mount", true)?,
        ensure_fstab,
        mount_options: s
            .parsed("mount_options", mount_options)?
            .unwrap_or_else(|| DEFAULT_MOUNT_OPTIONS.to_string()),
        min_free: s.parsed("min_free", min_free)?,
        max_age: s.parsed("max_age", parse_duration)?,
    })
}

/// A filesystem UUID: hex digits and dashes (ext4/xfs/btrfs style, or the 8-digit
/// `XXXX-XXXX` of FAT), stored lowercase.
fn uuid(v: &str) -> Result<String, String> {
    let hex = v.chars().filter(|c| *c != '-').count();
    let ok = (8..=32).contains(&hex)
        && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{v}` is not a filesystem UUID; write it as `blkid DEVICE` shows it, e.g. \
             `0a1b2c3d-4e5f-6789-abcd-ef0123456789`"
        ))
    }
}

/// A filesystem label usable in an fstab line: no whitespace, no `=`, at most 255 bytes.
fn label(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 255 || v.chars().any(|c| c.is_whitespace() || c == '=') {
        Err(format!(
            "`{v}` is not a usable filesystem label; cairn accepts labels without spaces \
             or `=` (relabel with e2label/xfs_admin, or set `uuid` instead)"
        ))
    } else {
        Ok(v.to_string())
    }
}

fn fs_type(v: &str) -> Result<String, String> {
    if !v.is_empty()
        && v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        Ok(v.to_string())
    } else {
        Err(format!(
            "`{v}` is not a filesystem type; write e.g. `ext4`, `xfs` or `btrfs`"
        ))
    }
}

fn owner(v: &str) -> Result<Owner, String> {
    let plain = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
    };
    let (user, group) = match v.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (v, None),
    };
    if plain(user) && group.is_none_or(plain) {
        Ok(Owner {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    } else {
        Err(format!(
            "`{v}` is not an owner; write `USER` or `USER:GROUP`, e.g. `cairn:cairn`"
        ))
    }
}

fn mount_options(v: &str) -> Result<String, String> {
    if v.chars().any(char::is_whitespace) || v.starts_with(',') || v.ends_with(',') {
        Err(format!(
            "`{v}` is not an fstab options field; write comma-separated options without \
             spaces, e.g. `{DEFAULT_MOUNT_OPTIONS}`"
        ))
    } else {
        Ok(v.to_string())
    }
}

fn min_free(v: &str) -> Result<MinFree, String> {
    if let Some(p) = v.strip_suffix('%') {
        return match p.trim().parse::<u8>() {
            Ok(n) if n <= 100 => Ok(MinFree::Percent(n)),
            _ => Err(format!(
                "`{v}` is not a percentage; write a whole number from 0 to 100 followed \
                 by `%`, e.g. `10%`"
            )),
        };
    }
    parse_size(v)
        .map(MinFree::Bytes)
        .map_err(|e| format!("{e}; or write a percentage of the disk, e.g. `10%`"))
}
