//! The package: `make install` / `make uninstall` and `make deb`.
//!
//! - `make install DESTDIR=… PREFIX=/usr` (and `/opt/x`) puts exactly the expected files
//!   in place, with the units' programs rewritten to `$(BINDIR)`; `make uninstall` with the
//!   same variables leaves no file behind. Installed for real under a scratch PREFIX, the
//!   units pass `systemd-analyze verify` (which checks that every program exists).
//! - The `.deb` holds the same files for `/usr` (man pages compressed, binaries
//!   stripped), a control file with the dependencies the binaries link against, and
//!   maintainer scripts that enable and start nothing.
//! - In a booted systemd container: `dpkg -i` creates the user (systemd-sysusers) and the
//!   directories (systemd-tmpfiles), systemd knows the units, journald the catalog,
//!   and nothing is enabled; the D-Bus policy lets root's StageFinished signal reach the
//!   heartbeat (user cairn) and keeps another user's out; `dpkg -r` stops and disables what was
//!   enabled and started by hand; `dpkg -P` removes `cairn setup`'s drop-ins and keeps the
//!   data and the configuration.
//!
//! The release build the install and the package need takes minutes the first time
//! (cargo skips it later); the container test needs root.

use cairn_tests::output_text as text;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_tests::container::Container;
use cairn_tests::package::{self, make, workspace};

const BINS: &[&str] = &[
    "cairn",
    "cairn-preflight",
    "cairn-quiesce",
    "cairn-snapshot",
    "cairn-upload",
    "cairn-drill",
    "cairn-heartbeat",
];

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o
}

