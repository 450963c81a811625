//! Real filesystems on loop devices, for the tests of `cairn-preflight`
//! (is this the right disk — label, UUID, fs type —, is it mounted, is it
//! writable, is there enough room).
//!
//! Design choice: a [`Disk`] is an ordinary sparse image file in a directory
//! the test owns (normally its temp dir), formatted by the real `mkfs.ext4` /
//! `mkfs.xfs` with the label and UUID the test chooses, and attached with
//! `losetup --find --show`. Nothing has a global name: the image name is
//! unique in its directory, the loop device is whichever one the kernel hands
//! out, and mount points are paths the test passes in, so any number of
//! tests may run at once in parallel processes (nextest). Two processes can
//! be handed the same free device at the same moment; the loser's
//! `losetup` fails with "Device or resource busy", and [`Disk::attach`]
//! simply asks again.
//!
//! Cleanup is by `Drop`, in the order the kernel needs: every mount made
//! through [`Disk::mount`] is lazily unmounted (`umount -l`, which cannot
//! fail on a busy mount), then the device is detached with `losetup -d`.
//! If the filesystem is still in use — lazily unmounted but open, or mounted
//! inside another mount namespace (see [`crate::nsrun`]) — the kernel does
//! not refuse: it marks the device *autoclear* and detaches it by itself the
//! moment the last user lets go, so nothing leaks past the last reference.
//! The image file is deleted last.
//!
//! ext4 disks are made with `-m 0` (no blocks reserved for root), so the
//! space free to root and to other users is the same number, which keeps
//! `min_free` tests unambiguous; see [`free_bytes`] and [`fill_until_free_below`].
//!
//! Mind that no udev runs on these machines: `/dev/disk/by-uuid/…` and
//! `/dev/disk/by-label/…` do not exist. `blkid`, `findfs`, `mount UUID=…` and
//! fstab lines with `UUID=`/`LABEL=` work all the same (libblkid falls back
//! to scanning the devices), but they see every test's disks, so labels and
//! UUIDs must be unique machine-wide: [`unique_label`], [`random_uuid`]. A
//! test about a *wrong* disk makes both disks itself. And libblkid's cache
//! (`/run/blkid/blkid.tab`) can answer a tag lookup with a loop device that
//! has since been detached and reused: run such lookups with
//! `BLKID_FILE=/dev/null` (as [`crate::nsrun::Ns::command`] does).
//!
//! Needs root, `/dev/loop-control`, util-linux (`losetup`, `mount`,
//! `blkid`), e2fsprogs for ext4 and xfsprogs for xfs; [`available`] names
//! whatever is missing.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The filesystem types a [`Disk`] can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fs {
    Ext4,
    Xfs,
}

impl Fs {
    /// The kernel's / blkid's name for it (`TYPE=` in `blkid` output,
    /// `-t` for `mount`, the third fstab field).
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        }
    }

    /// The `mkfs` program.
    pub fn mkfs(self) -> &'static str {
        match self {
            Fs::Ext4 => "mkfs.ext4",
            Fs::Xfs => "mkfs.xfs",
        }
    }

    /// The Debian package that ships [`Fs::mkfs`].
    pub fn package(self) -> &'static str {
        match self {
            Fs::Ext4 => "e2fsprogs",
            Fs::Xfs => "xfsprogs",
        }
    }

    /// The smallest image [`Disk::create`] accepts, in MiB. xfsprogs ≥ 5.19
    /// refuses filesystems under 300 MB; the image is sparse, so a 300 MiB
    /// xfs disk costs only the few MiB mkfs writes.
    pub fn min_size_mib(self) -> u64 {
        match self {
            Fs::Ext4 => 8,
            Fs::Xfs => 300,
        }
    }

    /// The longest label the filesystem stores, in bytes.
    pub fn max_label_len(self) -> usize {
        match self {
            Fs::Ext4 => 16,
            Fs::Xfs => 12,
        }
    }
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether disks of the given types can be made and mounted here: root,
/// `/dev/loop-control`, and the programs. `Err` names what is missing, for a
/// test to print `SKIPPED: …` and return.
pub fn available(types: &[Fs]) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_string());
    }
    if !Path::new("/dev/loop-control").exists() {
        missing.push("/dev/loop-control (loop devices)".to_string());
    }
    for (prog, pkg) in [
        ("losetup", "util-linux"),
        ("blkid", "util-linux"),
        ("mount", "mount"),
        ("umount", "mount"),
    ] {
        if find_program(prog).is_none() {
            missing.push(format!("{prog} (Debian package {pkg})"));
        }
    }
    for fs in types {
        if find_program(fs.mkfs()).is_none() {
            missing.push(format!("{} (Debian package {})", fs.mkfs(), fs.package()));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("disk tests need {}", missing.join(", ")))
    }
}

