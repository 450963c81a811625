//! Running commands (typically a cairn binary) in a private mount namespace
//! whose `/etc` is a throw-away overlay, so that `cairn-preflight` can
//! really mount disks and really rewrite `/etc/fstab` or
//! `/etc/sudoers.d/*` — atomically, temp file + rename — without ever
//! touching the host.
//!
//! Design choice: one long-lived *holder* process per [`Ns`], not one
//! `unshare … sh -c SCRIPT` per step. The holder is
//! `unshare --mount --propagation private sh -c '…'`: it mounts an overlay on
//! `/etc` (lowerdir = the host's `/etc`, upperdir and workdir in a temp dir of
//! this `Ns`), says `ready`, and then `exec cat >/dev/null` with its stdin
//! on a pipe from the test. Each command the test runs ([`Ns::command`],
//! [`Ns::run`], [`Ns::sh`]) joins the holder's mount namespace with
//! `setns(2)` just before `exec` (so `Command` keeps all its features:
//! args, env, stdin, output capture), and the current directory is carried
//! over by path. So a test runs the program, then `findmnt PATH`, then the
//! program again, each as its own `Command` with its own exit status and
//! output, all in the same namespace — and reads and stats files in it
//! directly from the test through `/proc/<holder>/root/…` ([`Ns::path`],
//! [`Ns::read`], [`Ns::file_state`]).
//!
//! Why an overlay and not a bind mount of a scratch file over `/etc/fstab`:
//! a program that writes `fstab.tmp` beside it and renames it over `fstab`
//! gets `EBUSY`/`EXDEV` from a bind-mounted file, while on the overlay the
//! rename is an ordinary rename in the upper dir. Everything the program
//! writes lands in [`Ns::upper_dir`] (see [`Ns::etc_changes`]), everything
//! else reads through to the host's `/etc`, and the host's files stay byte
//! for byte the same.
//!
//! Lifetime: the namespace — and every mount made in it, overlay included —
//! dies when its last process exits. Dropping the `Ns` (or [`Ns::close`])
//! closes the holder's stdin, so `cat` exits; if the test process dies
//! instead (panic, abort, nextest timeout), the pipe closes all the same and
//! the holder goes too. Processes that a test started in the namespace and
//! left running (a forked daemon) would keep it alive, so the drop kills
//! them, found by their `/proc/PID/ns/mnt` (only a test process that was
//! killed outright leaves such stragglers). The `Ns` holds the namespace
//! open (an nsfs file descriptor) until that is done, so its inode number
//! cannot meanwhile pass to another test's new namespace; commands enter
//! the namespace through a duplicate of that descriptor, never by PID.
//!
//! Loop devices: a filesystem mounted inside the namespace keeps its loop
//! device busy until the namespace dies, so declare the
//! [`Disk`](crate::disk::Disk) *before* the `Ns` (locals drop in reverse
//! order: the namespace goes first). Even in the other order nothing leaks:
//! `losetup -d` on a busy device makes the kernel detach it when the last
//! user goes. Propagation is private both ways: mounts made in the namespace
//! never reach the host's `/proc/self/mountinfo`, and host mounts made
//! after [`NsBuilder::start`] are not seen inside.
//!
//! A new mount namespace starts as a *copy* of the host's mounts, and with
//! parallel tests those include other tests' disks, mounted on the host
//! under their temp dirs: each copy would keep that disk's filesystem alive
//! (so the other test's `umount` + `mount -o ro` fails with `EBUSY`, and its
//! loop device stays attached). So [`NsBuilder::start`] detaches, inside the
//! new namespace only, every copied mount that lies below a temp root
//! (`/tmp`, `/var/tmp`, `$TMPDIR`, `$CAIRN_TEST_TMPDIR`) or whose source is
//! a loop device backed by a file there. A test that wants one of its own
//! host mounts inside names it with [`NsBuilder::keep_host_mount`]; the
//! usual way is to attach the disk on the host and mount it in the
//! namespace.
//!
//! Tag lookups: without udev, `mount LABEL=…`, `findfs` and libblkid
//! resolve `LABEL=`/`UUID=` by scanning, through the machine-wide cache
//! `/run/blkid/blkid.tab`, whose entries libblkid trusts without re-reading
//! for up to 200 s as long as the device node is unchanged — and a loop
//! device reused by another test is unchanged. Commands made by
//! [`Ns::command`] therefore get `BLKID_FILE=/dev/null` (no cache: every
//! lookup probes the devices); a test may override it with `.env(…)`. Labels
//! and UUIDs are seen machine-wide, so each test must use its own (see
//! [`crate::disk::unique_label`], [`crate::disk::random_uuid`]).
//!
//! Caveats: paths through `/proc/<pid>/root` resolve *absolute symlinks*
//! against the host's root (e.g. `/etc/mtab`); read such paths with a
//! command in the namespace instead. Only the mount namespace is private:
//! network, PIDs, users and `/run`, `/var` are the host's.
//!
//! Needs root, `unshare` (util-linux) and overlayfs; [`available`] says
//! what is missing.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The holder: mount the overlay, report, then live as long as its stdin.
const HOLDER_SCRIPT: &str = r#"set -e
mount -t overlay cairn-nsrun-etc -o "lowerdir=/etc,upperdir=$NSRUN_UPPER,workdir=$NSRUN_WORK" /etc
echo ready
exec cat >/dev/null
"#;

