//! A real systemd, booted in a throw-away container, for end-to-end tests of
//! cairn's systemd units, D-Bus calls and mount units.
//!
//! ```no_run
//! use cairn_tests::container::Container;
//! if let Err(why) = Container::available() {
//!     eprintln!("SKIPPED: {why}");
//!     return;
//! }
//! let c = Container::boot().unwrap();
//! std::fs::write(c.root().join("etc/systemd/system/x.service"), "…").unwrap();
//! assert!(c.systemctl(&["daemon-reload"]).status.success());
//! assert!(c.systemctl(&["start", "x.service"]).status.success());
//! c.wait_for_unit_state("x.service", "active", std::time::Duration::from_secs(10)).unwrap();
//! print!("{}", c.journal(&["-u", "x.service"]));
//! // dropped: powered off, unmounted, removed
//! ```
//!
//! # Design
//!
//! The container's root is an **overlay whose lower dir is the host's `/`**
//! (upper and work dir in a fresh directory under `$CAIRN_TEST_TMPDIR`, else
//! `/var/tmp`), so it holds exactly the host's installed software — systemd,
//! D-Bus, PostgreSQL, the freshly built cairn binaries under `target/` — and
//! every change a test makes lands in the upper dir and vanishes with it. The
//! overlay is mounted on the host at [`Container::root`], so a test can write
//! unit files and configs straight into it. `etc/machine-id` and
//! `var/lib/dbus/machine-id` (which systemd would copy) are removed (whited
//! out), so every container gets a fresh machine id; `etc/hostname` is the
//! machine name.
//!
//! It is booted with `systemd-nspawn --boot --register=no --keep-unit
//! --link-journal=no --private-network --machine=NAME`; commands run in it
//! with `nsenter --target <its PID 1> --all` ([`Container::exec`]). The boot
//! is done when `systemctl is-system-running --wait` says `running` or
//! `degraded` (bounded, 90 s by default; on failure the error carries the
//! console log's tail).
//!
//! Running several at once (nextest runs tests in parallel processes) needs
//! three things, all handled here:
//! - a unique machine name (`cairn-ct-<pid>-<n>`), which is also the hostname;
//! - **a cgroup of its own**: with `--keep-unit` and no systemd on the host,
//!   nspawn splits *the cgroup it was started in* into `supervisor/` and
//!   `payload/`. Started from the root cgroup (as here), two containers would
//!   share `/payload`: both systemds manage the same cgroup directories, so a
//!   unit `x` of each lands in the same `/payload/system.slice/x.service`
//!   (seen: `systemctl status` then fails to list its processes; killing
//!   "the cgroup" would hit both). So nspawn is started in
//!   `<our cgroup>/<name>` of the `name=systemd` and the unified hierarchy,
//!   removed at teardown;
//! - `--private-network` (loopback only), or every container's PostgreSQL
//!   would want the host's port 5432. `systemd-networkd-wait-online.service`
//!   is masked: with nothing to configure it would hold the boot for 2 min.
//!
//! # Block devices (loop devices) inside the container
//!
//! The container's `/dev` is a small tmpfs nspawn fills with `null`, `zero`,
//! `tty`, …; there is no `/dev/loop-control`, no `/dev/loopN` and no udev, so
//! `losetup` inside fails ("No such device"). Findings on this host (Debian
//! 12, systemd 252, cgroup v1 hybrid, PID 1 not systemd):
//! - **Access is not the problem**: with `--register=no --keep-unit` nothing
//!   creates a restricted devices cgroup; the container stays in the v1
//!   `devices:/` root cgroup whose `devices.list` is `a *:* rwm`.
//!   `--property=DeviceAllow=…` has no effect (it only applies to a scope
//!   nspawn asks a host systemd for), and writing `devices.allow` is moot.
//! - So only the **device node** is missing, and there are two working ways
//!   to provide it: `--bind=/dev/loopN` at boot ([`Builder::block_device`];
//!   the node is there before the container's systemd starts, so an enabled
//!   mount unit for it is mounted during boot; systemd sees the bind mount as
//!   a `dev-loopN.mount` unit) or **`mknod` at run time** through
//!   `/proc/<PID 1>/root/dev/` ([`Container::add_block_device`]; needs no
//!   restart). Container processes themselves keep `CAP_MKNOD` too.
//! - A **`.mount` unit** with `What=/dev/loopN` (written through
//!   [`Container::root`], then `daemon-reload`, `systemctl start`) mounts
//!   it: in a container systemd has no device units (`/sys` is read-only),
//!   so the mount does not wait for a `dev-loopN.device` that would never
//!   appear.
//! - **fstab does not work for devices** in a container:
//!   `systemd-fstab-generator` skips every device line there ("Running in a
//!   container, ignoring fstab device entry for /dev/loop0", also for
//!   `LABEL=`/`UUID=`), so no `.mount` unit is made from it. Write mount
//!   units instead (the self-test checks that this is still so).
//! - `What=/dev/disk/by-label/…` needs the links udev would make;
//!   [`Container::add_block_device`] (also called for
//!   [`Builder::block_device`]s once booted) creates `/dev/disk/by-label/`
//!   and `/dev/disk/by-uuid/` links, named as udev names them, from
//!   `blkid -p`.
//! - Mounted inside, the device is busy until the container unmounts it (at
//!   shutdown, or with `systemctl stop x.mount`); detach the loop device after
//!   the container is gone (declare it before the [`Container`]).
//!
//! Mind that the container is **not a security boundary**: it is root on the
//! host's kernel with access to every device.
//!
//! # Teardown
//!
//! One long-lived *supervisor* (`sh`, in its own process group) owns the
//! whole lifecycle; the test holds a pipe to its stdin. Dropping the
//! [`Container`] (or [`Container::shutdown`]) closes the pipe — and so does
//! the kernel if the test process panics, aborts or is SIGKILLed by a
//! nextest timeout. On EOF the supervisor sends SIGTERM to nspawn (which
//! asks the container's systemd for an orderly poweroff, under a second
//! here), SIGKILL after the stop timeout (30 s), unmounts the overlay
//! (lazily if busy), and only then deletes the scratch dir (`rm -rf
//! --one-file-system`, never through a mount), the cgroups and nspawn's
//! `/run/systemd/nspawn/propagate/<name>`. [`Container::shutdown`] waits for
//! that and checks that no mount, process, directory or cgroup is left.
//! Drop does the same and prints what is left, if anything.
//!
//! # Caveats
//!
//! - Commands run with [`Container::exec`] are *not* confined like container
//!   processes: they keep all of root's capabilities, stay in the test's
//!   cgroup, and get a clean environment (`PATH`, `HOME=/root`,
//!   `LANG=C.UTF-8`, `SYSTEMD_COLORS=0`, plus what the test adds). To run
//!   something *as a unit*, use `systemd-run --wait --pipe` or
//!   `systemd-run --wait` + [`Container::journal`].
//! - As with [`std::process::Command::output`], a command that leaves a
//!   background process holding its stdout/stderr open makes `exec` wait
//!   for that process; redirect the output of daemons you start.
//! - [`Container::root`] is the container's root *filesystem*. `/dev`,
//!   `/run`, `/tmp`, `/proc` and `/sys` inside are the container's own
//!   mounts; reach them through [`Container::live_path`].
//! - The host's `/` is the lower layer while it changes (other tests write
//!   to it); overlayfs tolerates that, but a file changed on the host after
//!   the container opened it may not show the change inside.
//! - On a host whose PID 1 *is* systemd (`/run/systemd/system` exists) the
//!   cgroup handling above is skipped: nspawn runs without `--keep-unit` and
//!   asks the host's systemd for a scope (`--property=DeviceAllow=block-loop
//!   rwm` lets loop devices through its device policy). That path is
//!   untested on these machines.
//!
//! Needs root, `systemd-nspawn` (Debian: `systemd-container`), the
//! `systemd` package installed (it is what boots), util-linux (`nsenter`,
//! `mount`, `umount`, `mountpoint`, `blkid`) and overlayfs;
//! [`Container::available`] says what is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