/// A fresh random UUID (the kernel's `/proc/sys/kernel/random/uuid`), in
/// the lower-case 8-4-4-4-12 form blkid prints.
pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .expect("read /proc/sys/kernel/random/uuid")
}

/// A label no other test uses: `prefix` (cut to fit) and random hex,
/// `fs.max_label_len()` bytes in all (at least 6 of them random).
pub fn unique_label(prefix: &str, fs: Fs) -> String {
    let max = fs.max_label_len();
    let keep = prefix.len().min(max - 7);
    let mut cut = keep;
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let hex = random_uuid().replace('-', "");
    let mut label = format!("{}-", &prefix[..cut]);
    let room = max - label.len();
    label.push_str(&hex[..room]);
    label
}

/// A filesystem image, optionally attached to a loop device and mounted.
/// Dropping it unmounts (lazily), detaches and deletes the image.
#[derive(Debug)]
pub struct Disk {
    image: PathBuf,
    fs: Fs,
    label: String,
    uuid: String,
    size: u64,
    device: Option<PathBuf>,
    mounts: Vec<PathBuf>,
}

impl Disk {
    /// Makes a `size_mib` MiB sparse image in `dir` (a unique name, so
    /// several disks may share a directory) and formats it as `fs` with
    /// `label` and `uuid` (8-4-4-4-12 hex; see [`random_uuid`]). Not yet
    /// attached: call [`Disk::attach`], or use [`Disk::create_attached`].
    pub fn create(dir: &Path, fs: Fs, size_mib: u64, label: &str, uuid: &str) -> Result<Disk> {
        if size_mib < fs.min_size_mib() {
            bail!(
                "a {fs} disk needs at least {} MiB, not {size_mib} MiB",
                fs.min_size_mib()
            );
        }
        if label.len() > fs.max_label_len() {
            bail!(
                "{fs} labels hold at most {} bytes; {label:?} has {}",
                fs.max_label_len(),
                label.len()
            );
        }
        if !is_uuid(uuid) {
            bail!("{uuid:?} is not a UUID (8-4-4-4-12 hex digits)");
        }
        let uuid = uuid.to_ascii_lowercase();
        let (file, image) = tempfile::Builder::new()
            .prefix(&format!("disk-{fs}-"))
            .suffix(".img")
            .tempfile_in(dir)
            .with_context(|| format!("create an image file in {}", dir.display()))?
            .keep()
            .context("keep the image file")?;
        // As the kernel will show it in /sys/block/loopN/loop/backing_file.
        let image = image.canonicalize().unwrap_or(image);
        let size = size_mib << 20;
        // From here on, `disk` owns the image and deletes it if mkfs fails.
        let disk = Disk {
            image,
            fs,
            label: label.to_string(),
            uuid,
            size,
            device: None,
            mounts: Vec::new(),
        };
        file.set_len(size)
            .with_context(|| format!("size {}", disk.image.display()))?;
        drop(file);
        let mut mkfs = Command::new(fs.mkfs());
        match fs {
            Fs::Ext4 => mkfs
                .args(["-q", "-F", "-m", "0", "-E", "nodiscard", "-L"])
                .arg(label)
                .arg("-U")
                .arg(&disk.uuid),
            Fs::Xfs => mkfs
                .args(["-q", "-f", "-K", "-L"])
                .arg(label)
                .arg("-m")
                .arg(format!("uuid={}", disk.uuid)),
        };
        mkfs.arg(&disk.image);
        checked(&mut mkfs)?;
        Ok(disk)
    }

