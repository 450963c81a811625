//! Self-tests of `cairn_tests::container`: a real systemd boots, answers on
//! D-Bus, runs units and logs them to its journal, sees unit files written
//! from the host, mounts a host loop device with a mount unit, runs next to a
//! second container without interference, and leaves nothing behind — even
//! when the test panics or its process is SIGKILLed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::container::{Builder, Container, ExecOpts};

fn skip() -> bool {
    match Container::available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[track_caller]
fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text(o)
}

/// What a container leaves behind, checked after teardown.
struct Traces {
    name: String,
    root: PathBuf,
    base: PathBuf,
    nspawn: i32,
    leader: i32,
}

impl Traces {
    fn of(c: &Container) -> Traces {
        Traces {
            name: c.name().to_owned(),
            root: c.root().to_owned(),
            base: c.root().parent().unwrap().to_owned(),
            nspawn: c.nspawn_pid(),
            leader: c.leader_pid(),
        }
    }

    /// Everything that is still there, empty if nothing.
    fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        let base = self.base.to_string_lossy().into_owned();
        for line in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
        {
            if line.contains(&base) {
                left.push(format!("mount: {line}"));
            }
        }
        if self.base.exists() {
            left.push(format!("dir {}", self.base.display()));
        }
        for pid in [self.nspawn, self.leader] {
            if Path::new(&format!("/proc/{pid}")).exists() {
                left.push(format!("process {pid}"));
            }
        }
        // Any process whose command line names the machine (nspawn has
        // --machine=NAME), and any cgroup named after it.
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
                let ours = cmdline.split(|&b| b == 0).any(|a| {
                    let a = String::from_utf8_lossy(a);
                    a == self.name || a.ends_with(&format!("={}", self.name)) || a.contains(&base)
                });
                if ours {
                    left.push(format!(
                        "process {}: {}",
                        e.file_name().to_string_lossy(),
                        String::from_utf8_lossy(&cmdline).replace('\0', " ")
                    ));
                }
            }
        }
        for h in [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let p = Path::new(h).join(&self.name);
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
        if Path::new("/run/systemd/nspawn/propagate")
            .join(&self.name)
            .exists()
        {
            left.push("/run/systemd/nspawn/propagate entry".to_owned());
        }
        left
    }

    #[track_caller]
    fn assert_gone(&self) {
        let left = self.left();
        assert!(left.is_empty(), "left behind: {left:#?}");
    }

    #[track_caller]
    fn assert_gone_within(&self, t: Duration) {
        let deadline = Instant::now() + t;
        while !self.left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.assert_gone();
    }
}