/// How long [`Builder::boot`] waits for `running`/`degraded` by default.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an orderly poweroff may take at teardown before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Units masked in every container (see the module doc).
pub const DEFAULT_MASKS: &[&str] = &["systemd-networkd-wait-online.service"];

const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", CONTAINER_PATH),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "dumb"),
    ("SYSTEMD_COLORS", "0"),
    ("SYSTEMD_PAGER", "cat"),
    ("PAGER", "cat"),
];

/// The supervisor: `$0 NAME BASE ROOT GRACE_SECS NSPAWN_ARGV...`, cgroup
/// dirs (newline-separated) in `$CAIRN_CT_CGROUPS`. Reads one line: `start`
/// starts nspawn (console to BASE/console.log) and prints its PID; anything
/// else, or EOF, skips to the teardown. Then the next line or EOF tears down.
const SUPERVISOR: &str = r#"
set -u
name=$1 base=$2 root=$3 grace=$4
shift 4
nl='
'
rc=0
pid=
alive() {
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    stat=
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    st=${stat##*") "}
    case $st in Z*) return 1 ;; esac
    return 0
}
cmd=
read -r cmd || cmd=
if [ "$cmd" = start ]; then
    sh -c 'IFS=$1; shift; for cg in $CAIRN_CT_CGROUPS; do echo $$ >"$cg/cgroup.procs" || exit 125; done; exec "$@"' \
        cairn-ct-nspawn "$nl" "$@" </dev/null >"$base/console.log" 2>&1 &
    pid=$!
    echo "$pid"
    exec >/dev/null
    trap '' HUP INT PIPE
    read -r cmd || cmd=
fi
trap '' HUP INT PIPE
if alive; then
    kill -TERM "$pid" 2>/dev/null
    i=0
    while alive && [ "$i" -lt "$((grace * 10))" ]; do sleep 0.1; i=$((i + 1)); done
    if alive; then
        echo "no orderly shutdown within ${grace}s, SIGKILL to systemd-nspawn" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
fi
if [ -n "$pid" ]; then wait "$pid" 2>/dev/null; fi
if mountpoint -q "$root" 2>/dev/null; then
    umount "$root" 2>/dev/null || umount -l "$root" || { echo "cannot unmount $root" >&2; rc=1; }
fi
rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null
if mountpoint -q "$root" 2>/dev/null; then
    echo "$root is still mounted, leaving $base" >&2
    rc=1
else
    rm -rf --one-file-system "$base" || { echo "cannot remove $base" >&2; rc=1; }