    /// [`Disk::create`] then [`Disk::attach`].
    pub fn create_attached(
        dir: &Path,
        fs: Fs,
        size_mib: u64,
        label: &str,
        uuid: &str,
    ) -> Result<Disk> {
        let mut d = Disk::create(dir, fs, size_mib, label, uuid)?;
        d.attach()?;
        Ok(d)
    }

    /// A small (64 MiB) attached ext4 disk in `dir` with a random UUID and a unique label
    /// starting with `tag`: the backup disk of the container tests. Returns it and its
    /// UUID.
    pub fn small_ext4(dir: &Path, tag: &str) -> Result<(Disk, String)> {
        let uuid = random_uuid();
        let d = Disk::create_attached(dir, Fs::Ext4, 64, &unique_label(tag, Fs::Ext4), &uuid)?;
        Ok((d, uuid))
    }

    /// Attaches the image to a free loop device and returns its path
    /// (`/dev/loopN`). When parallel tests race for the same free device,
    /// the loser retries with the next one.
    pub fn attach(&mut self) -> Result<&Path> {
        if self.device.is_some() {
            bail!("{} is already attached", self.image.display());
        }
        let mut last = String::new();
        for attempt in 0..30u64 {
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&self.image)
                .output()
                .context("run losetup")?;
            if out.status.success() {
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !dev.starts_with("/dev/") {
                    bail!("losetup --find --show printed {dev:?}");
                }
                return Ok(self.device.insert(PathBuf::from(dev)).as_path());
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            std::thread::sleep(Duration::from_millis(10 + 10 * attempt));
        }
        bail!(
            "losetup --find --show {} kept failing: {last}",
            self.image.display()
        )
    }