/// Whether namespaces can be made here: root, `unshare`, overlayfs. `Err`
/// names what is missing, for a test to print `SKIPPED: …` and return.
pub fn available() -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for (prog, pkg) in [("unshare", "util-linux"), ("mount", "mount")] {
        if !program_exists(prog) {
            missing.push(format!("{prog} (Debian package {pkg})"));
        }
    }
    let fss = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
        && !Path::new("/sys/module/overlay").exists()
        && Command::new("modprobe")
            .arg("overlay")
            .output()
            .map_or(true, |o| !o.status.success())
    {
        missing.push("overlayfs in the kernel".to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("mount-namespace tests need {}", missing.join(", ")))
    }
}

enum Seed {
    File(Vec<u8>, u32),
    Absent,
}

/// What the namespace's `/etc` holds at start, beyond the host's. Made by
/// [`Ns::builder`].
#[derive(Default)]
pub struct NsBuilder {
    seeds: Vec<(PathBuf, Seed)>,
    keep: Vec<PathBuf>,
}

impl NsBuilder {
    /// The namespace's `/etc/REL` holds `contents` (mode 0644, root). `rel`
    /// is relative to `/etc` (`"fstab"`, `"sudoers.d/cairn"`); a leading
    /// `/etc/` is accepted too. Missing parent directories are created with
    /// the host's modes where the host has them.
    pub fn etc_file(self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Self {
        self.etc_file_mode(rel, contents, 0o644)
    }

    /// [`NsBuilder::etc_file`] with an explicit mode (e.g. 0o440 for sudoers).
    pub fn etc_file_mode(
        mut self,
        rel: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> Self {
        self.seeds.push((
            rel.as_ref().to_path_buf(),
            Seed::File(contents.as_ref().to_vec(), mode),
        ));
        self
    }

    /// The namespace's `/etc/REL` does not exist (an overlay whiteout), e.g.
    /// to test a host without `/etc/fstab`.
    pub fn etc_absent(mut self, rel: impl AsRef<Path>) -> Self {
        self.seeds.push((rel.as_ref().to_path_buf(), Seed::Absent));
        self
    }

    /// Keep the host's mount at `mount_point` (and those below it) in the
    /// namespace, although it lies in a temp dir (see the module doc).
    pub fn keep_host_mount(mut self, mount_point: impl AsRef<Path>) -> Self {
        self.keep.push(mount_point.as_ref().to_path_buf());
        self
    }

    /// Creates the namespace: seeds the upper dir, starts the holder, waits
    /// until the overlay is mounted, detaches the copies of other tests'
    /// mounts.
    pub fn start(self) -> Result<Ns> {
        let dir = crate::fixture::tempdir()?;
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        for p in [&upper, &work] {
            let s = p.as_os_str().as_bytes();
            if s.contains(&b',') || s.contains(&b':') {
                bail!(
                    "overlay dirs may not contain ',' or ':': {} (set $CAIRN_TEST_TMPDIR)",
                    p.display()
                );
            }
        }
        std::fs::create_dir(&work).with_context(|| format!("mkdir {}", work.display()))?;
        // The upper dir's own attributes become those of the merged /etc.
        make_dir_like(&upper, Path::new("/etc"))?;
        for (rel, seed) in &self.seeds {
            let rel = etc_relative(rel)?;
            let target = upper.join(&rel);
            let mut parent = upper.clone();
            let mut lower = PathBuf::from("/etc");
            if let Some(dirs) = rel.parent() {
                for c in dirs.components() {
                    parent.push(c);
                    lower.push(c);
                    if !parent.exists() {
                        make_dir_like(&parent, &lower)?;
                    }
                }
            }
            let _ = std::fs::remove_file(&target);
            match seed {
                Seed::File(bytes, mode) => {
                    std::fs::write(&target, bytes)
                        .with_context(|| format!("write {}", target.display()))?;
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("chmod {}", target.display()))?;
                }
                Seed::Absent => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .with_context(|| format!("make a whiteout at {}", target.display()))?,
            }
        }
        let errlog = dir.path().join("holder.stderr");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", HOLDER_SCRIPT, "cairn-nsrun-holder"])
            .env("NSRUN_UPPER", &upper)
            .env("NSRUN_WORK", &work)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&errlog).context("create the holder's stderr log")?)
            .spawn()
            .context("start `unshare --mount` (util-linux)")?;
        let pid = holder.id();
        let mut line = String::new();
        let read = BufReader::new(holder.stdout.take().expect("piped stdout")).read_line(&mut line);
        if read.is_err() || line.trim() != "ready" {
            let _ = holder.kill();
            let status = holder.wait();
            let err = std::fs::read_to_string(&errlog).unwrap_or_default();
            bail!(
                "the namespace holder did not start ({status:?}): {}",
                err.trim()
            );
        }
        // Holding the namespace open keeps its inode number ours until
        // shutdown is complete (a freed number is soon reused).
        let ns_file = match File::open(format!("/proc/{pid}/ns/mnt")) {
            Ok(f) => f,
            Err(e) => {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(e).context("open the holder's mount namespace");
            }
        };
        let ns_ino = ns_file.metadata()?.ino();
        let own = ns_inode("/proc/self/ns/mnt").context("our own mount namespace")?;
        let stdin = holder.stdin.take();
        let mut ns = Ns {
            dir,
            upper,
            holder,
            stdin,
            pid,
            ns_fd: Some(OwnedFd::from(ns_file)),
            ns_ino,
        };
        if ns_ino == own {
            ns.shutdown();
            bail!("unshare --mount did not give the holder a new mount namespace");
        }
        ns.detach_copied_test_mounts(&self.keep)?;
        Ok(ns)
    }
}