fi
IFS=$nl
i=0
while :; do
    left=
    for cg in $CAIRN_CT_CGROUPS; do
        [ -d "$cg" ] || continue
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        if [ -d "$cg" ]; then left=$cg; fi
    done
    [ -z "$left" ] && break
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then echo "cannot remove cgroup $left" >&2; rc=1; break; fi
    sleep 0.1
done
exit $rc
"#;

/// Options of one command run in the container ([`Container::exec_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOpts<'a> {
    /// Added to the clean base environment (see the module doc).
    pub env: &'a [(&'a str, &'a str)],
    /// Written to the command's stdin (otherwise stdin is `/dev/null`).
    pub stdin: Option<&'a [u8]>,
    /// Kill the command (and everything in its process group) after this
    /// long; the returned status is then a failure and stderr ends with a
    /// note saying so.
    pub timeout: Option<Duration>,
}

type Prepare = Box<dyn FnOnce(&Path) -> Result<()> + Send>;

/// Options for [`Builder::boot`]; [`Container::boot`] is `Builder::new().boot()`.
pub struct Builder {
    name: Option<String>,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    block_devices: Vec<PathBuf>,
    masks: Vec<String>,
    private_network: bool,
    nspawn_args: Vec<String>,
    boot_timeout: Duration,
    stop_timeout: Duration,
    prepare: Vec<Prepare>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("binds", &self.binds)
            .field("block_devices", &self.block_devices)
            .field("masks", &self.masks)
            .field("private_network", &self.private_network)
            .field("nspawn_args", &self.nspawn_args)
            .field("boot_timeout", &self.boot_timeout)
            .field("stop_timeout", &self.stop_timeout)
            .field("prepare", &self.prepare.len())
            .finish()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            name: None,
            binds: Vec::new(),
            block_devices: Vec::new(),
            masks: Vec::new(),
            private_network: true,
            nspawn_args: Vec::new(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            prepare: Vec::new(),
        }
    }

    /// Machine name and hostname (default `cairn-ct-<pid>-<n>`, unique per
    /// process and call). Letters, digits, `-`, `_`, `.`; at most 64 bytes.
    /// It also names the container's cgroup, so it must be unique among the
    /// containers running on the machine.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Bind-mount host path `host` at `inside` (read-write). Useful for
    /// directories outside the root filesystem (other mounts are not part
    /// of the overlay) or to share a directory between host and container.
    pub fn bind(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push((host.into(), inside.into(), false));
        self
    }

    /// Like [`Builder::bind`], read-only.
    pub fn bind_ro(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push((host.into(), inside.into(), true));
        self
    }

    /// Pass a host block device (e.g. an attached `/dev/loop3`) in at boot
    /// (`--bind=`), at the same path, so an enabled mount unit can mount it
    /// during boot; its `/dev/disk/by-label|by-uuid` links are added once
    /// booted. For devices attached later use [`Container::add_block_device`].
    pub fn block_device(mut self, device: impl Into<PathBuf>) -> Self {
        self.block_devices.push(device.into());
        self
    }

    /// Mask a unit (link it to `/dev/null`) before boot, on top of
    /// [`DEFAULT_MASKS`].
    pub fn mask(mut self, unit: &str) -> Self {
        self.masks.push(unit.to_owned());
        self
    }

    /// Share the host's network namespace instead of a private one (then
    /// only one container at a time can run services that listen on fixed
    /// ports, such as PostgreSQL).
    pub fn host_network(mut self) -> Self {
        self.private_network = false;
        self
    }

    /// One more raw `systemd-nspawn` argument (e.g. `--setenv=X=1`).
    pub fn nspawn_arg(mut self, arg: &str) -> Self {
        self.nspawn_args.push(arg.to_owned());
        self
    }

    /// Run `f(root)` after the overlay is mounted and before the container
    /// boots, e.g. to install and enable units (mount units: fstab device
    /// lines are ignored in containers).
    pub fn prepare(mut self, f: impl FnOnce(&Path) -> Result<()> + Send + 'static) -> Self {
        self.prepare.push(Box::new(f));
        self
    }

    /// Bound on reaching `running`/`degraded` (default 90 s).
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.boot_timeout = t;
        self
    }

    /// Bound on the orderly poweroff at teardown before SIGKILL (default 30 s).
    pub fn stop_timeout(mut self, t: Duration) -> Self {
        self.stop_timeout = t;
        self
    }

    /// Mount the overlay, boot, and wait until the container's systemd is
    /// `running` or `degraded` (then its failed units are printed to stderr).
    /// On any error everything set up so far is torn down.
    pub fn boot(self) -> Result<Container> {
        available().map_err(|e| anyhow!("cannot boot a container here: {e}"))?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = self.name.clone().unwrap_or_else(|| {
            format!(
                "cairn-ct-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "invalid machine name {name:?}"
        );
        for (h, i, _) in &self.binds {
            for p in [h, i] {
                ensure!(
                    p.is_absolute() && !p.to_string_lossy().contains(':'),
                    "bind paths must be absolute and without ':': {}",
                    p.display()
                );
            }
        }
        let host_systemd = Path::new("/run/systemd/system").is_dir();
        let cgroups = if host_systemd {
            Vec::new()
        } else {
            own_cgroups(&name)?
        };
        let base = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir_in(scratch_parent()?)
            .context("creating the container's scratch dir")?
            .keep();
        let root = base.join("root");

        let mut nspawn: Vec<String> = vec![
            "systemd-nspawn".into(),
            format!("--directory={}", root.display()),
            "--boot".into(),
            format!("--machine={name}"),
            "--register=no".into(),
            "--link-journal=no".into(),
            "--console=read-only".into(),
            "--setenv=SYSTEMD_COLORS=0".into(),
        ];
        if host_systemd {
            nspawn.push("--property=DeviceAllow=block-loop rwm".into());
        } else {
            nspawn.push("--keep-unit".into());
        }
        if self.private_network {
            nspawn.push("--private-network".into());
        }
        for d in &self.block_devices {
            nspawn.push(format!("--bind={}", d.display()));
        }
        for (h, i, ro) in &self.binds {
            let opt = if *ro { "--bind-ro" } else { "--bind" };
            nspawn.push(format!("{opt}={}:{}", h.display(), i.display()));
        }
        nspawn.extend(self.nspawn_args.iter().cloned());

        let cgroup_list = cgroups
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("cairn-ct-supervisor")
            .arg(&name)
            .arg(&base)
            .arg(&root)
            .arg(self.stop_timeout.as_secs().max(1).to_string())
            .args(&nspawn)
            .env("CAIRN_CT_CGROUPS", cgroup_list)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&base);
                return Err(e).context("starting the container supervisor (sh)");
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = Arc::clone(&log);
            let name = name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[container {name}] {line}");
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        };
        // From here on, dropping `c` tears down whatever exists.
        let mut c = Container {
            console: base.join("console.log"),
            name,
            base,
            root,
            cgroups,
            nspawn_pid: 0,
            leader: 0,
            boot_state: String::new(),
            stop_timeout: self.stop_timeout,
            supervisor: Some(Supervisor {
                child,
                stdin,
                log,
                reader: Some(reader),
            }),
        };

        for cg in &c.cgroups {
            std::fs::create_dir_all(cg)
                .with_context(|| format!("creating cgroup {}", cg.display()))?;
        }
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(c.base.join(d))?;
        }
        let opts = format!(
            "lowerdir=/,upperdir={},workdir={}",
            c.base.join("upper").display(),
            c.base.join("work").display()
        );
        let m = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&c.root)
            .output()
            .context("running mount")?;
        ensure!(
            m.status.success(),
            "mounting the overlay on {}: {}",
            c.root.display(),
            String::from_utf8_lossy(&m.stderr).trim()
        );
        prepare_root(&c.root, &c.name, &self.masks)?;
        for f in self.prepare {
            f(&c.root).context("Builder::prepare")?;
        }

        let sup = c.supervisor.as_mut().expect("supervisor");
        let stdin = sup.stdin.as_mut().expect("supervisor stdin");
        stdin
            .write_all(b"start\n")
            .and_then(|()| stdin.flush())
            .context("talking to the container supervisor")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        c.nspawn_pid = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => bail!(
                "the container supervisor did not start systemd-nspawn{}",
                c.diagnostics()
            ),
        };

        let deadline = Instant::now() + self.boot_timeout;
        loop {
            if let Some(l) = find_leader(c.nspawn_pid) {
                c.leader = l;
                break;
            }
            if !alive(c.nspawn_pid) {
                bail!("systemd-nspawn exited during boot{}", c.diagnostics());
            }
            if Instant::now() >= deadline {
                bail!(
                    "systemd did not start within {:?}{}",
                    self.boot_timeout,
                    c.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let o = c.exec_with(
                &["systemctl", "is-system-running", "--wait"],
                &ExecOpts {
                    timeout: Some(remaining.max(Duration::from_secs(1))),
                    ..ExecOpts::default()
                },
            );
            let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                c.boot_state = state;
                break;
            }
            let last = format!("{state} {}", String::from_utf8_lossy(&o.stderr).trim());
            if !alive(c.nspawn_pid) {
                bail!("systemd-nspawn exited during boot{}", c.diagnostics());
            }
            if Instant::now() >= deadline {
                bail!(
                    "container {} did not finish booting within {:?} (last `systemctl \
                     is-system-running --wait`: {}){}",
                    c.name,
                    self.boot_timeout,
                    last.trim(),
                    c.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if c.boot_state == "degraded" {
            let failed = c.systemctl(&["--failed", "--plain", "--no-legend"]);
            eprintln!(
                "[container {}] booted degraded; failed units:\n{}",
                c.name,
                String::from_utf8_lossy(&failed.stdout)
            );
        }
        for d in &self.block_devices {
            c.add_block_device(d)?;
        }
        Ok(c)
    }
}

/// Remove the machine id, set the hostname, mask units.
fn prepare_root(root: &Path, name: &str, masks: &[String]) -> Result<()> {
    // systemd would copy the D-Bus one (the host's id) if it were there.
    for id in ["etc/machine-id", "var/lib/dbus/machine-id"] {
        match std::fs::remove_file(root.join(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {id}"))
            }
            _ => {}
        }
    }
    std::fs::write(root.join("etc/hostname"), format!("{name}\n"))?;
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units)?;
    for unit in DEFAULT_MASKS
        .iter()
        .copied()
        .chain(masks.iter().map(|s| s.as_str()))
    {
        ensure!(
            !unit.is_empty() && !unit.contains('/'),
            "bad unit name {unit:?}"
        );
        let p = units.join(unit);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::os::unix::fs::symlink("/dev/null", &p).with_context(|| format!("masking {unit}"))?;
    }
    Ok(())
}

struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

/// A booted container; see the module doc. Torn down on drop.
pub struct Container {
    name: String,
    base: PathBuf,
    root: PathBuf,
    console: PathBuf,
    cgroups: Vec<PathBuf>,
    nspawn_pid: i32,
    leader: i32,
    boot_state: String,
    stop_timeout: Duration,
    supervisor: Option<Supervisor>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("nspawn_pid", &self.nspawn_pid)
            .field("leader", &self.leader)
            .finish()
    }
}