    /// Unmounts (lazily) what [`Disk::mount`] mounted and detaches the loop
    /// device. If the device is still in use (a brief open by another
    /// test's blkid scan, a lazily unmounted filesystem still busy, a mount
    /// inside a namespace), the kernel detaches it when that use ends; this
    /// waits up to 2 s for that, then returns all the same.
    pub fn detach(&mut self) -> Result<()> {
        self.umount_all_lazy();
        if let Some(dev) = self.device.take() {
            checked(Command::new("losetup").arg("-d").arg(&dev))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while self.backs(&dev) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Whether loop device `dev` is (still) attached to this image.
    fn backs(&self, dev: &Path) -> bool {
        let Some(name) = dev.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .is_ok_and(|f| Path::new(f.trim()) == self.image)
    }

    /// The loop device. Panics if the disk is not attached.
    pub fn device(&self) -> &Path {
        self.device.as_deref().unwrap_or_else(|| {
            panic!(
                "disk {} is not attached (call attach())",
                self.image.display()
            )
        })
    }

    /// The loop device, if attached.
    pub fn try_device(&self) -> Option<&Path> {
        self.device.as_deref()
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    pub fn fs(&self) -> Fs {
        self.fs
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The UUID, lower case, as blkid prints it.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The image's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Where [`Disk::mount`] has mounted it (and not yet unmounted).
    pub fn mounts(&self) -> &[PathBuf] {
        &self.mounts
    }

    /// Mounts the (attached) device on `target`, creating the directory if
    /// needed; read-only when `read_only`.
    pub fn mount(&mut self, target: &Path, read_only: bool) -> Result<()> {
        self.mount_opts(target, if read_only { "ro" } else { "rw" })
    }

    /// Mounts with explicit `mount -o` options (e.g. `"ro,noexec"`).
    ///
    /// `EBUSY` ("already mounted or mount point busy") is retried for up to
    /// 2 s: a mount namespace another test creates starts with a copy of
    /// this disk's earlier mount, which keeps its filesystem alive with the
    /// old options until [`crate::nsrun`] detaches the copy, milliseconds
    /// later.
    pub fn mount_opts(&mut self, target: &Path, options: &str) -> Result<()> {
        let dev = self.device().to_path_buf();
        std::fs::create_dir_all(target).with_context(|| format!("mkdir {}", target.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let r = checked(
                Command::new("mount")
                    .args(["-t", self.fs.name(), "-o", options])
                    .arg(&dev)
                    .arg(target),
            );
            match r {
                Ok(_) => break,
                Err(e)
                    if format!("{e}").contains("already mounted or mount point busy")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    /// Unmounts `target` (not lazily: fails if busy).
    pub fn umount(&mut self, target: &Path) -> Result<()> {
        checked(Command::new("umount").arg(target))?;
        if let Some(i) = self.mounts.iter().rposition(|m| m == target) {
            self.mounts.remove(i);
        }
        Ok(())
    }

    /// `blkid -p -o export` of the device (or of the image when not
    /// attached): `TYPE`, `LABEL`, `UUID`, … read from the superblock itself,
    /// bypassing blkid's cache.
    pub fn probe(&self) -> Result<BTreeMap<String, String>> {
        probe(self.device.as_deref().unwrap_or(&self.image))
    }

    fn umount_all_lazy(&mut self) {
        while let Some(m) = self.mounts.pop() {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("disk {}: {e:#}", self.image.display());
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// `blkid -p -o export PATH` as a map (`TYPE`, `LABEL`, `UUID`, …).
pub fn probe(path: &Path) -> Result<BTreeMap<String, String>> {
    let out = checked(Command::new("blkid").args(["-p", "-o", "export"]).arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Bytes available to unprivileged users on the filesystem holding `path`
/// (`f_bavail × f_frsize`, what `df` shows as "Avail").
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

/// Fills the filesystem mounted at `mountpoint` until fewer than `limit`
/// bytes are free ([`free_bytes`]), with one preallocated file whose path is
/// returned (delete it to give the space back; xfs frees the blocks of an
/// unlinked file in the background, so poll [`free_bytes`] after a
/// `syncfs`). Does nothing but return the path of an empty file if less
/// than `limit` is already free.
pub fn fill_until_free_below(mountpoint: &Path, limit: u64) -> Result<PathBuf> {
    if limit == 0 {
        bail!("fewer than 0 bytes free is impossible; give a limit of at least 1");
    }
    let st = rustix::fs::statvfs(mountpoint)
        .with_context(|| format!("statvfs {}", mountpoint.display()))?;
    let block = st.f_frsize.max(512);
    let (file, path) = tempfile::Builder::new()
        .prefix(".cairn-fill-")
        .tempfile_in(mountpoint)
        .with_context(|| format!("create a fill file in {}", mountpoint.display()))?
        .keep()
        .context("keep the fill file")?;
    drop(file);
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut len = 0u64;
    for _ in 0..200 {
        let free = free_bytes(mountpoint)?;
        if free < limit {
            file.sync_all().ok();
            return Ok(path);
        }
        // Aim at half the limit free; allocation metadata takes a little more.
        let mut want = (free - limit / 2).div_ceil(block) * block;
        loop {
            match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), len, want) {
                Ok(()) => {
                    len += want;
                    break;
                }
                Err(rustix::io::Errno::NOSPC) if want > block => want = (want / 2).max(block),
                Err(rustix::io::Errno::NOSPC) => {
                    // Not even one more block fits: the filesystem is full.
                    file.sync_all().ok();
                    let free = free_bytes(mountpoint)?;
                    if free < limit {
                        return Ok(path);
                    }
                    bail!(
                        "{} is full but still reports {free} bytes free (limit {limit})",
                        mountpoint.display()
                    );
                }
                Err(e) => {
                    return Err(io::Error::from(e))
                        .with_context(|| format!("fallocate {}", path.display()))
                }
            }
        }
    }
    bail!(
        "could not bring {} under {limit} bytes free",
        mountpoint.display()
    )
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd`; a failure to start or a non-zero exit is an error carrying
/// the command line and its stderr.
fn checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