#[test]
fn boots_answers_on_dbus_runs_units_and_tears_down() {
    if skip() {
        return;
    }
    let share = cairn_tests::fixture::tempdir().unwrap();
    std::fs::write(share.path().join("from-host"), "shared\n").unwrap();
    let t0 = Instant::now();
    let c = Builder::new()
        .bind(share.path(), "/mnt/cairn-share")
        .mask("cairn-selftest-masked.service")
        .boot()
        .unwrap();
    eprintln!("booted {} in {:?}", c.name(), t0.elapsed());
    let traces = Traces::of(&c);

    // Booted, and really a separate systemd as PID 1 of its own PID namespace.
    assert!(
        ["running", "degraded"].contains(&c.boot_state()),
        "{}",
        c.boot_state()
    );
    let state = text(&c.systemctl(&["is-system-running"]));
    assert!(["running", "degraded"].contains(&state.as_str()), "{state}");
    assert_eq!(ok(&c.exec(&["cat", "/proc/1/comm"])), "systemd");
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let inner_pidns = ok(&c.exec(&["readlink", "/proc/self/ns/pid"]));
    assert_ne!(inner_pidns, host_pidns.to_string_lossy());
    assert_eq!(ok(&c.exec(&["hostname"])), c.name());
    let machine_id = ok(&c.exec(&["cat", "/etc/machine-id"]));
    assert_eq!(machine_id.len(), 32, "{machine_id}");
    let host_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    assert_ne!(
        machine_id,
        host_id.trim(),
        "the container has the host's machine id"
    );

    // Builder options: a bind mount (both ways), masks (the default and ours).
    assert_eq!(
        ok(&c.exec(&["cat", "/mnt/cairn-share/from-host"])),
        "shared"
    );
    ok(&c.sh("echo back > /mnt/cairn-share/from-container"));
    assert_eq!(
        std::fs::read_to_string(share.path().join("from-container")).unwrap(),
        "back\n"
    );
    for unit in [
        "cairn-selftest-masked.service",
        "systemd-networkd-wait-online.service",
    ] {
        let load = c.systemctl(&["show", "-p", "LoadState", "--value", unit]);
        assert_eq!(text(&load), "masked", "{unit}");
    }

    // The system bus answers, and systemd is on it (through dbus-daemon).
    let virt = ok(&c.exec(&[
        "busctl",
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "Virtualization",
    ]));
    assert_eq!(virt, "s \"systemd-nspawn\"");
    let names = ok(&c.exec(&[
        "busctl",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListNames",
    ]));
    assert!(names.contains("\"org.freedesktop.systemd1\""), "{names}");

    // A transient unit runs, its exit status comes back, its output is in the journal.
    let token = format!(
        "cairn-selftest-{}-{}",
        std::process::id(),
        t0.elapsed().as_nanos()
    );
    ok(&c.exec(&[
        "systemd-run",
        "--wait",
        "--quiet",
        "--unit=cairn-selftest-echo",
        "/bin/sh",
        "-c",
        &format!("echo {token}"),
    ]));
    let log = c.journal(&["-u", "cairn-selftest-echo.service", "-o", "cat"]);
    assert!(log.contains(&token), "{token} not in the journal:\n{log}");
    let failing = c.exec(&[
        "systemd-run",
        "--wait",
        "--quiet",
        "/bin/sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(failing.status.code(), Some(3), "{failing:?}");

    // exec with environment and stdin.
    let o = c.exec_with(
        &[
            "/bin/sh",
            "-c",
            "read line; echo \"$GREETING, $line\"; echo oops >&2; exit 4",
        ],
        &ExecOpts {
            env: &[("GREETING", "hello")],
            stdin: Some(b"container\n"),
            ..ExecOpts::default()
        },
    );
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(text(&o), "hello, container");
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "oops");

    // A timeout kills the command (inside the container too) and returns promptly.
    let t = Instant::now();
    let o = c.exec_with(
        &["/bin/sh", "-c", "sleep 600"],
        &ExecOpts {
            timeout: Some(Duration::from_millis(500)),
            ..ExecOpts::default()
        },
    );
    assert!(!o.status.success());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let sleeps = c.exec(&["pgrep", "-f", "sleep 600"]);
    assert!(
        !sleeps.status.success(),
        "sleep still runs: {}",
        text(&sleeps)
    );

    // A unit file written from the host is seen after daemon-reload and starts.
    std::fs::write(
        c.root().join("etc/systemd/system/cairn-selftest.service"),
        "[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/bin/sh -c 'echo started-by-unit > /run/cairn-selftest.flag'\n",
    )
    .unwrap();
    ok(&c.systemctl(&["daemon-reload"]));
    ok(&c.systemctl(&["start", "cairn-selftest.service"]));
    c.wait_for_unit_state("cairn-selftest.service", "exited", Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        ok(&c.exec(&["cat", "/run/cairn-selftest.flag"])),
        "started-by-unit"
    );
    // /run is the container's own tmpfs: seen through live_path, not root().
    assert_eq!(
        std::fs::read_to_string(c.live_path("/run/cairn-selftest.flag")).unwrap(),
        "started-by-unit\n"
    );
    assert!(!c.root().join("run/cairn-selftest.flag").exists());

    // wait_for_unit_state fails (in time, saying why) when the state never comes.
    let t = Instant::now();
    let err = c
        .wait_for_unit_state(
            "cairn-selftest.service",
            "failed",
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("active/exited"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // The host is untouched: the unit file only exists in the overlay.
    assert!(!Path::new("/etc/systemd/system/cairn-selftest.service").exists());

    let t = Instant::now();
    c.shutdown().unwrap();
    eprintln!("shut down in {:?}", t.elapsed());
    traces.assert_gone();
}

/// An ext4 image attached to a loop device; detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(dir: &Path, label: &str) -> Loop {
        let img = dir.join(format!("{label}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        ok(&Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label])
            .arg(&img)
            .output()
            .unwrap());
        let dev = ok(&Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .unwrap());
        Loop { dev: dev.into() }
    }

    /// Mount on the host, read a file, unmount.
    fn read(&self, dir: &Path, file: &str) -> String {
        let mnt = dir.join(format!(
            "mnt-{}",
            self.dev.file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(&mnt).unwrap();
        ok(&Command::new("mount")
            .args(["-o", "ro"])
            .arg(&self.dev)
            .arg(&mnt)
            .output()
            .unwrap());
        let content = std::fs::read_to_string(mnt.join(file));
        ok(&Command::new("umount").arg(&mnt).output().unwrap());
        content.unwrap_or_else(|e| panic!("{file} on {}: {e}", self.dev.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn host_loop_devices_are_mounted_by_mount_units_inside() {
    if skip() {
        return;
    }
    let tmp = cairn_tests::fixture::tempdir().unwrap();
    // Declared before the container: detached after it is gone.
    let at_boot = Loop::new(tmp.path(), "CAIRNBOOT");
    let later = Loop::new(tmp.path(), "CAIRN LATE");
    let boot_dev = at_boot.dev.to_string_lossy().into_owned();
    let unit = format!(
        "[Mount]\nWhat={boot_dev}\nWhere=/mnt/cairn-boot\nType=ext4\n\
         [Install]\nWantedBy=local-fs.target\n"
    );
    let c = Builder::new()
        .block_device(&at_boot.dev)
        .prepare(move |root| {
            // A mount unit for the device passed in at boot, enabled: mounted during boot.
            let units = root.join("etc/systemd/system");
            std::fs::write(units.join("mnt-cairn\\x2dboot.mount"), unit)?;
            std::fs::create_dir_all(units.join("local-fs.target.wants"))?;
            std::os::unix::fs::symlink(
                "../mnt-cairn\\x2dboot.mount",
                units.join("local-fs.target.wants/mnt-cairn\\x2dboot.mount"),
            )?;
            Ok(())
        })
        .boot()
        .unwrap();
    let traces = Traces::of(&c);

    // Inside there is no loop-control: losetup cannot work there.
    assert!(!c.exec(&["losetup", "--find"]).status.success());

    // The boot-time device was mounted during boot.
    let mounted = c.systemctl(&[
        "show",
        "-p",
        "SubState",
        "--value",
        "mnt-cairn\\x2dboot.mount",
    ]);
    assert_eq!(text(&mounted), "mounted");
    assert_eq!(
        ok(&c.exec(&["findmnt", "-n", "-o", "SOURCE", "/mnt/cairn-boot"])),
        boot_dev
    );
    ok(&c.sh("echo written-at-boot > /mnt/cairn-boot/hello && sync"));

    // The device attached later: passed in at run time, mounted by label through
    // a .mount unit written from the host.
    let inside = c.add_block_device(&later.dev).unwrap();
    assert_eq!(inside, later.dev);
    let by_label = ok(&c.exec(&["readlink", "-f", "/dev/disk/by-label/CAIRN\\x20LATE"]));
    assert_eq!(by_label, later.dev.to_string_lossy());
    // Canary for the module doc: systemd-fstab-generator ignores device lines in
    // a container ("Running in a container, ignoring fstab device entry"), so
    // fstab does not work there; mount units do.
    let fstab = c.root().join("etc/fstab");
    let mut lines = std::fs::read_to_string(&fstab).unwrap_or_default();
    lines.push_str("LABEL=CAIRN\\040LATE /mnt/cairn-fstab ext4 defaults 0 0\n");
    std::fs::write(&fstab, lines).unwrap();
    ok(&c.systemctl(&["daemon-reload"]));
    let fstab_unit = c.systemctl(&[
        "show",
        "-p",
        "LoadState",
        "--value",
        "mnt-cairn\\x2dfstab.mount",
    ]);
    assert_eq!(
        text(&fstab_unit),
        "not-found",
        "fstab device lines work in containers now: update the container module doc"
    );
    std::fs::write(
        c.root().join("etc/systemd/system/mnt-cairn\\x2dlate.mount"),
        "[Mount]\nWhat=/dev/disk/by-label/CAIRN\\x20LATE\nWhere=/mnt/cairn-late\nType=ext4\n",
    )
    .unwrap();
    ok(&c.systemctl(&["daemon-reload"]));
    ok(&c.systemctl(&["start", "mnt-cairn\\x2dlate.mount"]));
    c.wait_for_unit_state(
        "mnt-cairn\\x2dlate.mount",
        "mounted",
        Duration::from_secs(10),
    )
    .unwrap();
    ok(&c.sh("echo written-later > /mnt/cairn-late/hello && sync"));
    assert_eq!(
        ok(&c.exec(&["cat", "/mnt/cairn-late/hello"])),
        "written-later"
    );
    // The mounts are the container's: the host does not see them.
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains("/mnt/cairn-late"));

    c.shutdown().unwrap();
    traces.assert_gone();
    // What was written inside is on the devices.
    assert_eq!(at_boot.read(tmp.path(), "hello"), "written-at-boot\n");
    assert_eq!(later.read(tmp.path(), "hello"), "written-later\n");
}

#[test]
fn two_containers_at_once_do_not_interfere() {
    if skip() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Container::boot().unwrap());
        let b = s.spawn(|| Container::boot().unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let traces = [Traces::of(&a), Traces::of(&b)];
    assert_ne!(a.name(), b.name());
    assert_eq!(ok(&a.exec(&["hostname"])), a.name());
    assert_eq!(ok(&b.exec(&["hostname"])), b.name());
    let host_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let (id_a, id_b) = (
        ok(&a.exec(&["cat", "/etc/machine-id"])),
        ok(&b.exec(&["cat", "/etc/machine-id"])),
    );
    assert_ne!(id_a, id_b);
    assert_ne!(id_a, host_id.trim());

    // Their filesystems are separate.
    std::fs::write(a.root().join("etc/cairn-only-in-a"), "a").unwrap();
    assert!(a
        .exec(&["test", "-e", "/etc/cairn-only-in-a"])
        .status
        .success());
    assert!(!b
        .exec(&["test", "-e", "/etc/cairn-only-in-a"])
        .status
        .success());

    // Same unit name in both: each container's unit is in a cgroup of its own
    // (both nspawns started in one cgroup would put both in
    // /payload/system.slice/cairn-probe.service), and stopping it in one leaves
    // the other's running.
    let mut host_cgroups = Vec::new();
    for c in [&a, &b] {
        ok(&c.exec(&[
            "systemd-run",
            "--unit=cairn-probe",
            "--quiet",
            "sleep",
            "600",
        ]));
        c.wait_for_unit_state("cairn-probe.service", "running", Duration::from_secs(10))
            .unwrap();
        // The probe's host PID: the process in c's PID namespace whose PID
        // there is the unit's MainPID.
        let main_pid =
            text(&c.systemctl(&["show", "-p", "MainPID", "--value", "cairn-probe.service"]));
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", c.leader_pid())).unwrap();
        let pid = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                std::fs::read_link(p.join("ns/pid")).ok().as_ref() == Some(&ns)
                    && std::fs::read_to_string(p.join("status")).is_ok_and(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("NSpid:"))
                            .and_then(|l| l.split_whitespace().last())
                            == Some(main_pid.as_str())
                    })
            })
            .unwrap_or_else(|| panic!("no host process for the probe's MainPID {main_pid}"));
        let cg = std::fs::read_to_string(pid.join("cgroup")).unwrap();
        let v2 = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_owned();
        assert!(v2.ends_with("/system.slice/cairn-probe.service"), "{v2}");
        host_cgroups.push(v2);
    }
    let cgroup_of =
        |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert_ne!(
        host_cgroups[0],
        host_cgroups[1],
        "nspawn cgroups:\n{}\n{}",
        cgroup_of(a.nspawn_pid()),
        cgroup_of(b.nspawn_pid())
    );
    ok(&a.systemctl(&["stop", "cairn-probe.service"]));
    a.wait_for_unit_state("cairn-probe.service", "inactive", Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        text(&b.systemctl(&["is-active", "cairn-probe.service"])),
        "active"
    );
    let pid = text(&b.systemctl(&["show", "-p", "MainPID", "--value", "cairn-probe.service"]));
    assert!(
        b.sh(&format!("kill -0 {pid}")).status.success(),
        "b's probe {pid} is gone"
    );

    // Each has its own network namespace, so services on fixed ports (here
    // PostgreSQL, if installed) run in both.
    let loaded = |c: &Container, u: &str| {
        text(&c.systemctl(&["show", "-p", "LoadState", "--value", u])) == "loaded"
    };
    let pg = "postgresql@15-main.service";
    if loaded(&a, pg) {
        for c in [&a, &b] {
            c.wait_for_unit_state(pg, "active", Duration::from_secs(30))
                .unwrap();
        }
    }
    assert_eq!(a.boot_state(), b.boot_state());

    // Teardown of one leaves the other alone.
    a.shutdown().unwrap();
    traces[0].assert_gone();
    assert_eq!(
        text(&b.systemctl(&["is-active", "cairn-probe.service"])),
        "active"
    );
    b.shutdown().unwrap();
    traces[1].assert_gone();
}

/// Boots a container, says where it is, and waits to be killed. Run only by
/// `teardown_happens_even_if_the_test_panics_or_is_killed`, in a child process.
#[test]
#[ignore = "helper, run by teardown_happens_even_if_the_test_panics_or_is_killed"]
fn helper_boot_and_wait_to_be_killed() {
    if std::env::var_os("CAIRN_CT_SELFTEST_HELPER").is_none() {
        return;
    }
    let c = Container::boot().unwrap();
    // libtest has printed "test NAME ... " without a newline.
    println!(
        "\nREADY {} {} {} {}",
        c.name(),
        c.root().display(),
        c.nspawn_pid(),
        c.leader_pid()
    );
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn teardown_happens_even_if_the_test_panics_or_is_killed() {
    if skip() {
        return;
    }
    // A child process boots one and is SIGKILLed: no Drop runs there.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_boot_and_wait_to_be_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CAIRN_CT_SELFTEST_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("READY ").map(|(_, r)| r.to_owned()))
    });

    // Meanwhile, in this process: a panic while a container is up.
    let mut panicked = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Container::boot().unwrap();
        panicked = Some(Traces::of(&c));
        assert!(c.exec(&["true"]).status.success());
        panic!("deliberate panic, to test the teardown");
    }));
    assert!(r.is_err());
    panicked.expect("booted").assert_gone();

    let line = ready.join().unwrap().expect("the helper did not boot");
    let f: Vec<&str> = line.split(' ').collect();
    let killed = Traces {
        name: f[0].to_owned(),
        root: PathBuf::from(f[1]),
        base: PathBuf::from(f[1]).parent().unwrap().to_owned(),
        nspawn: f[2].parse().unwrap(),
        leader: f[3].parse().unwrap(),
    };
    assert!(killed.root.join("etc").is_dir(), "not mounted: {line}");
    assert!(!killed.left().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    killed.assert_gone_within(Duration::from_secs(60));
}