impl Container {
    /// Boot one with the default options ([`Builder`]).
    pub fn boot() -> Result<Container> {
        Builder::new().boot()
    }

    /// Options for booting one.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Whether this machine can boot a container: `Err(reason)` if not (not
    /// root, a tool missing, overlayfs not working), for tests to print
    /// `SKIPPED: <reason>` and return. Checked once per process.
    pub fn available() -> Result<(), String> {
        available()
    }

    /// The machine name, which is also the hostname inside.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host path of the container's root filesystem (the overlay): files
    /// written here are seen inside at the same path below `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of `path` as the container sees it right now, through
    /// `/proc/<PID 1>/root` — includes the container's own `/dev`, `/run`,
    /// `/tmp`. Absolute symlinks met on the way resolve against the host's
    /// root, not the container's.
    pub fn live_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Host PID of the container's systemd (its PID 1).
    pub fn leader_pid(&self) -> i32 {
        self.leader
    }

    /// Host PID of `systemd-nspawn`.
    pub fn nspawn_pid(&self) -> i32 {
        self.nspawn_pid
    }

    /// `running` or `degraded`: what `systemctl is-system-running` said
    /// when the boot finished.
    pub fn boot_state(&self) -> &str {
        &self.boot_state
    }

    /// The console output so far (systemd's boot and shutdown messages).
    pub fn console_log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &std::fs::read(&self.console).unwrap_or_default(),
        ))
    }

    /// Run a command inside (`nsenter --all`), wait, return its output.
    /// Panics only if `nsenter` cannot be started.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(args, &ExecOpts::default())
    }

    /// [`Container::exec`] with extra environment, stdin and a timeout.
    pub fn exec_with(&self, args: &[&str], opts: &ExecOpts) -> Output {
        assert!(!args.is_empty(), "exec: empty command");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.leader))
            .arg("--all")
            .arg("--")
            .args(args)
            .env_clear()
            .envs(BASE_ENV.iter().copied())
            .envs(opts.env.iter().copied())
            .stdin(if opts.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("container {}: cannot run nsenter: {e}", self.name));
        collect(child, opts.stdin, opts.timeout)
    }

    /// Copy these built cairn binaries (found by [`crate::Bins`]) into the container at
    /// `/opt/cairn-test/bin` and return that directory (as seen inside). The checkout may
    /// lie where the container has mounts of its own (a clone under `/tmp` is hidden by
    /// the container's `/tmp`), so tests run copies, not the files under `target/`.
    pub fn install_bins(&self, names: &[&str]) -> PathBuf {
        let inside = PathBuf::from("/opt/cairn-test/bin");
        let dir = self.root().join("opt/cairn-test/bin");
        std::fs::create_dir_all(&dir).expect("create /opt/cairn-test/bin in the container");
        for n in names {
            let from = crate::Bins::locate().path(n);
            std::fs::copy(&from, dir.join(n))
                .unwrap_or_else(|e| panic!("copy {} into the container: {e}", from.display()));
        }
        inside
    }

    /// Install the project's units (`units/*.service`, `*.timer`) the way a package does,
    /// into `/usr/local/lib/systemd/system` inside, with their `/usr/bin/` program paths
    /// pointing at `bindir` (where [`Self::install_bins`] puts the binaries; the ones the
    /// units run are copied there too), and the man pages into `/usr/local/share/man`,
    /// then reload systemd. Returns the unit names.
    pub fn install_units(&self, bindir: &Path) -> Vec<String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../units");
        let dest = self.root().join("usr/local/lib/systemd/system");
        std::fs::create_dir_all(&dest).expect("create the unit directory in the container");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&src).expect("read units/") {
            let p = e.expect("read units/").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".service") || name.ends_with(".timer")) {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read a unit file");
            // The programs the unit runs come along (as `install_bins` copies them).
            let progs: Vec<String> = text
                .match_indices("/usr/bin/cairn")
                .map(|(i, _)| {
                    text[i + "/usr/bin/".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect()
                })
                .collect();
            let progs: Vec<&str> = progs.iter().map(String::as_str).collect();
            self.install_bins(&progs);
            let text = text.replace("/usr/bin/", &format!("{}/", bindir.display()));
            std::fs::write(dest.join(&name), text).expect("write a unit file");
            names.push(name);
        }
        // The man pages too, which the units' Documentation= names.
        let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
        for e in std::fs::read_dir(&man).expect("read man/") {
            let p = e.expect("read man/").path();
            let Some(section) = p.extension().and_then(|x| x.to_str()) else {
                continue;
            };
            let dir = self
                .root()
                .join(format!("usr/local/share/man/man{section}"));
            std::fs::create_dir_all(&dir).expect("create a man directory in the container");
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).expect("copy a man page");
        }
        let o = self.systemctl(&["daemon-reload"]);
        assert!(o.status.success(), "daemon-reload: {o:?}");
        names.sort();
        names
    }

    /// The first message in `user`'s mailbox inside the container (`/var/mail/USER`, as
    /// the container's exim4 delivers) whose subject contains `needle`, waiting up to
    /// `timeout`; on timeout, a panic that shows the subjects there, exim's log and queue,
    /// and the end of the journal.
    pub fn wait_for_mail(
        &self,
        user: &str,
        needle: &str,
        timeout: Duration,
    ) -> crate::mta::Message {
        let mbox = self.root().join(format!("var/mail/{user}"));
        let deadline = Instant::now() + timeout;
        loop {
            let data = std::fs::read(&mbox).unwrap_or_default();
            if let Some(m) = crate::mta::parse_mbox(&data)
                .into_iter()
                .find(|m| m.subject().contains(needle))
            {
                return m;
            }
            if Instant::now() >= deadline {
                let log = self.sh("tail -n 20 /var/log/exim4/mainlog; exim4 -bp");
                panic!(
                    "no mail with {needle:?} in {}; subjects: {:?}\nexim: {}{}\njournal: {}",
                    mbox.display(),
                    crate::mta::parse_mbox(&data)
                        .iter()
                        .map(|m| m.subject())
                        .collect::<Vec<_>>(),
                    String::from_utf8_lossy(&log.stdout),
                    String::from_utf8_lossy(&log.stderr),
                    self.journal(&["-n", "60"])
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/bin/sh -c script` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// [`Self::sh`] that must succeed (else a panic with its output); its stdout.
    #[track_caller]
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "`{script}` failed: {}",
            crate::output_text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `systemctl --no-pager ARGS` inside.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut v = vec!["systemctl", "--no-pager"];
        v.extend_from_slice(args);
        self.exec(&v)
    }

    /// `journalctl --no-pager ARGS` inside, after `journalctl --sync` (so
    /// everything logged before the call is in); returns stdout. Panics if
    /// journalctl fails.
    pub fn journal(&self, args: &[&str]) -> String {
        let _ = self.exec(&["journalctl", "--sync"]);
        let mut v = vec!["journalctl", "--no-pager"];
        v.extend_from_slice(args);
        let o = self.exec(&v);
        assert!(
            o.status.success(),
            "container {}: {v:?} failed ({}): {}",
            self.name,
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Poll (every 50 ms) until `unit`'s `ActiveState` or `SubState` is
    /// `state` (e.g. `active`, `failed`, `mounted`, `exited`, `running`,
    /// `inactive`). The error says what it was and shows `systemctl status`.
    pub fn wait_for_unit_state(&self, unit: &str, state: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.systemctl(&["show", "--property=ActiveState,SubState", unit]);
            let out = String::from_utf8_lossy(&o.stdout);
            let mut seen = Vec::new();
            for line in out.lines() {
                if let Some((_, v)) = line.split_once('=') {
                    seen.push(v.to_owned());
                }
            }
            if seen.iter().any(|s| s == state) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let status = self.systemctl(&["status", "--lines=20", unit]);
                bail!(
                    "container {}: {unit} did not become {state:?} within {timeout:?} (it is \
                     {}{})\n{}{}",
                    self.name,
                    seen.join("/"),
                    String::from_utf8_lossy(&o.stderr).trim(),
                    String::from_utf8_lossy(&status.stdout),
                    String::from_utf8_lossy(&status.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Make a host block device (e.g. a loop device attached with `losetup
    /// --find --show`) usable inside, at the same path: creates its node in
    /// the container's `/dev` (`mknod`, same mode and owner) unless there,
    /// plus `/dev/disk/by-label/…` and `/dev/disk/by-uuid/…` links as udev
    /// would from `blkid -p`. Returns the path inside (the host path with
    /// symlinks resolved). See the module doc.
    pub fn add_block_device(&self, device: impl AsRef<Path>) -> Result<PathBuf> {
        let device = device.as_ref();
        let meta =
            std::fs::metadata(device).with_context(|| format!("stat {}", device.display()))?;
        ensure!(
            meta.file_type().is_block_device(),
            "{} is not a block device",
            device.display()
        );
        let inside = std::fs::canonicalize(device)?;
        let rel = inside
            .strip_prefix("/dev")
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .ok_or_else(|| anyhow!("{} is not under /dev", inside.display()))?
            .to_owned();
        let node = self.live_path(&inside);
        match std::fs::symlink_metadata(&node) {
            Ok(m) if m.file_type().is_block_device() && m.rdev() == meta.rdev() => {}
            Ok(_) => bail!(
                "container {}: {} exists and is not {}",
                self.name,
                inside.display(),
                device.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = node.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &node,
                    rustix::fs::FileType::BlockDevice,
                    rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
                    meta.rdev(),
                )
                .with_context(|| format!("mknod {} in the container", inside.display()))?;
                std::os::unix::fs::lchown(&node, Some(meta.uid()), Some(meta.gid()))?;
            }
            Err(e) => return Err(e).context(format!("stat {}", node.display())),
        }
        let probe = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&inside)
            .output()
            .context("running blkid")?;
        if probe.status.success() {
            let target = Path::new("../..").join(&rel);
            for line in String::from_utf8_lossy(&probe.stdout).lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let dir = match key {
                    "LABEL" => "by-label",
                    "UUID" => "by-uuid",
                    _ => continue,
                };
                let value = unescape_export(value);
                if value.is_empty() {
                    continue;
                }
                let dir = self.live_path(Path::new("/dev/disk").join(dir));
                std::fs::create_dir_all(&dir)?;
                let link = dir.join(udev_encode(&value));
                if link.symlink_metadata().is_ok() {
                    std::fs::remove_file(&link)?;
                }
                std::os::unix::fs::symlink(&target, &link)
                    .with_context(|| format!("creating {}", link.display()))?;
            }
        }
        Ok(inside)
    }

    /// Power off and clean up now (see the module doc), and check that no
    /// mount, process, directory or cgroup is left. Drop does the same.
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let Some(mut sup) = self.supervisor.take() else {
            return Ok(());
        };
        drop(sup.stdin.take()); // EOF: the supervisor tears down
        let deadline = Instant::now() + self.stop_timeout + Duration::from_secs(60);
        let mut problems = Vec::new();
        let status = loop {
            match sup.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => problems.push(format!("the supervisor failed ({s})")),
            None => {
                problems.push("the supervisor did not finish; killed it".to_owned());
                let _ = sup.child.kill();
                let _ = sup.child.wait();
                if self.nspawn_pid > 0 && is_our_process(self.nspawn_pid, &self.name) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(self.nspawn_pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = rustix::mount::unmount(&self.root, rustix::mount::UnmountFlags::DETACH);
            }
        }
        if let Some(r) = sup.reader.take() {
            let _ = r.join();
        }
        if is_mounted(&self.root) {
            problems.push(format!("{} is still mounted", self.root.display()));
        }
        if self.base.exists() {
            problems.push(format!("{} still exists", self.base.display()));
        }
        if self.nspawn_pid > 0 && is_our_process(self.nspawn_pid, &self.name) {
            problems.push(format!("systemd-nspawn {} still runs", self.nspawn_pid));
        }
        for cg in &self.cgroups {
            if cg.exists() {
                problems.push(format!("cgroup {} still exists", cg.display()));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let log = sup.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(anyhow!(
            "container {}: teardown: {}{}",
            self.name,
            problems.join("; "),
            if log.is_empty() {
                String::new()
            } else {
                format!("\nsupervisor said:\n{log}")
            }
        ))
    }

    /// The console tail and the supervisor's messages, for error reports.
    fn diagnostics(&self) -> String {
        let console = self.console_log();
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        let sup = self
            .supervisor
            .as_ref()
            .map(|s| s.log.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        let mut s = format!(
            "\n--- console log tail ({}) ---\n{tail}",
            self.console.display()
        );
        if !sup.trim().is_empty() {
            s.push_str(&format!("\n--- supervisor ---\n{sup}"));
        }
        s
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("{e:#}");
        }
    }
}

/// The start of every container test: false, with `SKIPPED:` printed, when not root
/// (containers need it); as root, a host that cannot boot one is a failure, not a skip
/// (`.ci/run` installs what they need).
pub fn ready() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (containers, loop devices)");
        return false;
    }
    available().expect("a booted systemd container (see .ci/run)");
    true
}

