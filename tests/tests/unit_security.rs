//! The unit-file gate (DESIGN.md: "every unit must pass `systemd-analyze security
//! --offline=yes --threshold=…` in the tests"): every service in `units/` scores an overall
//! exposure of at most 2.0 (threshold 20), a template through an instance of it; and every
//! unit there is one `systemd-analyze verify` accepts, with its programs pointed at the
//! built binaries. A second test proves the gate can fail: a bare unit is rejected.
//!
//! Needs `systemd-analyze` (systemd ≥ 250 for `--offline`), nothing else: no root, no
//! running systemd. Without the built binaries (`cargo build --workspace`), the verify part
//! prints `SKIPPED:` (setup_systemd.rs verifies the installed units in a container too).

use cairn_tests::output_text as text;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `--threshold=` takes the exposure times ten: 20 is an exposure of 2.0.
const THRESHOLD: u32 = 20;
/// How many of a failing unit's costliest settings the failure lists.
const TOP: usize = 10;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../units")
}

/// The shipped units whose names end with `suffix`, sorted.
fn shipped(suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(units_dir())
        .expect("read units/")
        .map(|e| e.expect("read units/").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The file to analyze for a shipped unit: itself, or for a template (`NAME@.service`) a
/// copy named as an instance (`NAME@gate.service`) in `dir`.
fn analyzable(unit: &Path, dir: &Path) -> PathBuf {
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    match name.strip_suffix("@.service") {
        Some(stem) => {
            let instance = dir.join(format!("{stem}@gate.service"));
            std::fs::copy(unit, &instance).expect("copy the template as an instance");
            instance
        }
        None => unit.to_path_buf(),
    }
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): the unit gate needs systemd's tools")
        })
}

/// The gate for one unit file: Ok(score) when its overall exposure is at most 2.0, else
/// an error naming the unit, its score and its costliest settings.
fn gate(path: &Path) -> Result<f64, String> {
    let p = path.to_str().expect("a UTF-8 path");
    let o = systemd_analyze(&[
        "security",
        "--offline=yes",
        &format!("--threshold={THRESHOLD}"),
        "--no-pager",
        p,
    ]);
    let out = text(&o);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    // "→ Overall exposure level for NAME: 2.0 OK 🙂"
    let score = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("{name}: no overall exposure in the output of {p}:\n{out}"))?;
    if o.status.success() && score * 10.0 <= f64::from(THRESHOLD) + 1e-9 {
        return Ok(score);
    }
    // The settings that cost something (✗), the costliest first.
    let mut bad: Vec<(f64, &str)> = out
        .lines()
        .filter(|l| l.starts_with('✗'))
        .map(|l| {
            let cost = l
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            (cost, l.trim_end())
        })
        .collect();
    bad.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<&str> = bad.iter().take(TOP).map(|(_, l)| *l).collect();
    Err(format!(
        "{name}: overall exposure {score:.1}, above {:.1} (systemd-analyze exited {:?}); \
         the costliest settings:\n{}",
        f64::from(THRESHOLD) / 10.0,
        o.status.code(),
        top.join("\n")
    ))
}

#[test]
fn every_shipped_service_scores_an_exposure_of_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let services = shipped(".service");
    assert!(
        services.len() >= 7,
        "the shipped services are found in {}: {services:?}",
        units_dir().display()
    );
    let mut failures = Vec::new();
    for unit in &services {
        let path = analyzable(unit, dir.path());
        match gate(&path) {
            Ok(score) => eprintln!(
                "{}: exposure {score:.1}",
                path.file_name().unwrap().to_string_lossy()
            ),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_gate_rejects_an_unhardened_unit() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("cairn-gate-bare.service");
    std::fs::write(&bare, "[Service]\nExecStart=/bin/true\n").unwrap();
    let e = gate(&bare).expect_err("a bare unit must not pass the gate");
    assert!(
        e.starts_with("cairn-gate-bare.service: overall exposure "),
        "{e}"
    );
    // It names what costs most: a bare unit runs as root with the host's network.
    assert!(e.contains("User=/DynamicUser="), "{e}");
    assert!(e.contains("PrivateNetwork="), "{e}");
    // A template is analyzed through an instance, and gated the same way.
    let template = dir.path().join("cairn-gate-bare@.service");
    std::fs::write(&template, "[Service]\nExecStart=/bin/echo %i\n").unwrap();
    let instance = analyzable(&template, dir.path());
    assert!(instance.ends_with("cairn-gate-bare@gate.service"));
    let e = gate(&instance).expect_err("a bare template must not pass the gate");
    assert!(e.starts_with("cairn-gate-bare@gate.service: "), "{e}");
}

#[test]
fn every_shipped_unit_verifies() {
    let bins = cairn_tests::bins::Bins::locate();
    let units: Vec<PathBuf> = shipped(".service")
        .into_iter()
        .chain(shipped(".timer"))
        .collect();
    // `verify` wants the programs to exist: point /usr/bin at the built ones (as `make
    // install` and the container tests do), in a directory holding every unit, so that
    // OnFailure=, OnSuccess=, Unit= and the like find theirs.
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        for (i, _) in text.match_indices("/usr/bin/") {
            let prog: String = text[i + "/usr/bin/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if bins.try_path(&prog).is_none() {
                eprintln!(
                    "SKIPPED: {prog} is not built in {} (cargo build --workspace)",
                    bins.dir().display()
                );
                return;
            }
        }
        let text = text.replace("/usr/bin/", &format!("{}/", bins.dir().display()));
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    // The template through an instance too.
    for name in names.clone() {
        if let Some(stem) = name.strip_suffix("@.service") {
            let instance = format!("{stem}@gate.service");
            std::fs::copy(dir.path().join(&name), dir.path().join(&instance)).unwrap();
            names.push(instance);
        }
    }
    let paths: Vec<String> = names
        .iter()
        .map(|n| dir.path().join(n).display().to_string())
        .collect();
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let o = systemd_analyze(&args);
    let out = text(&o);
    assert!(o.status.success(), "systemd-analyze verify failed:\n{out}");
    assert!(
        !out.contains("Unknown") && !out.contains("ignoring"),
        "systemd-analyze verify: {out}"
    );
}
