//! `/etc/fstab`: find the backup disk's line, and add one safely when it is missing.
//!
//! Design: a broken fstab can stop a machine from booting, so cairn never edits it in
//! place. The new content (the old bytes untouched, plus one commented line) is written
//! to a temporary file beside it and checked with `findmnt --verify --tab-file`; only if
//! that finds no error the old file does not already have is the temporary file fsynced
//! and renamed over `/etc/fstab`. Before that, a timestamped copy of the original is kept
//! next to it. A failed check leaves `/etc/fstab` byte for byte as it was. Reading
//! follows fstab(5): whitespace-separated fields, `#` comments, `\040`-style octal escapes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The system's fstab.
pub const FSTAB: &str = "/etc/fstab";

/// One non-comment line of an fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// 1-based line number.
    pub line: usize,
    /// First field: `UUID=…`, `LABEL=…`, `/dev/sdb1`.
    pub spec: String,
    /// Second field: the mount point, unescaped.
    pub target: String,
    /// Third field.
    pub fs_type: String,
    /// Fourth field.
    pub options: String,
}

/// The lines of an fstab, comments and blank lines left out.
pub fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let spec = unescape(f.next()?);
            let target = unescape(f.next()?);
            Some(FstabEntry {
                line: i + 1,
                spec,
                target,
                fs_type: f.next().map(unescape).unwrap_or_default(),
                options: f.next().map(unescape).unwrap_or_default(),
            })
        })
        .collect()
}

/// The first line that mounts the filesystem with this UUID or anything on this mount
/// point.
pub fn find_entry<'a>(
    entries: &'a [FstabEntry],
    uuid: Option<&str>,
    mount: &Path,
) -> Option<&'a FstabEntry> {
    let mount = mount.to_string_lossy();
    let mount = mount.trim_end_matches('/');
    entries.iter().find(|e| {
        let by_uuid = uuid.is_some_and(|u| {
            let spec = e.spec.trim_matches('"');
            spec.strip_prefix("UUID=")
                .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
                .is_some_and(|s| s.trim_matches('"').eq_ignore_ascii_case(u))
        });
        by_uuid || e.target.trim_end_matches('/') == mount
    })
}

/// Whether `entry` (found by its mount point) names a disk other than the one with this
/// UUID (or LABEL): `UUID=`/`LABEL=`/`PARTUUID=` specs that differ. A device path
/// (`/dev/sdb1`) cannot be judged from the text and counts as the same.
pub fn names_other_disk(entry: &FstabEntry, uuid: &str, label: Option<&str>) -> bool {
    let spec = entry.spec.trim_matches('"');
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return !u.trim_matches('"').eq_ignore_ascii_case(uuid);
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return label != Some(l.trim_matches('"'));
    }
    spec.starts_with("PARTUUID=") || spec.starts_with("PARTLABEL=")
}

/// The line `ensure` appends: `UUID=… PATH TYPE OPTIONS 0 2`, the path escaped.
pub fn line_for(uuid: &str, mount: &Path, fs_type: &str, options: &str) -> String {
    format!(
        "UUID={uuid} {} {fs_type} {options} 0 2",
        escape(&mount.to_string_lossy())
    )
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FstabChange {
    /// A line for the disk is already there (its line number).
    Present(FstabEntry),
    /// Dry run: this line would be appended.
    WouldAppend(String),
    /// The line was appended; the original was saved as `backup`.
    Appended {
        /// The line added.
        line: String,
        /// The copy of the original fstab.
        backup: PathBuf,
    },
}

/// Why the fstab could not be updated. `/etc/fstab` is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum FstabError {
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// findmnt could not be run.
    #[error("cannot run findmnt to check the new {path} (install util-linux): {source}")]
    Findmnt {
        /// The fstab.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The new content failed validation.
    #[error(
        "adding `{line}` to {path} would make it invalid, so {path} was left as it was; \
         findmnt --verify said: {errors}"
    )]
    Invalid {
        /// The fstab.
        path: PathBuf,
        /// The line that was to be added.
        line: String,
        /// findmnt's new errors.
        errors: String,
    },
}