/// See [`Container::available`].
pub fn available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE.get_or_init(check_available).clone()
}

fn check_available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (overlay mounts, systemd-nspawn)".into());
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("mount", "mount"),
        ("umount", "mount"),
        ("mountpoint", "util-linux"),
        ("blkid", "util-linux"),
        ("sh", "dash"),
    ] {
        if find_in_path(tool).is_none() {
            return Err(format!("`{tool}` not found (Debian package {package})"));
        }
    }
    if !["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        return Err("systemd is not installed (nothing to boot)".into());
    }
    let parent = scratch_parent().map_err(|e| format!("{e:#}"))?;
    let probe = tempfile::Builder::new()
        .prefix("cairn-ct-probe.")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a scratch dir in {}: {e}", parent.display()))?;
    let p = probe.path();
    for d in ["upper", "work", "root"] {
        std::fs::create_dir(p.join(d)).map_err(|e| e.to_string())?;
    }
    let root = p.join("root");
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir=/,upperdir={},workdir={}",
            p.join("upper").display(),
            p.join("work").display()
        ))
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot mount an overlay of / in {}: {}",
            parent.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let ok = root.join("etc").is_dir();
    let _ = Command::new("umount").arg(&root).status();
    if is_mounted(&root) {
        let _ = rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH);
    }
    if is_mounted(&root) {
        // Never let TempDir delete through the mount.
        let kept = probe.keep();
        return Err(format!(
            "cannot unmount the probe overlay {}",
            kept.display()
        ));
    }
    if !ok {
        return Err("the overlay of / does not show /etc".into());
    }
    Ok(())
}