/// File names in a source directory of the checkout, sorted.
fn source_names(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(workspace().join(dir))
        .unwrap_or_else(|e| panic!("read {dir}/: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| keep(n))
        .collect();
    v.sort();
    v
}

fn unit_names() -> Vec<String> {
    source_names("units", |n| {
        n.ends_with(".service") || n.ends_with(".timer")
    })
}

/// The man pages (`man/*.[578]`) as (section, file name).
fn man_pages() -> Vec<(String, String)> {
    source_names("man", |n| {
        n.rsplit_once('.')
            .is_some_and(|(_, s)| ["5", "7", "8"].contains(&s))
    })
    .into_iter()
    .map(|n| (n.rsplit_once('.').unwrap().1.to_string(), n))
    .collect()
}

fn has_catalog() -> bool {
    workspace().join("catalog/cairn.catalog").is_file()
}

fn has_completions() -> bool {
    workspace().join("scripts/completions.sh").is_file()
}

/// Every file `make install PREFIX=prefix` installs, relative to DESTDIR (no leading `/`),
/// with its mode.
fn expected_files(prefix: &str, man_gz: bool) -> BTreeMap<String, u32> {
    let p = prefix.trim_start_matches('/');
    let mut m = BTreeMap::new();
    for b in BINS {
        m.insert(format!("{p}/bin/{b}"), 0o755);
    }
    for u in unit_names() {
        m.insert(format!("{p}/lib/systemd/system/{u}"), 0o644);
    }
    for (section, name) in man_pages() {
        let gz = if man_gz { ".gz" } else { "" };
        m.insert(format!("{p}/share/man/man{section}/{name}{gz}"), 0o644);
    }
    for f in [
        format!("{p}/lib/sysusers.d/cairn.conf"),
        format!("{p}/lib/tmpfiles.d/cairn.conf"),
        format!("{p}/share/dbus-1/system.d/org.cairn.Pipeline1.conf"),
        format!("{p}/share/cairn/sudoers.d/cairn.in"),
    ] {
        m.insert(f, 0o644);
    }
    if has_catalog() {
        m.insert(format!("{p}/lib/systemd/catalog/cairn.catalog"), 0o644);
    }
    if has_completions() {
        for b in BINS {
            m.insert(format!("{p}/share/bash-completion/completions/{b}"), 0o644);
            m.insert(format!("{p}/share/zsh/vendor-completions/_{b}"), 0o644);
        }
    }
    m
}

/// Every non-directory below `root` (relative paths) with its mode.
fn files_under(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = e.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, meta.permissions().mode() & 0o7777);
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// The programs of a unit file's `Exec*=` lines (prefixes `+-@!:` stripped).
fn exec_programs(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| l.starts_with("Exec") && l.contains('='))
        .map(|l| {
            let cmd = l.split_once('=').unwrap().1;
            let cmd = cmd.trim_start_matches(['+', '-', '@', '!', ':']);
            cmd.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// `make install` with these variables; then the files are checked, and `make
/// uninstall` must leave none.
fn install_uninstall(prefix: &str) {
    let dest = tempfile::tempdir().unwrap();
    let vars = [
        format!("DESTDIR={}", dest.path().display()),
        format!("PREFIX={prefix}"),
    ];
    let args = |target: &'static str| -> Vec<String> {
        std::iter::once(target.to_string())
            .chain(vars.iter().cloned())
            .collect()
    };
    let o = make(
        &args("install")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "make install failed: {}", text(&o));

    let found = files_under(dest.path());
    let expected = expected_files(prefix, false);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "make install PREFIX={prefix}: the installed files"
    );
    for (f, mode) in &expected {
        assert_eq!(found[f], *mode, "{f}: mode {:o}, want {mode:o}", found[f]);
    }

    // The units: programs rewritten to $(BINDIR), each an installed executable, and
    // otherwise the files of units/ byte for byte.
    let bindir = format!("{}/bin", prefix.trim_end_matches('/'));
    let unitdir = dest
        .path()
        .join(prefix.trim_start_matches('/'))
        .join("lib/systemd/system");
    for u in unit_names() {
        let installed = std::fs::read_to_string(unitdir.join(&u)).unwrap();
        let source = std::fs::read_to_string(workspace().join("units").join(&u)).unwrap();
        assert_eq!(
            installed,
            source.replace("/usr/bin/cairn", &format!("{bindir}/cairn")),
            "{u}: only the program paths change"
        );
        let progs = exec_programs(&installed);
        assert!(!progs.is_empty() || u.ends_with(".timer"), "{u}: no Exec");
        for p in progs {
            assert!(
                p.starts_with(&format!("{bindir}/cairn")),
                "{u}: {p} is not one of ours in {bindir}"
            );
            let file = dest.path().join(p.trim_start_matches('/'));
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{u}: {p} is not installed ({e})"))
                .permissions()
                .mode();
            assert!(mode & 0o111 != 0, "{u}: {p} is not executable");
        }
    }
    // The other files are copies of the checkout's.
    let p = prefix.trim_start_matches('/');
    for (installed, source) in [
        ("lib/sysusers.d/cairn.conf", "sysusers.d/cairn.conf"),
        ("lib/tmpfiles.d/cairn.conf", "tmpfiles.d/cairn.conf"),
        (
            "share/dbus-1/system.d/org.cairn.Pipeline1.conf",
            "dbus/org.cairn.Pipeline1.conf",
        ),
        ("share/cairn/sudoers.d/cairn.in", "sudoers.d/cairn.in"),
        ("share/man/man8/cairn.8", "man/cairn.8"),
    ] {
        assert_eq!(
            std::fs::read(dest.path().join(p).join(installed)).unwrap(),
            std::fs::read(workspace().join(source)).unwrap(),
            "{installed} is {source}"
        );
    }

    let o = make(
        &args("uninstall")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "make uninstall failed: {}", text(&o));
    let left = files_under(dest.path());
    assert!(left.is_empty(), "make uninstall left {left:?}");
    assert!(
        !dest.path().join(p).join("share/cairn").exists(),
        "make uninstall removes share/cairn, which only cairn uses"
    );
}

#[test]
fn make_install_prefix_usr_and_uninstall() {
    install_uninstall("/usr");
}

#[test]
fn make_install_prefix_opt_rewrites_the_units_programs() {
    install_uninstall("/opt/x");
}

/// Installed for real (no DESTDIR) under a scratch PREFIX, so the units' programs exist
/// where they say: `systemd-analyze verify` loads every unit with the system's own units
/// (the `:` appends the default search path) and checks each program is executable.
#[test]
fn installed_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no systemd-analyze");
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    let prefix_var = format!("PREFIX={}", prefix.path().display());
    let o = make(&["install", &prefix_var]);
    assert!(o.status.success(), "make install failed: {}", text(&o));
    let unitdir = prefix.path().join("lib/systemd/system");
    let units: Vec<PathBuf> = unit_names().iter().map(|u| unitdir.join(u)).collect();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unitdir.display()))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .current_dir(prefix.path())
        .output()
        .unwrap();
    let out = text(&o);
    let o2 = make(&["uninstall", &prefix_var]);
    assert!(o2.status.success(), "make uninstall failed: {}", text(&o2));
    assert!(
        o.status.success() && out.trim().is_empty(),
        "systemd-analyze verify: {} {out}",
        o.status
    );
    let left = files_under(prefix.path());
    assert!(left.is_empty(), "make uninstall left {left:?}");
}