/// Make sure `fstab` has a line for the disk (`uuid`, mounted on `mount`); append
/// `line_for(…)` if not, validated as the module documentation says.
pub fn ensure(
    fstab: &Path,
    uuid: &str,
    mount: &Path,
    fs_type: &str,
    options: &str,
    dry_run: bool,
) -> Result<FstabChange, FstabError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| FstabError::Io { what, path, source }
    };
    let original = match fs::read(fstab) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err("cannot read", fstab)(e)),
    };
    let text = String::from_utf8_lossy(&original);
    let entries = parse(&text);
    if let Some(e) = find_entry(&entries, Some(uuid), mount) {
        return Ok(FstabChange::Present(e.clone()));
    }
    let line = line_for(uuid, mount, fs_type, options);
    if dry_run {
        return Ok(FstabChange::WouldAppend(line));
    }

    let now = chrono::Utc::now();
    let mut new = original.clone();
    if !new.is_empty() && !new.ends_with(b"\n") {
        new.push(b'\n');
    }
    new.extend_from_slice(
        format!(
            "# the backup disk of cairn, added by cairn on {}\n{line}\n",
            now.format("%Y-%m-%d")
        )
        .as_bytes(),
    );

    let dir = fstab.parent().unwrap_or(Path::new("/"));
    let name = fstab
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fstab".to_string());
    let mode = fs::metadata(fstab)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);

    // The candidate, beside the real file so the rename is atomic.
    let tmp = dir.join(format!(".{name}.cairn-new.{}", std::process::id()));
    let write_tmp = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(&new)?;
        f.sync_all()
    };
    let _ = fs::remove_file(&tmp);
    write_tmp().map_err(io_err("cannot write", &tmp))?;

    let check = (|| {
        let before = verify_errors(fstab, &original)?;
        let after = verify_errors(&tmp, &new)?;
        let added: Vec<String> = after.into_iter().filter(|e| !before.contains(e)).collect();
        Ok::<_, FstabError>(added)
    })();
    let added = match check {
        Ok(a) => a,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if !added.is_empty() {
        let _ = fs::remove_file(&tmp);
        return Err(FstabError::Invalid {
            path: fstab.to_path_buf(),
            line,
            errors: added.join("; "),
        });
    }

    let backup = dir.join(format!("{name}.cairn-{}", now.format("%Y%m%dT%H%M%SZ")));
    let saved = crate::atomic::write_atomic(&backup, &original, mode);
    if let Err(e) = saved {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot save a copy of the original as", &backup)(e));
    }
    if let Err(e) = fs::rename(&tmp, fstab) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot replace", fstab)(e));
    }
    crate::atomic::sync_dir(dir).map_err(io_err("cannot sync", dir))?;
    Ok(FstabChange::Appended { line, backup })
}

/// The error lines (`[E] …`, parse errors) `findmnt --verify` reports for a file, each
/// with the target it is about. An empty file has none.
fn verify_errors(path: &Path, content: &[u8]) -> Result<Vec<String>, FstabError> {
    if content.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let out = Command::new("findmnt")
        .arg("--verify")
        .arg("--tab-file")
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| FstabError::Findmnt {
            path: path.to_path_buf(),
            source,
        })?;
    let mut errors = Vec::new();
    let mut target = String::new();
    let all = [out.stdout, out.stderr].concat();
    for l in String::from_utf8_lossy(&all).lines() {
        let t = l.trim();
        if let Some(e) = t.strip_prefix("[E]") {
            errors.push(format!("{target}: {}", e.trim()));
        } else if t.contains("parse error") && !t.starts_with(|c: char| c.is_ascii_digit()) {
            // "findmnt: FILE: parse error at line N -- ignored": drop the file name,
            // which differs between the original and the candidate.
            let msg = t.split_once("parse error").map_or(t, |(_, r)| r);
            errors.push(format!("parse error{msg}"));
        } else if !l.starts_with(' ') && !t.is_empty() && !t.contains("errors") {
            target = t.to_string();
        }
    }
    Ok(errors)
}