/// `$CAIRN_TEST_TMPDIR`, else `/var/tmp` (on disk, unlike a tmpfs `/tmp`).
fn scratch_parent() -> Result<PathBuf> {
    let p = std::env::var_os(crate::fixture::TMPDIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let s = p.to_string_lossy();
    ensure!(
        p.is_absolute() && !s.contains([',', ':', '\n', ' ', '\\']),
        "container scratch dir {s:?} must be absolute, without , : \\ space or newline \
         (overlay options)"
    );
    Ok(p)
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(CONTAINER_PATH.split(':').map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `<mount point of the hierarchy>/<our cgroup>/<name>` for the unified
/// (cgroup2) hierarchy and the v1 `name=systemd` one, where mounted.
fn own_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let mine = std::fs::read_to_string("/proc/self/cgroup").context("/proc/self/cgroup")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    let mut seen_v2 = false;
    let mut seen_named = false;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (mnt_root, mount_point) = (pre[3], pre[4]);
        let controllers = match post[0] {
            "cgroup2" if !seen_v2 => {
                seen_v2 = true;
                ""
            }
            "cgroup" if !seen_named && post[2].split(',').any(|o| o == "name=systemd") => {
                seen_named = true;
                "name=systemd"
            }
            _ => continue,
        };
        let Some(path) = mine.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            (c == controllers).then_some(p)
        }) else {
            continue;
        };
        let rel = path
            .strip_prefix(mnt_root)
            .unwrap_or(path)
            .trim_start_matches('/');
        out.push(Path::new(mount_point).join(rel).join(name));
    }
    Ok(out)
}

