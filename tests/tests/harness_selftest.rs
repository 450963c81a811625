//! Self-tests of the test-support modules for the preflight and alert tests:
//! [`cairn_tests::disk`] (real ext4/xfs filesystems on loop devices),
//! [`cairn_tests::nsrun`] (a private mount namespace with an overlay
//! `/etc`) and [`cairn_tests::mta`] (real local delivery through exim4).
//!
//! Each test checks what the harness promises by looking at it with an
//! independent tool (`blkid -p`, the host's `/proc/self/mountinfo`, the
//! host's `/etc/fstab` bytes, `/sys/block/loopN`), so a broken helper fails
//! here rather than in the preflight tests. Tests that need root, loop
//! devices or exim print `SKIPPED: …` and return where those are missing;
//! the parser tests need nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_tests::disk::{self, Disk, Fs};
use cairn_tests::mta::{self, Mta};
use cairn_tests::nsrun::{self, ChangeKind, EtcChange, Ns};

fn skip_unless(r: Result<(), String>) -> bool {
    match r {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn blkid_p(dev: &Path) -> String {
    let o = Command::new("blkid").arg("-p").arg(dev).output().unwrap();
    assert!(
        o.status.success(),
        "blkid -p {}: {}",
        dev.display(),
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The image file a loop device is attached to, if any.
fn loop_backing_file(dev: &Path) -> Option<String> {
    let name = dev.file_name()?.to_str()?;
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn disk_carries_label_and_uuid(fs: Fs, mib: u64) {
    if skip_unless(disk::available(&[fs])) {
        return;
    }
    let label = &disk::unique_label("cairn-bk", fs);
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let uuid = disk::random_uuid();
    let d = Disk::create_attached(tmp.path(), fs, mib, label, &uuid).unwrap();
    assert_eq!(d.fs(), fs);
    assert_eq!(d.label(), label);
    assert_eq!(d.uuid(), uuid);
    assert!(
        d.device().to_str().unwrap().starts_with("/dev/loop"),
        "{:?}",
        d.device()
    );
    assert_eq!(
        loop_backing_file(d.device()).as_deref(),
        Some(d.image().to_str().unwrap())
    );
    let out = blkid_p(d.device());
    for want in [
        format!("LABEL=\"{label}\""),
        format!("UUID=\"{uuid}\""),
        format!("TYPE=\"{}\"", fs.name()),
    ] {
        assert!(out.contains(&want), "blkid -p lacks {want}: {out}");
    }
    let p = d.probe().unwrap();
    assert_eq!(p.get("LABEL").map(String::as_str), Some(label.as_str()));
    assert_eq!(p.get("UUID").map(String::as_str), Some(uuid.as_str()));
    assert_eq!(p.get("TYPE").map(String::as_str), Some(fs.name()));

    // Drop detaches the device and deletes the image.
    let (dev, image) = (d.device().to_path_buf(), d.image().to_path_buf());
    drop(d);
    assert_ne!(
        loop_backing_file(&dev).as_deref(),
        Some(image.to_str().unwrap()),
        "{} still attached after drop",
        dev.display()
    );
    assert!(!image.exists(), "{} left behind", image.display());
}

#[test]
fn ext4_disk_carries_its_label_and_uuid() {
    disk_carries_label_and_uuid(Fs::Ext4, 16);
}

#[test]
fn xfs_disk_carries_its_label_and_uuid() {
    disk_carries_label_and_uuid(Fs::Xfs, Fs::Xfs.min_size_mib());
}

#[test]
fn disk_rejects_bad_parameters() {
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let u = "0b0e7a1c-5d3f-4a7e-9c1b-2f8e6d4c3a21";
    let e = Disk::create(tmp.path(), Fs::Xfs, 64, "x", u).unwrap_err();
    assert!(format!("{e}").contains("300"), "{e}");
    let e = Disk::create(tmp.path(), Fs::Xfs, 300, "thirteen-char", u).unwrap_err();
    assert!(format!("{e}").contains("12"), "{e}");
    let e = Disk::create(tmp.path(), Fs::Ext4, 16, "x", "not-a-uuid").unwrap_err();
    assert!(format!("{e}").contains("UUID"), "{e}");
    for fs in [Fs::Ext4, Fs::Xfs] {
        let a = disk::unique_label("a-long-prefix-for-labels", fs);
        let b = disk::unique_label("a-long-prefix-for-labels", fs);
        assert_eq!(a.len(), fs.max_label_len(), "{a}");
        assert!(a.starts_with("a-lo"), "{a}");
        assert_ne!(a, b);
    }
}

#[test]
fn read_only_mount_refuses_writes() {
    if skip_unless(disk::available(&[Fs::Ext4])) {
        return;
    }
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let mut d =
        Disk::create_attached(tmp.path(), Fs::Ext4, 16, "ro-test", &disk::random_uuid()).unwrap();
    d.mount(&mnt, false).unwrap();
    assert!(nsrun::host_is_mounted(&mnt).unwrap());
    std::fs::write(mnt.join("before"), b"written while rw").unwrap();
    d.umount(&mnt).unwrap();
    assert!(!nsrun::host_is_mounted(&mnt).unwrap());
    assert!(d.mounts().is_empty());

    d.mount(&mnt, true).unwrap();
    assert_eq!(
        std::fs::read(mnt.join("before")).unwrap(),
        b"written while rw"
    );
    let e = std::fs::write(mnt.join("after"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::remove_file(mnt.join("before")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // Drop unmounts (lazily) and detaches.
    drop(d);
    assert!(!nsrun::host_is_mounted(&mnt).unwrap());
}

fn fill_leaves_less_than_the_limit_free(fs: Fs, mib: u64) {
    if skip_unless(disk::available(&[fs])) {
        return;
    }
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let mut d = Disk::create_attached(
        tmp.path(),
        fs,
        mib,
        &disk::unique_label("fill", fs),
        &disk::random_uuid(),
    )
    .unwrap();
    d.mount(&mnt, false).unwrap();
    let limit = 3 << 20;
    let before = disk::free_bytes(&mnt).unwrap();
    assert!(
        before > 20 << 20,
        "a fresh {mib} MiB {fs} disk has {before} bytes free"
    );
    let filler = disk::fill_until_free_below(&mnt, limit).unwrap();
    let after = disk::free_bytes(&mnt).unwrap();
    assert!(after < limit, "{after} bytes free, limit {limit}");
    assert!(after > 0, "the disk should not be filled to the last block");
    // Whatever df says agrees.
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&mnt)
        .output()
        .unwrap();
    let df: u64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(df < limit, "df says {df} available");
    std::fs::remove_file(filler).unwrap();
    // xfs frees an unlinked file's blocks in the background: poll.
    let dir = std::fs::File::open(&mnt).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut free = 0;
    while std::time::Instant::now() < deadline {
        rustix::fs::syncfs(&dir).unwrap();
        free = disk::free_bytes(&mnt).unwrap();
        if free > 20 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        free > 20 << 20,
        "{free} bytes free after deleting the filler"
    );
}

#[test]
fn fill_leaves_less_than_the_limit_free_on_ext4() {
    fill_leaves_less_than_the_limit_free(Fs::Ext4, 32);
}

#[test]
fn fill_leaves_less_than_the_limit_free_on_xfs() {
    fill_leaves_less_than_the_limit_free(Fs::Xfs, Fs::Xfs.min_size_mib());
}

#[test]
fn nsrun_overlay_lets_a_command_rename_over_fstab_and_the_host_stays_the_same() {
    if skip_unless(nsrun::available()) {
        return;
    }
    let host_fstab = std::fs::read("/etc/fstab").ok();
    let host_md = std::fs::metadata("/etc/fstab").ok();
    let seed = b"# seeded by the test\nLABEL=old /srv/backup ext4 defaults 0 2\n";
    let ns = Ns::builder()
        .etc_file("fstab", seed)
        .etc_absent("hostname")
        .start()
        .unwrap();
    assert_eq!(ns.read("/etc/fstab").unwrap(), seed);
    let o = ns.run("cat", ["/etc/fstab"]).unwrap();
    assert_eq!(o.stdout, seed, "{}", text(&o));
    assert!(Path::new("/etc/hostname").exists());
    assert!(
        !ns.exists("/etc/hostname"),
        "the whiteout hides /etc/hostname"
    );
    let o = ns.sh("test ! -e /etc/hostname").unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // A command that only reads leaves the file as it was.
    let before = ns.file_state("/etc/fstab").unwrap().unwrap();
    let o = ns.run("grep", ["-q", "LABEL=old", "/etc/fstab"]).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ns.file_state("/etc/fstab").unwrap().unwrap(), before);

    // Atomic rewrites: temp file + rename(2), as cairn does, in /etc and in
    // a directory of /etc the host may not even have.
    let new = "LABEL=cairn-backup /srv/backup ext4 nofail 0 2\n";
    let o = ns
        .sh(&format!(
            "set -e; printf '%s' '{new}' > /etc/.fstab.tmp && sync /etc/.fstab.tmp && mv -T /etc/.fstab.tmp /etc/fstab
             mkdir -p /etc/sudoers.d
             printf 'cairn ALL=(root) NOPASSWD: /bin/true\\n' > /etc/sudoers.d/.cairn.tmp
             chmod 0440 /etc/sudoers.d/.cairn.tmp && mv -T /etc/sudoers.d/.cairn.tmp /etc/sudoers.d/cairn-test-nsrun"
        ))
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let after = ns.file_state("/etc/fstab").unwrap().unwrap();
    assert_ne!(after.ino, before.ino, "a rename gives a new inode");
    assert_ne!(after, before);
    assert_eq!(after.contents, new.as_bytes());
    assert_eq!(
        ns.run("cat", ["/etc/fstab"]).unwrap().stdout,
        new.as_bytes()
    );
    let sudo = ns
        .file_state("/etc/sudoers.d/cairn-test-nsrun")
        .unwrap()
        .unwrap();
    assert_eq!(sudo.mode & 0o7777, 0o440);

    // The upper dir holds what was written, and only that.
    let changes = ns.etc_changes().unwrap();
    let has = |p: &str, kind| {
        changes.contains(&EtcChange {
            path: p.into(),
            kind,
        })
    };
    assert!(has("fstab", ChangeKind::Written), "{changes:?}");
    assert!(has("hostname", ChangeKind::Deleted), "{changes:?}");
    assert!(
        has("sudoers.d/cairn-test-nsrun", ChangeKind::Written),
        "{changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.path.to_string_lossy().contains(".tmp")),
        "{changes:?}"
    );
    assert_eq!(
        std::fs::read(ns.upper_dir().join("fstab")).unwrap(),
        new.as_bytes()
    );

    // The host's files are untouched, byte for byte and inode for inode.
    assert_eq!(std::fs::read("/etc/fstab").ok(), host_fstab);
    let md = std::fs::metadata("/etc/fstab").ok();
    assert_eq!(
        md.as_ref().map(|m| (m.ino(), m.mtime(), m.mtime_nsec())),
        host_md
            .as_ref()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
    );
    assert!(!Path::new("/etc/sudoers.d/cairn-test-nsrun").exists());
    assert!(!Path::new("/etc/.fstab.tmp").exists());
    ns.close().unwrap();
    assert_eq!(std::fs::read("/etc/fstab").ok(), host_fstab);
}

#[test]
fn a_mount_made_in_the_namespace_is_not_on_the_host_and_ends_with_it() {
    if skip_unless(nsrun::available()) || skip_unless(disk::available(&[Fs::Ext4])) {
        return;
    }
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let mnt = tmp.path().join("backup");
    std::fs::create_dir(&mnt).unwrap();
    // The disk is declared before the namespace, so it outlives it.
    let label = disk::unique_label("ns", Fs::Ext4);
    let mut d =
        Disk::create_attached(tmp.path(), Fs::Ext4, 16, &label, &disk::random_uuid()).unwrap();
    let dev = d.device().to_path_buf();
    let ns = Ns::start().unwrap();
    // Mounted by label from the namespace's fstab, as preflight would.
    ns.write(
        "/etc/fstab",
        format!("LABEL={label} {} ext4 defaults 0 2\n", mnt.display()),
    )
    .unwrap();
    let o = ns.run("mount", [&mnt]).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Several commands, one namespace: a later one sees the mount.
    let o = ns
        .run(
            "findmnt",
            ["-n", "-o", "SOURCE,FSTYPE", mnt.to_str().unwrap()],
        )
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains(dev.to_str().unwrap()) && shown.contains("ext4"),
        "{shown}"
    );
    assert!(ns.is_mounted(&mnt).unwrap());
    // Current directory carried into the namespace, so relative paths work.
    let o = ns
        .command("sh")
        .args(["-c", "touch ./written-inside && pwd"])
        .current_dir(&mnt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        mnt.to_str().unwrap()
    );
    assert!(ns.path(mnt.join("written-inside")).exists());

    // The host sees nothing of it.
    assert!(!nsrun::host_is_mounted(&mnt).unwrap());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(mnt.to_str().unwrap()), "{info}");
    assert!(!mnt.join("written-inside").exists());

    // When the namespace ends, so does the mount: the device is free again.
    ns.close().unwrap();
    d.detach().unwrap();
    assert_ne!(
        loop_backing_file(&dev).as_deref(),
        Some(d.image().to_str().unwrap()),
        "{} is still attached: the namespace's mount outlived it",
        dev.display()
    );
}

#[test]
fn host_test_mounts_stay_outside_the_namespace_unless_kept() {
    if skip_unless(nsrun::available()) || skip_unless(disk::available(&[Fs::Ext4])) {
        return;
    }
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    let mnt = tmp.path().join("hostmnt");
    let mut d = Disk::create_attached(
        tmp.path(),
        Fs::Ext4,
        16,
        &disk::unique_label("host", Fs::Ext4),
        &disk::random_uuid(),
    )
    .unwrap();
    d.mount(&mnt, false).unwrap();
    std::fs::write(mnt.join("on-the-disk"), b"x").unwrap();
    // As another test's namespace would: it holds no copy of this mount...
    let ns = Ns::start().unwrap();
    assert!(!ns.is_mounted(&mnt).unwrap(), "{}", ns.mountinfo().unwrap());
    assert!(!ns.path(mnt.join("on-the-disk")).exists());
    // ...so this test can unmount and mount read-only meanwhile.
    d.umount(&mnt).unwrap();
    d.mount(&mnt, true).unwrap();
    let kept = Ns::builder().keep_host_mount(&mnt).start().unwrap();
    assert!(
        kept.is_mounted(&mnt).unwrap(),
        "{}",
        kept.mountinfo().unwrap()
    );
    assert!(kept.path(mnt.join("on-the-disk")).exists());
    let o = kept
        .run("test", ["-f".as_ref(), mnt.join("on-the-disk").as_os_str()])
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    drop(kept);
    drop(ns);
}

#[test]
fn nsrun_drop_kills_processes_left_in_the_namespace() {
    if skip_unless(nsrun::available()) {
        return;
    }
    let ns = Ns::start().unwrap();
    let mut child = ns
        .command("sleep")
        .arg("60")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let e = ns.close().unwrap_err();
    assert!(format!("{e}").contains(&child.id().to_string()), "{e}");
    let status = child.wait().unwrap();
    assert!(!status.success(), "sleep should have been killed: {status}");
}

#[test]
fn mountinfo_escapes_are_undone() {
    let line = "44 27 0:39 / /tmp/with\\040space\\011tab rw,relatime - tmpfs none rw\n\
                45 27 0:40 / /plain rw - tmpfs none rw\n";
    let pts = nsrun::mount_points_of(line);
    assert_eq!(
        pts,
        vec![
            std::path::PathBuf::from("/tmp/with space\ttab"),
            std::path::PathBuf::from("/plain")
        ]
    );
}

#[test]
fn mail_sent_through_sendmail_is_found_and_other_tokens_are_not() {
    if skip_unless(Mta::available()) {
        return;
    }
    let mbox = Mta::mailbox().unwrap();
    let mine = mta::token("selftest-mine");
    let other = mta::token("selftest-other");
    let never = mta::token("selftest-never");
    // Quoted-printable body, RFC 2047 subject: as lettre may write them.
    let qp = format!(
        "To: {addr}\nFrom: cairn <root@localhost>\nSubject: =?utf-8?Q?cairn_preflight_f=C3=A4iled?= {mine}\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\n\
         Backup disk m=C3=BCssing: {mine}=\n continues\nFrom here on a line that mbox escapes\n",
        addr = mbox.address()
    );
    // A base64 multipart message for the other token.
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let multi = format!(
        "To: {addr}\nSubject: {other}\nMIME-Version: 1.0\n\
         Content-Type: multipart/alternative; boundary=\"XyZ\"\n\n\
         --XyZ\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{}\n\
         --XyZ\nContent-Type: text/html\n\n<p>html part</p>\n--XyZ--\n",
        b64(&format!("other body {other} ünïcode")),
        addr = mbox.address()
    );
    mta::sendmail(qp.as_bytes()).unwrap();
    // As lettre sends: envelope in the arguments, CRLF line ends.
    mta::sendmail_envelope(
        "cairn@localhost",
        &[mbox.address()],
        multi.replace('\n', "\r\n").as_bytes(),
    )
    .unwrap();

    let m = mbox.wait_for(&mine, Duration::from_secs(30)).unwrap();
    assert_eq!(m.subject(), format!("cairn preflight fäiled {mine}"));
    assert_eq!(
        m.body(),
        format!("Backup disk müssing: {mine} continues\nFrom here on a line that mbox escapes\n")
    );
    assert!(!m.contains(&other));
    assert_eq!(m.header("To").as_deref(), Some(mbox.address()));
    assert!(m.envelope_from.starts_with("root@"), "{}", m.envelope_from);

    let o = mbox.wait_for(&other, Duration::from_secs(30)).unwrap();
    assert_eq!(o.body(), format!("other body {other} ünïcode"));
    assert_eq!(o.envelope_from, "cairn@localhost");
    assert_eq!(o.subject(), other);
    assert!(!o.contains(&mine));

    assert_eq!(mbox.count(&mine).unwrap(), 1);
    assert_eq!(mbox.count(&other).unwrap(), 1);
    let e = mbox
        .wait_for(&never, Duration::from_millis(300))
        .unwrap_err();
    assert!(format!("{e:#}").contains(&never), "{e:#}");
    mbox.expect_none(&never, Duration::ZERO).unwrap();
    assert!(mbox.expect_none(&mine, Duration::ZERO).is_err());

    // Removing one token's messages leaves the other's.
    assert_eq!(mbox.remove(&mine).unwrap(), 1);
    assert_eq!(mbox.count(&mine).unwrap(), 0);
    assert_eq!(mbox.count(&other).unwrap(), 1);
    assert_eq!(mbox.remove(&other).unwrap(), 1);
    assert_eq!(mbox.count(&other).unwrap(), 0);
}

#[test]
fn mbox_parser_handles_folding_encodings_and_escapes() {
    let mbox = b"From alice@example Tue Dec 01 18:58:34 2026\n\
        Subject: first\n  folded =?UTF-8?B?w6TDtsO8?= =?UTF-8?B?w58=?=\n\
        Content-Transfer-Encoding: base64\n\n\
        aGVsbG8g\nd29ybGQ=\n\n\
        From bob@example Tue Dec 01 18:58:35 2026\r\n\
        Subject: second\r\n\r\n\
        plain\r\n>From escaped\r\n>>From twice\r\n\n";
    let msgs = mta::parse_mbox(mbox);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].envelope_from, "alice@example");
    assert_eq!(msgs[0].subject(), "first folded äöüß");
    assert_eq!(msgs[0].body(), "hello world");
    assert_eq!(msgs[1].subject(), "second");
    assert_eq!(msgs[1].body(), "plain\nFrom escaped\n>>From twice\n");
    assert!(msgs[1].contains("From escaped"));
    assert!(!msgs[1].contains("hello"));
    assert_eq!(
        mta::decode_words("a =?iso-8859-1?Q?caf=E9_au?= lait"),
        "a café au lait"
    );
}