/// fstab(5) escapes: space, tab, newline and backslash as octal.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// fstab uses the same octal escapes as the kernel's mount table.
fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&crate::mount::unescape(s.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# /etc/fstab
UUID=1111-2222 / ext4 errors=remount-ro 0 1
  LABEL=data /srv/my\\040data xfs defaults 0 2

/dev/disk/by-uuid/ABCD-0001 /boot/efi vfat umask=0077 0 1
";

    #[test]
    fn parses_and_finds_by_uuid_or_target() {
        let e = parse(SAMPLE);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].target, "/srv/my data");
        assert_eq!(e[1].line, 3);
        assert_eq!(
            find_entry(&e, Some("abcd-0001"), Path::new("/x")).map(|e| e.line),
            Some(5)
        );
        assert_eq!(
            find_entry(&e, Some("9999"), Path::new("/srv/my data/")).map(|e| e.line),
            Some(3)
        );
        assert!(find_entry(&e, Some("9999"), Path::new("/srv/backup")).is_none());
    }

    #[test]
    fn another_disk_on_the_same_mount_point_is_noticed() {
        let e = |spec: &str| FstabEntry {
            line: 1,
            spec: spec.into(),
            target: "/srv/backup".into(),
            fs_type: "ext4".into(),
            options: "defaults".into(),
        };
        assert!(!names_other_disk(&e("UUID=AB-CD"), "ab-cd", None));
        assert!(names_other_disk(&e("UUID=ff-00"), "ab-cd", None));
        assert!(!names_other_disk(&e("LABEL=BKP"), "ab-cd", Some("BKP")));
        assert!(names_other_disk(&e("LABEL=OLD"), "ab-cd", Some("BKP")));
        assert!(!names_other_disk(&e("/dev/sdb1"), "ab-cd", None));
    }

    #[test]
    fn line_escapes_the_mount_point() {
        assert_eq!(
            line_for("u-1", Path::new("/srv/my disk"), "ext4", "defaults,nofail"),
            "UUID=u-1 /srv/my\\040disk ext4 defaults,nofail 0 2"
        );
        let back = parse(&line_for("u-1", Path::new("/a b\\c"), "ext4", "d"));
        assert_eq!(back[0].target, "/a b\\c");
    }

    #[test]
    fn an_existing_line_is_left_alone_and_dry_run_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("fstab");
        fs::write(&f, SAMPLE).unwrap();
        let r = ensure(
            &f,
            "1111-2222",
            Path::new("/elsewhere"),
            "ext4",
            "defaults",
            false,
        );
        assert!(
            matches!(r, Ok(FstabChange::Present(ref e)) if e.line == 2),
            "{r:?}"
        );
        let r = ensure(
            &f,
            "9999",
            Path::new("/srv/backup"),
            "ext4",
            "defaults",
            true,
        )
        .unwrap();
        assert_eq!(
            r,
            FstabChange::WouldAppend("UUID=9999 /srv/backup ext4 defaults 0 2".into())
        );
        assert_eq!(fs::read_to_string(&f).unwrap(), SAMPLE);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no file left behind"
        );
    }

    #[test]
    fn an_invalid_result_leaves_the_file_byte_for_byte() {
        // The target does not exist and the UUID names no device: findmnt --verify
        // reports errors the original does not have.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("fstab");
        let original = b"# nothing here\n#no newline at the end";
        fs::write(&f, original).unwrap();
        let missing = d.path().join("no-such-dir");
        let r = ensure(
            &f,
            "deadbeef-0000-0000-0000-000000000000",
            &missing,
            "ext4",
            "defaults",
            false,
        );
        match r {
            Err(FstabError::Invalid { errors, .. }) => {
                assert!(errors.contains("no-such-dir"), "{errors}")
            }
            other => panic!("expected a validation failure, got {other:?}"),
        }
        assert_eq!(fs::read(&f).unwrap(), original);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp or backup left"
        );
    }
}