/// (comm, state, ppid) from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(String, char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let mut rest = s.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Exists and is not a zombie.
fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, state, _)) if state != 'Z')
}

/// The container's PID 1: a child of nspawn that is PID 1 in its own PID
/// namespace and has exec'd systemd.
fn find_leader(nspawn: i32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match proc_stat(pid) {
            Some((comm, state, ppid)) if ppid == nspawn && comm == "systemd" && state != 'Z' => {}
            _ => continue,
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
        if nspid.and_then(|l| l.split_whitespace().last()) == Some("1") {
            return Some(pid);
        }
    }
    None
}

/// Whether `pid` is alive and its command line mentions `name` (so a
/// reused PID is not mistaken for our nspawn).
fn is_our_process(pid: i32, name: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .any(|a| String::from_utf8_lossy(a).contains(name))
            })
            .unwrap_or(false)
}

/// Whether `path` is a mount point in our mount namespace.
fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|mi| {
            mi.lines()
                .any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*want))
        })
        .unwrap_or(false)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `blkid -o export` escapes with backslashes.
fn unescape_export(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How udev names `/dev/disk/by-label/…` links: bytes other than ASCII
/// alphanumerics, `#+-.:=@_` and non-ASCII UTF-8 become `\xNN`.
fn udev_encode(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
    }
    out
}