/// A private mount namespace with an overlay `/etc`; see the module doc.
pub struct Ns {
    dir: tempfile::TempDir,
    upper: PathBuf,
    holder: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    /// The namespace itself (`/proc/<holder>/ns/mnt`), until shutdown.
    ns_fd: Option<OwnedFd>,
    ns_ino: u64,
}

/// What became of an entry of the namespace's `/etc`, as its overlay upper
/// dir records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A file or symlink written, created, renamed into place or seeded.
    Written,
    /// Deleted or renamed away (a whiteout).
    Deleted,
    /// A directory created, copied up or seeded (its entries are listed too).
    Dir,
}

/// One entry of [`Ns::etc_changes`]; `path` is relative to `/etc`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EtcChange {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// A file's identity and contents, to tell whether a program changed it:
/// a rewrite by rename changes `ino`, any write changes `mtime`/`ctime`,
/// `chmod`/`chown` change `ctime`. Compare two with `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// File contents, or a symlink's target.
    pub contents: Vec<u8>,
    pub ino: u64,
    /// `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, nanoseconds)
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Ns {
    /// A namespace whose `/etc` is the host's, until something writes to it.
    pub fn start() -> Result<Ns> {
        NsBuilder::default().start()
    }

    /// Seed the namespace's `/etc` first.
    pub fn builder() -> NsBuilder {
        NsBuilder::default()
    }

    /// The holder's PID (e.g. for `nsenter -t PID -m` by hand).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A `Command` that runs `program` inside the namespace; use it like any
    /// `Command`. `PATH` is searched inside the namespace (the same files),
    /// and the working directory (`current_dir`, else the test's) is entered
    /// again there by path. `BLKID_FILE=/dev/null` is set (see the module
    /// doc). The `Command` holds its own reference to the namespace, so it
    /// enters this namespace and no other even if spawned late (and keeps
    /// the namespace alive while it exists).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("BLKID_FILE", "/dev/null");
        let fd = self.ns_fd.as_ref().and_then(|f| f.try_clone().ok());
        // SAFETY: between fork and exec only async-signal-safe syscalls run
        // (getcwd into a stack buffer, setns, chdir); nothing allocates.
        unsafe {
            cmd.pre_exec(move || {
                let Some(fd) = fd.as_ref() else {
                    return Err(std::io::Error::from_raw_os_error(libc::EBADF));
                };
                let mut cwd = [0u8; 4096];
                let have_cwd = !libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()).is_null();
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // setns(CLONE_NEWNS) moved us to the namespace's root.
                if have_cwd && libc::chdir(cwd.as_ptr().cast()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `program args…` in the namespace and collects its output (a
    /// non-zero exit is not an error here: inspect `status`).
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("run {cmd:?} in the namespace"))
    }

    /// Runs a `sh -c` script in the namespace and collects its output.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.run("sh", ["-c", script])
    }

    /// [`Ns::sh`], but a non-zero exit is an error carrying stderr; returns
    /// stdout.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        let out = self.sh(script)?;
        if !out.status.success() {
            bail!(
                "in the namespace, `{script}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `/proc/<holder>/root`: the namespace's `/`, seen from the test.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// The test's path to the namespace's absolute path `p` (mounts made in
    /// the namespace are crossed; absolute symlinks are not followed into
    /// the namespace, see the module doc).
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.root().join(p.strip_prefix("/").unwrap_or(p))
    }

    /// The namespace's file `p`.
    pub fn read(&self, p: impl AsRef<Path>) -> Result<Vec<u8>> {
        let p = p.as_ref();
        std::fs::read(self.path(p))
            .with_context(|| format!("read {} in the namespace", p.display()))
    }

    /// The namespace's file `p`, as (lossy) UTF-8.
    pub fn read_string(&self, p: impl AsRef<Path>) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(p)?).into_owned())
    }

    /// Writes the namespace's file `p` (through the overlay when under
    /// `/etc`: the host's file is not touched).
    pub fn write(&self, p: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let p = p.as_ref();
        std::fs::write(self.path(p), contents)
            .with_context(|| format!("write {} in the namespace", p.display()))
    }

    /// Whether the namespace has an entry at `p` (not following a final
    /// symlink).
    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        std::fs::symlink_metadata(self.path(p)).is_ok()
    }

    /// The state of the namespace's `p` (not following a final symlink), or
    /// `None` if it does not exist. Take one before and one after running
    /// a program to see whether it changed the file.
    pub fn file_state(&self, p: impl AsRef<Path>) -> Result<Option<FileState>> {
        let p = p.as_ref();
        let full = self.path(p);
        let md = match std::fs::symlink_metadata(&full) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("stat {} in the namespace", p.display()))
            }
        };
        let contents = if md.file_type().is_symlink() {
            std::fs::read_link(&full)?
                .into_os_string()
                .into_encoded_bytes()
        } else if md.is_file() {
            std::fs::read(&full).with_context(|| format!("read {}", p.display()))?
        } else {
            Vec::new()
        };
        Ok(Some(FileState {
            contents,
            ino: md.ino(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }))
    }

    /// The overlay's upper dir: everything written to the namespace's `/etc`
    /// (seeds included) and nothing else. It is deleted with the `Ns`.
    pub fn upper_dir(&self) -> &Path {
        &self.upper
    }

    /// Every entry of the upper dir, sorted: what was written to, created in
    /// or deleted from the namespace's `/etc` (seeds included).
    pub fn etc_changes(&self) -> Result<Vec<EtcChange>> {
        let mut out = Vec::new();
        walk_upper(&self.upper, Path::new(""), &mut out)?;
        out.sort();
        Ok(out)
    }

    /// The namespace's `/proc/self/mountinfo`.
    pub fn mountinfo(&self) -> Result<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid))
            .context("read the namespace's mountinfo")
    }

    /// The mount points in the namespace, in mountinfo order.
    pub fn mount_points(&self) -> Result<Vec<PathBuf>> {
        Ok(mount_points_of(&self.mountinfo()?))
    }

    /// Whether something is mounted on `p` in the namespace.
    pub fn is_mounted(&self, p: impl AsRef<Path>) -> Result<bool> {
        Ok(self.mount_points()?.iter().any(|m| m == p.as_ref()))
    }

    /// Ends the namespace now: the holder exits, then any process left in
    /// the namespace is killed. `Err` if some were left (the test had left
    /// processes running there) or the namespace could not be seen to end;
    /// either way it is gone or going when this returns. Drop does the same
    /// silently.
    pub fn close(mut self) -> Result<()> {
        let left = self.shutdown();
        if !left.is_empty() {
            bail!("processes were still running in the namespace and were killed: {left:?}");
        }
        Ok(())
    }

    /// Returns the PIDs that had to be killed besides the holder.
    fn shutdown(&mut self) -> Vec<u32> {
        if self.ns_fd.is_none() {
            return Vec::new();
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.holder.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.holder.kill();
                    let _ = self.holder.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let mut killed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = pids_in_namespace(self.ns_ino);
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in left {
                if !killed.contains(&pid) {
                    killed.push(pid);
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The last reference (unless a `Command` still holds one): the
        // namespace and its mounts go now.
        drop(self.ns_fd.take());
        killed
    }

    /// Detaches (in the namespace only) the copies of host mounts that are
    /// test mounts: below a temp root, or from a loop device whose backing
    /// file is below one; except `keep` and what is below it.
    fn detach_copied_test_mounts(&self, keep: &[PathBuf]) -> Result<()> {
        let roots = temp_roots();
        let under_root = |p: &Path| roots.iter().any(|r| p != r && p.starts_with(r));
        let candidates = |info: &str| -> Vec<PathBuf> {
            let mut c: Vec<PathBuf> = Vec::new();
            for (mp, source) in mounts_with_sources(info) {
                if mp == Path::new("/")
                    || mp == Path::new("/etc")
                    || keep.iter().any(|k| mp.starts_with(k))
                {
                    continue;
                }
                let test_loop = source
                    .strip_prefix("/dev/")
                    .filter(|d| d.starts_with("loop"))
                    .and_then(|d| {
                        std::fs::read_to_string(format!("/sys/block/{d}/loop/backing_file")).ok()
                    })
                    .is_some_and(|f| under_root(Path::new(f.trim())));
                if (test_loop || under_root(&mp)) && !c.contains(&mp) {
                    c.push(mp);
                }
            }
            // Detaching a mount detaches what is below it too.
            let tops: Vec<PathBuf> = c
                .iter()
                .filter(|p| !c.iter().any(|o| o != *p && p.starts_with(o)))
                .cloned()
                .collect();
            tops
        };
        // Mounts stacked on one mount point go one per round.
        for _ in 0..16 {
            let tops = candidates(&self.mountinfo()?);
            if tops.is_empty() {
                return Ok(());
            }
            let _ = self.run(
                "umount",
                std::iter::once("-l".as_ref()).chain(tops.iter().map(|p| p.as_os_str())),
            )?;
        }
        bail!(
            "could not detach copies of test mounts in the new namespace: {:?}",
            candidates(&self.mountinfo()?)
        )
    }

    /// The temp dir holding `upper/`, `work/` and the holder's stderr log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let left = self.shutdown();
        if !left.is_empty() {
            eprintln!("nsrun: killed processes left in the namespace: {left:?}");
        }
    }
}

/// The mount points listed in the test's own (the host's) mountinfo.
pub fn host_mount_points() -> Result<Vec<PathBuf>> {
    Ok(mount_points_of(
        &std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?,
    ))
}

/// Whether something is mounted on `p` in the test's own mount namespace.
pub fn host_is_mounted(p: impl AsRef<Path>) -> Result<bool> {
    Ok(host_mount_points()?.iter().any(|m| m == p.as_ref()))
}

/// Field 5 of each mountinfo line, octal escapes (`\040` …) undone.
pub fn mount_points_of(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(OsStr::from_bytes(&unescape_octal(f))))
        .collect()
}