/// `dpkg-deb -f`: the control fields.
fn control(deb: &Path) -> BTreeMap<String, String> {
    let o = run(Command::new("dpkg-deb").arg("-f").arg(deb));
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if line.starts_with(' ') {
            let v: &mut String = fields.get_mut(&last).unwrap();
            v.push('\n');
            v.push_str(line);
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_string();
            fields.insert(k.to_string(), v.trim().to_string());
        }
    }
    fields
}

/// The package names of a Depends-like field (alternatives included, versions dropped).
fn package_names(field: &str) -> BTreeSet<String> {
    field
        .split([',', '|'])
        .map(|p| p.split_whitespace().next().unwrap_or_default().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn deb_holds_every_file_and_a_complete_control() {
    let deb = package::deb();

    // Contents: exactly the files of `make install PREFIX=/usr`, gzipped man pages, and
    // the copyright file; everything root's.
    let o = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mut files = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "dpkg-deb -c line: {line}");
        assert_eq!(cols[1], "root/root", "{line}");
        let path = cols[5].trim_start_matches("./").to_string();
        if cols[0].starts_with('-') {
            let mode = u32::from_str_radix(
                &cols[0][1..]
                    .chars()
                    .collect::<Vec<_>>()
                    .chunks(3)
                    .map(|c| {
                        (c[0] == 'r') as u32 * 4 + (c[1] == 'w') as u32 * 2 + (c[2] == 'x') as u32
                    })
                    .map(|d| char::from_digit(d, 8).unwrap())
                    .collect::<String>(),
                8,
            )
            .unwrap();
            files.insert(path, mode);
        } else {
            assert!(
                cols[0].starts_with('d'),
                "only files and directories: {line}"
            );
        }
    }
    let mut expected = expected_files("/usr", true);
    expected.insert("usr/share/doc/cairn/copyright".into(), 0o644);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the package's files"
    );
    assert_eq!(files, expected, "the package's file modes");

    // Control.
    let c = control(&deb);
    assert_eq!(c["Package"], "cairn");
    assert_eq!(c["Version"], package::version(), "the workspace's version");
    assert_eq!(c["Architecture"], package::architecture());
    assert!(c.contains_key("Maintainer") && c.contains_key("Description"));
    assert!(c["Installed-Size"].parse::<u64>().unwrap() > 1000);
    let depends = package_names(&c["Depends"]);
    for p in ["libc6", "libssl3", "libblkid1", "systemd"] {
        assert!(depends.contains(p), "Depends: {} lacks {p}", c["Depends"]);
    }
    assert!(
        c["Recommends"].contains("default-mta | mail-transport-agent"),
        "Recommends: {}",
        c["Recommends"]
    );

    // Unpacked: the binaries are stripped of debug info, and link only against libraries
    // of packages it depends on (dpkg -S on this host names them).
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(x.path().join("DEBIAN")));
    let mut needed = BTreeSet::new();
    for b in BINS {
        let o = run(Command::new("objdump")
            .args(["-h", "-p"])
            .arg(x.path().join("usr/bin").join(b)));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains(".debug_info"), "{b} is not stripped");
        for l in out.lines() {
            if let Some(lib) = l.trim().strip_prefix("NEEDED") {
                needed.insert(lib.trim().to_string());
            }
        }
    }
    for lib in &needed {
        let o = run(Command::new("dpkg").args(["-S", lib]));
        let owners: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .flat_map(|(pkgs, _)| {
                pkgs.split(", ")
                    .map(|p| p.split(':').next().unwrap().to_string())
            })
            .collect();
        assert!(
            owners.iter().any(|p| depends.contains(p)),
            "{lib} (from {owners:?}) is not in Depends: {}",
            c["Depends"]
        );
    }
    // The units run the package's binaries.
    for u in unit_names() {
        let t = std::fs::read_to_string(x.path().join("usr/lib/systemd/system").join(&u)).unwrap();
        for p in exec_programs(&t) {
            assert!(p.starts_with("/usr/bin/cairn"), "{u}: {p}");
            assert!(
                x.path().join(p.trim_start_matches('/')).is_file(),
                "{u}: {p}"
            );
        }
    }
    // Man pages are gzip files.
    let page = std::fs::read(x.path().join("usr/share/man/man8/cairn.8.gz")).unwrap();
    assert_eq!(&page[..2], &[0x1f, 0x8b], "cairn.8.gz is gzip");

    // Maintainer scripts: all three, valid sh, placeholders filled in, no conffiles.
    let debian = x.path().join("DEBIAN");
    for s in ["postinst", "prerm", "postrm"] {
        let p = debian.join(s);
        let mode = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("no {s}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{s} mode");
        run(Command::new("sh").arg("-n").arg(&p));
        let t = std::fs::read_to_string(&p).unwrap();
        for placeholder in ["@TIMERS@", "@SERVICES@", "@TEMPLATES@"] {
            assert!(!t.contains(placeholder), "{s} has {placeholder}");
        }
        assert!(
            t.contains("[ -d /run/systemd/system ]"),
            "{s} works without systemd"
        );
    }
    assert!(
        !debian.join("conffiles").exists(),
        "nothing under /etc is shipped"
    );
    let prerm = std::fs::read_to_string(debian.join("prerm")).unwrap();
    for u in unit_names() {
        assert!(prerm.contains(&u), "prerm stops and disables {u}");
    }
    assert!(
        prerm.contains("templates=\"cairn-alert@.service\"")
            && prerm.contains("systemctl stop \"${t%@.service}@*.service\""),
        "prerm stops the alert instances"
    );
    let postinst = std::fs::read_to_string(debian.join("postinst")).unwrap();
    for needle in [
        "systemd-sysusers",
        "systemd-tmpfiles",
        "--update-catalog",
        "daemon-reload",
    ] {
        assert!(postinst.contains(needle), "postinst runs {needle}");
    }
    for l in postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        assert!(
            !l.contains("systemctl enable")
                && !l.contains("systemctl start")
                && !l.contains("--now"),
            "postinst enables or starts nothing: {l}"
        );
    }
}