/// Remove ANSI CSI sequences (colours) from console output.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for n in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&n) {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Feed stdin, gather stdout/stderr, wait (killing the process group after
/// `timeout`).
fn collect(mut child: Child, stdin: Option<&[u8]>, timeout: Option<Duration>) -> Output {
    let input = child.stdin.take();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    std::thread::scope(|s| {
        if let (Some(mut pipe), Some(data)) = (input, stdin) {
            s.spawn(move || {
                let _ = pipe.write_all(data);
            });
        }
        let out_t = s.spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_t = s.spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let (status, timed_out) = wait_bounded(&mut child, timeout);
        let stdout = out_t.join().unwrap_or_default();
        let mut stderr = err_t.join().unwrap_or_default();
        if let Some(t) = timed_out {
            stderr.extend_from_slice(format!("\n[container: killed after {t:?}]\n").as_bytes());
        }
        Output {
            status,
            stdout,
            stderr,
        }
    })
}

fn wait_bounded(child: &mut Child, timeout: Option<Duration>) -> (ExitStatus, Option<Duration>) {
    let Some(t) = timeout else {
        return (child.wait().expect("wait for nsenter"), None);
    };
    let deadline = Instant::now() + t;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(s) = child.try_wait().expect("wait for nsenter") {
            return (s, None);
        }
        if Instant::now() >= deadline {
            kill_command(child);
            return (child.wait().expect("wait for nsenter"), Some(t));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(25));
    }
}

/// Kill what nsenter runs, then nsenter. nsenter forks the command into the
/// container's PID namespace; the command and whatever it started share the
/// process group we gave nsenter. Killing nsenter along with them would
/// orphan the command to a reaper *outside* the container (the host's init,
/// or a subreaper such as a test runner), which may leave it a zombie for
/// long; the container's systemd then waits 10 s for it at poweroff. Killed
/// first, the command is reaped by nsenter, its children by the container's
/// PID 1, and nsenter exits by itself.
fn kill_command(nsenter: &mut Child) {
    let leader = nsenter.id() as i32;
    let sigkill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    for _ in 0..50 {
        let mut found = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid != leader && proc_pgrp(pid) == Some(leader) && alive(pid) {
                sigkill(pid);
                found = true;
            }
        }
        if !found || matches!(nsenter.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match nsenter.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            // Not reaped, so the PID is still nsenter's.
            Ok(None) => break sigkill(leader),
            _ => break,
        }
    }
}

/// The process group of `pid`, from `/proc/PID/stat`.
fn proc_pgrp(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = s.rfind(')')?;
    s.get(close + 1..)?.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udev_names() {
        assert_eq!(udev_encode("CAIRN-1"), "CAIRN-1");
        assert_eq!(udev_encode("my disk/x"), "my\\x20disk\\x2fx");
    }

    #[test]
    fn export_values() {
        assert_eq!(unescape_export("my\\ disk"), "my disk");
    }

    #[test]
    fn ansi() {
        assert_eq!(strip_ansi("[\x1b[0;32m  OK  \x1b[0m] x\r"), "[  OK  ] x");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/a\\0"), "/a\\0");
    }
}
