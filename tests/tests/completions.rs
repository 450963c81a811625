//! Shell completion scripts: `scripts/completions.sh OUTDIR BINDIR` writes one bash and one
//! zsh script per binary (each binary prints its own with `CAIRN_COMPLETIONS=bash|zsh`),
//! and the scripts parse and actually complete.
//!
//! Design: the bash scripts are exercised the way bash itself uses them: sourced, the
//! function that `complete -p NAME` registered is called with `COMP_WORDS`/`COMP_CWORD` and
//! the three arguments bash passes, and `COMPREPLY` is read back. zsh's completion system
//! cannot be driven without a pseudo-terminal, so its scripts are only parsed (`zsh -n`)
//! and checked to register for their command; zsh is installed by `scripts/deps.sh test`.
//! Binaries come from `cairn_tests::Bins` (`cargo build --workspace` first).

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::Bins;

const BINARIES: &[&str] = &[
    "cairn",
    "cairn-preflight",
    "cairn-quiesce",
    "cairn-snapshot",
    "cairn-upload",
    "cairn-drill",
    "cairn-heartbeat",
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/completions.sh")
}

/// Run `scripts/completions.sh` into a fresh directory: (the tempdir, OUTDIR).
fn generate() -> (tempfile::TempDir, PathBuf) {
    let bins = Bins::locate();
    for b in BINARIES {
        bins.path(b); // a clear panic if one is not built
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = Command::new("bash")
        .arg(script())
        .arg(&out)
        .arg(bins.dir())
        .output()
        .expect("run scripts/completions.sh");
    assert!(
        o.status.success(),
        "scripts/completions.sh failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (tmp, out)
}

/// What bash completes for the command line `words` (the last word is the one being
/// completed), with the script at `script` sourced, in the empty directory `cwd` (so that
/// file-name completion finds nothing).
fn bash_complete(script: &Path, cwd: &Path, words: &[&str]) -> Vec<String> {
    let name = words[0];
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let program = format!(
        r#"set -u
source "$1"
spec=$(complete -p {name}) || {{ echo "no completion registered for {name}" >&2; exit 9; }}
func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[ -n "$func" ] || {{ echo "no -F function in: $spec" >&2; exit 9; }}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
prev=""
[ "$COMP_CWORD" -gt 0 ] && prev=${{COMP_WORDS[COMP_CWORD-1]}}
COMPREPLY=()
"$func" {name} "${{COMP_WORDS[COMP_CWORD]}}" "$prev"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" ")
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .arg("bash")
        .arg(script)
        .current_dir(cwd)
        .env_remove("CAIRN_CONFIG")
        .output()
        .expect("run bash");
    assert!(
        o.status.success(),
        "completing {words:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let mut got: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    got.sort();
    got
}

#[test]
fn script_writes_bash_and_zsh_for_every_binary() {
    let (_tmp, out) = generate();
    for b in BINARIES {
        for (path, marker) in [
            (out.join("bash").join(b), "complete -F ".to_string()),
            (
                out.join("zsh").join(format!("_{b}")),
                format!("#compdef {b}"),
            ),
        ] {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                text.contains(&marker),
                "{} lacks {marker:?}",
                path.display()
            );
            assert!(
                text.contains("--config"),
                "{} does not complete --config",
                path.display()
            );
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flat_map(|d| {
            let d = d.unwrap().path();
            let dir = d.file_name().unwrap().to_string_lossy().to_string();
            std::fs::read_dir(&d)
                .unwrap()
                .map(move |f| format!("{dir}/{}", f.unwrap().file_name().to_string_lossy()))
        })
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        2 * BINARIES.len(),
        "exactly the 14 scripts: {names:?}"
    );
}

#[test]
fn bash_scripts_parse() {
    let (_tmp, out) = generate();
    for b in BINARIES {
        let path = out.join("bash").join(b);
        let o = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "bash -n {}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn bash_completes_commands_flags_and_values() {
    let (tmp, out) = generate();
    let cwd = tmp.path().join("empty");
    std::fs::create_dir(&cwd).unwrap();
    let bash = |name: &str| out.join("bash").join(name);

    assert_eq!(
        bash_complete(&bash("cairn"), &cwd, &["cairn", "res"]),
        ["restore"]
    );
    assert_eq!(
        bash_complete(&bash("cairn"), &cwd, &["cairn", "--con"]),
        ["--config"]
    );
    assert_eq!(
        bash_complete(
            &bash("cairn"),
            &cwd,
            &["cairn", "restore", "latest", "--ov"]
        ),
        ["--overwrite"]
    );
    assert_eq!(
        bash_complete(
            &bash("cairn"),
            &cwd,
            &["cairn", "restore", "latest", "--overwrite", ""]
        ),
        ["always", "if-changed", "never"]
    );
    let key = bash_complete(&bash("cairn"), &cwd, &["cairn", "key", ""]);
    for c in ["add", "generate", "list", "remove"] {
        assert!(key.contains(&c.to_string()), "cairn key: {key:?}");
    }
    assert_eq!(
        bash_complete(&bash("cairn-quiesce"), &cwd, &["cairn-quiesce", "st"]),
        ["start", "stop"]
    );
    assert_eq!(
        bash_complete(
            &bash("cairn-snapshot"),
            &cwd,
            &["cairn-snapshot", "--force"]
        ),
        ["--force-read"]
    );
    // Every binary completes --config, at the top level.
    for b in BINARIES {
        assert_eq!(
            bash_complete(&bash(b), &cwd, &[b, "--conf"]),
            ["--config"],
            "{b}"
        );
    }
}

#[test]
fn zsh_scripts_parse() {
    let Ok(v) = Command::new("zsh").arg("--version").output() else {
        eprintln!("SKIP: zsh is not installed (scripts/deps.sh test installs it)");
        return;
    };
    assert!(v.status.success());
    let (_tmp, out) = generate();
    for b in BINARIES {
        let path = out.join("zsh").join(format!("_{b}"));
        let o = Command::new("zsh").arg("-n").arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "zsh -n {}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn completions_variable_is_hidden_and_checked() {
    let bins = Bins::locate();
    let cairn = bins.path("cairn");
    // Not a flag: --help does not mention it.
    let help = Command::new(&cairn).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout)
        .to_lowercase()
        .contains("complet"));
    // An unknown shell is a usage error, saying which shells there are.
    let o = Command::new(&cairn)
        .env("CAIRN_COMPLETIONS", "fish")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bash or zsh"), "{err}");
    // Empty means unset: the binary runs as usual.
    let o = Command::new(&cairn)
        .env("CAIRN_COMPLETIONS", "")
        .arg("--version")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("cairn "));
    // It comes before argument parsing: extra arguments do not matter.
    let o = Command::new(&cairn)
        .env("CAIRN_COMPLETIONS", "bash")
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("complete -F"));
}

#[test]
fn script_refuses_a_missing_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(script())
        .arg(tmp.path().join("out"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"));
    assert!(!tmp.path().join("out").exists(), "nothing written");
    let o = Command::new("bash").arg(script()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
}