// --- In a booted container.

fn sh_ok(c: &Container, script: &str) -> String {
    let o = c.sh(script);
    assert!(o.status.success(), "{script}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `systemctl show -P PROP unit`.
fn prop(c: &Container, unit: &str, p: &str) -> String {
    let o = c.systemctl(&["show", "-P", p, unit]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The cairn units systemd has loaded with their active state, and the unit files it
/// knows with their enablement state.
fn cairn_units(c: &Container) -> (String, String) {
    let units = c.systemctl(&["list-units", "--all", "--plain", "--no-legend", "cairn*"]);
    let files = c.systemctl(&["list-unit-files", "--plain", "--no-legend", "cairn*"]);
    (
        String::from_utf8_lossy(&units.stdout).into_owned(),
        String::from_utf8_lossy(&files.stdout).into_owned(),
    )
}

/// The first MESSAGE_ID of the catalog and its Subject.
fn first_catalog_entry() -> Option<(String, String)> {
    let t = std::fs::read_to_string(workspace().join("catalog/cairn.catalog")).ok()?;
    let mut lines = t.lines();
    let id = lines
        .find_map(|l| l.strip_prefix("-- "))?
        .trim()
        .to_string();
    let subject = lines
        .find_map(|l| l.strip_prefix("Subject: "))?
        .trim()
        .to_string();
    Some((id, subject))
}

#[test]
fn dpkg_install_remove_purge_in_a_booted_system() {
    if !cairn_tests::container::ready() {
        return;
    }
    let deb = package::deb();
    let c = Container::builder()
        .mask("postgresql.service")
        .mask("postgresql@15-main.service")
        .boot()
        .unwrap();
    // A clean machine: nothing of cairn left over from the host (the overlay's lower dir).
    sh_ok(
        &c,
        "userdel cairn 2>/dev/null; groupdel cairn 2>/dev/null; \
         rm -rf /var/lib/cairn /var/cache/cairn /etc/cairn /etc/sudoers.d/cairn \
         /etc/systemd/system/cairn-*; ! getent passwd cairn",
    );
    std::fs::create_dir_all(c.root().join("opt/cairn-test")).unwrap();
    std::fs::copy(&deb, c.root().join("opt/cairn-test/cairn.deb")).unwrap();

    // --- dpkg -i
    let o = c.exec(&["dpkg", "-i", "/opt/cairn-test/cairn.deb"]);
    assert!(o.status.success(), "dpkg -i: {}", text(&o));

    // The user and group, from sysusers.d.
    let pw = sh_ok(&c, "getent passwd cairn");
    let f: Vec<&str> = pw.trim().split(':').collect();
    assert_eq!(
        (f[5], f[6]),
        ("/var/lib/cairn", "/usr/sbin/nologin"),
        "{pw}"
    );
    assert!(f[2].parse::<u32>().unwrap() < 1000, "a system uid: {pw}");
    sh_ok(&c, "getent group cairn");
    // The directories, from tmpfiles.d.
    let dirs = sh_ok(
        &c,
        "stat -c '%n %U:%G %a' /etc/cairn /etc/cairn/cairn.conf.d /var/lib/cairn \
         /var/lib/cairn/status /var/cache/cairn /var/cache/cairn/drill",
    );
    assert_eq!(
        dirs,
        "/etc/cairn root:root 755\n/etc/cairn/cairn.conf.d root:root 755\n\
         /var/lib/cairn cairn:cairn 750\n/var/lib/cairn/status cairn:cairn 755\n\
         /var/cache/cairn cairn:cairn 750\n/var/cache/cairn/drill cairn:cairn 700\n"
    );
    // The units, known to systemd, and none enabled or active.
    let cat = c.systemctl(&["cat", "cairn-snapshot.service"]);
    assert!(
        cat.status.success()
            && String::from_utf8_lossy(&cat.stdout).contains("ExecStart=/usr/bin/cairn-snapshot"),
        "systemctl cat: {}",
        text(&cat)
    );
    for u in unit_names() {
        let unit = u.replace("@.", "@x.");
        assert_eq!(prop(&c, &unit, "LoadState"), "loaded", "{unit}");
        // (/lib is /usr/lib on a merged-/usr system, and systemd may name either.)
        let fragment = prop(&c, &unit, "FragmentPath");
        assert!(
            [
                format!("/usr/lib/systemd/system/{u}"),
                format!("/lib/systemd/system/{u}")
            ]
            .contains(&fragment),
            "{unit} is loaded from {fragment}"
        );
        assert_eq!(prop(&c, &unit, "ActiveState"), "inactive", "{unit}");
        let enabled = c.systemctl(&["is-enabled", &u]);
        let state = String::from_utf8_lossy(&enabled.stdout).trim().to_string();
        assert!(
            state == "disabled" || state == "static",
            "{u} is {state} after dpkg -i"
        );
    }
    // The catalog, known to journald: `journalctl -x` explains a cairn message.
    if let Some((id, subject)) = first_catalog_entry() {
        let listed = c.journal(&["--list-catalog", &id]);
        assert!(listed.contains(&subject), "--list-catalog {id}: {listed}");
        sh_ok(
            &c,
            &format!(
                "printf 'MESSAGE_ID={id}\\nMESSAGE=package test\\nCAIRN_STAGE=snapshot\\n\
                 CAIRN_RUN=0123\\nSYSLOG_IDENTIFIER=cairn-package-test\\n' | logger --journald"
            ),
        );
        let x = c.journal(&["-x", "-t", "cairn-package-test"]);
        assert!(
            x.contains("package test") && x.contains(&subject),
            "journalctl -x: {x}"
        );
    }

    // --- By hand: a timer and the heartbeat enabled and started, the drop-ins `cairn
    // setup` writes, and an administrator's own drop-in.
    std::fs::write(
        c.root().join("etc/cairn/cairn.conf"),
        "[heartbeat]\nmax_age = 36h\n",
    )
    .unwrap();
    sh_ok(
        &c,
        "chown root:cairn /etc/cairn/cairn.conf; chmod 0640 /etc/cairn/cairn.conf",
    );
    for unit in [
        "cairn-snapshot.service",
        "cairn-heartbeat.service",
        "cairn-alert@.service",
    ] {
        let d = c.root().join(format!("etc/systemd/system/{unit}.d"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("cairn-setup.conf"),
            "# Written by cairn setup\n[Service]\nEnvironment=CAIRN_CONFIG=/etc/cairn/cairn.conf\n",
        )
        .unwrap();
    }
    std::fs::write(
        c.root()
            .join("etc/systemd/system/cairn-snapshot.service.d/override.conf"),
        "[Service]\nNice=5\n",
    )
    .unwrap();
    std::fs::write(
        c.root().join("etc/sudoers.d/cairn"),
        "# rendered by cairn setup\n",
    )
    .unwrap();
    let o = c.systemctl(&["daemon-reload"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.systemctl(&[
        "enable",
        "--now",
        "cairn-backup.timer",
        "cairn-heartbeat.service",
    ]);
    assert!(o.status.success(), "enable --now: {}", text(&o));
    c.wait_for_unit_state("cairn-backup.timer", "active", Duration::from_secs(10))
        .unwrap();
    c.wait_for_unit_state(
        "cairn-heartbeat.service",
        "running",
        Duration::from_secs(30),
    )
    .unwrap();

    // The D-Bus policy: the heartbeat (user cairn) hears StageFinished from root; a signal
    // from another user is dropped by the bus (silently: dbus-daemon does not log refused
    // broadcasts).
    let emit = |prefix: &str, tag: &str| {
        c.sh(&format!(
            "{prefix} busctl --system emit /org/cairn/Pipeline org.cairn.Pipeline1 \
             StageFinished ssss {tag} success run-{tag} '{{}}'"
        ))
    };
    // (Whether busctl says so or not: a refused signal is dropped by the bus.)
    // Sent first, and busctl exits only once the bus has it: when root's signal (sent
    // next) has arrived, nobody's would have too, had the bus let it through.
    let o = emit(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups",
        "from-nobody",
    );
    assert!(o.status.success(), "busctl emit as nobody: {}", text(&o));
    let o = emit("", "from-root");
    assert!(o.status.success(), "busctl emit as root: {}", text(&o));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = c.journal(&["-u", "cairn-heartbeat.service", "-o", "cat"]);
        if j.contains("StageFinished signal: from-root") {
            assert!(
                !j.contains("from-nobody"),
                "a signal from nobody reached the heartbeat: {j}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the heartbeat did not log root's StageFinished signal: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The policy was read once the user existed (postinst reloads the bus).
    let bus = c.journal(&["-u", "dbus.service", "-o", "cat"]);
    let last_reload = bus
        .rfind("Reloaded configuration")
        .expect("the bus reloaded");
    assert!(
        !bus[last_reload..].contains("Unknown username"),
        "after postinst the bus knows the user cairn: {bus}"
    );
    // --- An upgrade (the same package again: prerm upgrade, postinst configure OLD)
    // stops and disables nothing, and restarts the running heartbeat onto the new binary.
    let pid = prop(&c, "cairn-heartbeat.service", "MainPID");
    let o = c.exec(&["dpkg", "-i", "/opt/cairn-test/cairn.deb"]);
    assert!(o.status.success(), "dpkg -i again: {}", text(&o));
    c.wait_for_unit_state(
        "cairn-heartbeat.service",
        "running",
        Duration::from_secs(30),
    )
    .unwrap();
    assert_ne!(
        prop(&c, "cairn-heartbeat.service", "MainPID"),
        pid,
        "the heartbeat was restarted"
    );
    for u in ["cairn-backup.timer", "cairn-heartbeat.service"] {
        let o = c.systemctl(&["is-enabled", u]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "enabled", "{u}");
        assert_eq!(prop(&c, u, "ActiveState"), "active", "{u}");
    }
    for u in ["cairn-drill.timer", "cairn-prune.timer"] {
        let o = c.systemctl(&["is-enabled", u]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "disabled", "{u}");
    }

    // An alert instance, as OnFailure= would start one (it fails without [alert]).
    let _ = c.systemctl(&["start", "cairn-alert@cairn-snapshot.service.service"]);

    // --- dpkg -r: nothing of cairn running or enabled, the programs gone.
    let o = c.exec(&["dpkg", "-r", "cairn"]);
    assert!(o.status.success(), "dpkg -r: {}", text(&o));
    assert!(
        !text(&o).contains("Failed"),
        "dpkg -r: a maintainer script step failed: {}",
        text(&o)
    );
    let (units, files) = cairn_units(&c);
    for l in units.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(
            cols.len() >= 3 && cols[2] == "inactive",
            "after dpkg -r, a cairn unit is still loaded and not inactive: {l}\n{units}"
        );
    }
    assert!(files.trim().is_empty(), "unit files left: {files}");
    let left = sh_ok(
        &c,
        "ls /etc/systemd/system/*.wants/ | grep cairn; pgrep -l cairn; \
         ls /usr/bin/cairn* /usr/lib/systemd/system/cairn* 2>/dev/null; true",
    );
    assert!(left.trim().is_empty(), "left after dpkg -r: {left}");
    // Removal keeps the configuration, the data and the drop-ins (until purge).
    sh_ok(
        &c,
        "test -f /etc/cairn/cairn.conf && test -d /var/lib/cairn/status && \
         test -f /etc/systemd/system/cairn-snapshot.service.d/cairn-setup.conf && \
         getent passwd cairn",
    );

    // --- dpkg -P: setup's drop-ins and sudoers rule go; the rest stays.
    let o = c.exec(&["dpkg", "-P", "cairn"]);
    assert!(o.status.success(), "dpkg -P: {}", text(&o));
    let left = sh_ok(
        &c,
        "find /etc/systemd/system -name 'cairn-*' | sort; ls /etc/sudoers.d/cairn 2>/dev/null; \
         dpkg -s cairn >/dev/null 2>&1 && echo still-known-to-dpkg; true",
    );
    assert_eq!(
        left, "/etc/systemd/system/cairn-snapshot.service.d\n",
        "after dpkg -P only the administrator's drop-in directory is left"
    );
    sh_ok(
        &c,
        "test -f /etc/systemd/system/cairn-snapshot.service.d/override.conf && \
         test -f /etc/cairn/cairn.conf && test -d /var/lib/cairn/status && \
         test -d /var/cache/cairn && getent passwd cairn",
    );
    c.shutdown().unwrap();
}