/// (mount point, source) of each mountinfo line.
fn mounts_with_sources(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = f.get(4)?;
            let sep = f.iter().position(|x| *x == "-")?;
            let source = f.get(sep + 2)?;
            Some((
                PathBuf::from(OsStr::from_bytes(&unescape_octal(mp))),
                String::from_utf8_lossy(&unescape_octal(source)).into_owned(),
            ))
        })
        .collect()
}

/// Where tests make their temp dirs (canonical paths).
fn temp_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec!["/tmp".into(), "/var/tmp".into(), std::env::temp_dir()];
    if let Some(d) = std::env::var_os(crate::fixture::TMPDIR_ENV).filter(|d| !d.is_empty()) {
        roots.push(d.into());
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        let r = r.canonicalize().unwrap_or(r);
        if r != Path::new("/") && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn walk_upper(root: &Path, rel: &Path, out: &mut Vec<EtcChange>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let md = std::fs::symlink_metadata(entry.path())?;
        let ft = md.file_type();
        if ft.is_dir() {
            out.push(EtcChange {
                path: path.clone(),
                kind: ChangeKind::Dir,
            });
            walk_upper(root, &path, out)?;
        } else if ft.is_char_device() && md.rdev() == 0 {
            out.push(EtcChange {
                path,
                kind: ChangeKind::Deleted,
            });
        } else {
            out.push(EtcChange {
                path,
                kind: ChangeKind::Written,
            });
        }
    }
    Ok(())
}

/// `rel` as a plain relative path under `/etc` (a leading `/etc/` dropped).
fn etc_relative(rel: &Path) -> Result<PathBuf> {
    let rel = rel
        .strip_prefix("/etc")
        .or_else(|_| rel.strip_prefix("etc"))
        .unwrap_or(rel);
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => bail!("{} is not a path inside /etc", rel.display()),
        }
    }
    if out.as_os_str().is_empty() {
        bail!("empty path inside /etc");
    }
    Ok(out)
}

/// Creates directory `dir` with the mode and owner of `like` (if `like`
/// exists; else 0755 root).
fn make_dir_like(dir: &Path, like: &Path) -> Result<()> {
    let (mode, uid, gid) = match std::fs::metadata(like) {
        Ok(md) if md.is_dir() => (md.mode() & 0o7777, md.uid(), md.gid()),
        _ => (0o755, 0, 0),
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("mkdir {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

fn ns_inode(path: &str) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {path}"))?
        .ino())
}

/// PIDs whose mount namespace has inode `ino` (zombies have none).
fn pids_in_namespace(ino: u64) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ns_inode(&format!("/proc/{pid}/ns/mnt")).is_ok_and(|i| i == ino))
        .collect()
}

fn program_exists(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file())
}
