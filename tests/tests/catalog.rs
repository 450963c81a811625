//! The journal catalog `catalog/cairn.catalog`: exactly what `cairn::stage::msg::catalog()`
//! renders from the table of message ids, and accepted by journald's own tooling.
//!
//! Design: the file is committed (packaging installs it as
//! `/usr/lib/systemd/catalog/cairn.catalog` without building anything), so a test, not a
//! build step, keeps it in step with `msg.rs`: it fails on any difference and says how to
//! regenerate (`CAIRN_UPDATE_CATALOG=1`, which makes the test write the file instead).
//! systemd's parser is the judge of the format: `journalctl --root=DIR --update-catalog`
//! compiles the file into DIR's catalog database, and `--list-catalog` must then list every
//! id with its subject; nothing outside DIR is touched. In a booted systemd container
//! (skipped where none can boot), `journalctl -x` shows a logged message's entry with its
//! `@FIELD@`s filled in. Last, cairn(7) must list every id with its name and mention every
//! field the texts use, so that the overview page is the catalog's index.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::stage::msg;

const UPDATE_ENV: &str = "CAIRN_UPDATE_CATALOG";
const REGENERATE: &str = "CAIRN_UPDATE_CATALOG=1 cargo nextest run -p cairn-tests --test catalog";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn catalog_file() -> PathBuf {
    workspace().join("catalog/cairn.catalog")
}

#[test]
fn committed_catalog_is_generated_from_msg_rs() {
    let want = msg::catalog();
    let path = catalog_file();
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nGenerate it with: {REGENERATE}",
            path.display()
        )
    });
    if have != want {
        let (n, a, b) = have
            .lines()
            .chain(std::iter::repeat("<end of file>"))
            .zip(want.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(n, (a, b))| (n + 1, a, b))
            .unwrap_or((0, "", "(a final newline differs)"));
        panic!(
            "catalog/cairn.catalog is not what core/src/stage/msg.rs generates: line {n} is\n  \
             {a:?}\nbut should be\n  {b:?}\nRegenerate it with: {REGENERATE}"
        );
    }
}

#[test]
fn journalctl_accepts_the_catalog() {
    if Command::new("journalctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: journalctl is not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    // What msg.rs generates, so this test judges the format even before the committed
    // file is regenerated (the other test compares the two).
    std::fs::write(dir.join("cairn.catalog"), msg::catalog()).unwrap();

    let o = Command::new("journalctl")
        .arg(format!("--root={}", root.path().display()))
        .arg("--update-catalog")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && stderr.trim().is_empty(),
        "journalctl --update-catalog refused the catalog ({}): {stderr}",
        o.status
    );
    assert!(
        root.path()
            .join("var/lib/systemd/catalog/database")
            .is_file(),
        "no catalog database was written under {}",
        root.path().display()
    );

    let o = Command::new("journalctl")
        .arg(format!("--root={}", root.path().display()))
        .arg("--list-catalog")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "--list-catalog: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    for m in msg::ALL {
        let want = format!("{} cairn: {}", m.id, m.summary);
        assert!(
            lines.contains(&want.as_str()),
            "--list-catalog does not list {} as {want:?}:\n{listed}",
            m.name
        );
    }
    assert_eq!(lines.len(), msg::ALL.len(), "{listed}");

    // The whole text of one entry comes back as written, body included.
    let m = &msg::UNIT_RESTART_FAILED;
    let o = Command::new("journalctl")
        .arg(format!("--root={}", root.path().display()))
        .args(["--dump-catalog", m.id])
        .output()
        .unwrap();
    assert!(o.status.success());
    let dumped = String::from_utf8(o.stdout).unwrap();
    assert!(
        dumped.contains(&format!("Subject: {}", m.summary)),
        "{dumped}"
    );
    assert!(
        dumped.contains("Documentation: man:cairn-quiesce(8)"),
        "{dumped}"
    );
    assert!(
        dumped.contains("`systemctl start @CAIRN_UNIT@`"),
        "{dumped}"
    );
}

/// In a booted systemd: the catalog installed where the package puts it, a message logged
/// with a cairn MESSAGE_ID and field, and `journalctl -x` shows the entry's text below it
/// with `@CAIRN_UNIT@` replaced by the message's value.
#[test]
fn journalctl_x_explains_a_message_with_its_fields() {
    use cairn_tests::container::{Container, ExecOpts};
    if let Err(why) = Container::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let catalog = msg::catalog();
    let c = Container::builder()
        .prepare(move |root| {
            let dir = root.join("usr/lib/systemd/catalog");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cairn.catalog"), &catalog)?;
            Ok(())
        })
        .boot()
        .expect("boot a container");
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let o = c.exec_with(
            args,
            &ExecOpts {
                stdin,
                timeout: Some(std::time::Duration::from_secs(60)),
                ..Default::default()
            },
        );
        assert!(
            o.status.success(),
            "{args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["journalctl", "--update-catalog"], None);
    let m = &msg::UNIT_RESTART_FAILED;
    let entry = format!(
        "MESSAGE_ID={}\nMESSAGE=catalog test message\nCAIRN_UNIT=catalog-test.service\n\
         SYSLOG_IDENTIFIER=cairn-catalog-test\n",
        m.id
    );
    run(&["logger", "--journald"], Some(entry.as_bytes()));
    // journald may take a moment to write it.
    let mut shown = String::new();
    for _ in 0..50 {
        shown = run(
            &[
                "journalctl",
                "-x",
                "--no-pager",
                "SYSLOG_IDENTIFIER=cairn-catalog-test",
            ],
            None,
        );
        if shown.contains("catalog test message") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        shown.contains("catalog test message"),
        "not logged: {shown}"
    );
    // Each catalog line is prefixed (`-- `, or `░░ ` since systemd 251).
    assert!(
        shown.contains(&format!(" Subject: {}\n", m.summary)),
        "{shown}"
    );
    assert!(
        shown.contains(" Documentation: man:cairn-quiesce(8)\n"),
        "{shown}"
    );
    assert!(
        shown.contains("The unit catalog-test.service, stopped for the snapshot"),
        "@CAIRN_UNIT@ was not filled in:\n{shown}"
    );
    assert!(!shown.contains("@CAIRN_UNIT@"), "{shown}");
}

#[test]
fn cairn_7_lists_every_message_id() {
    let path = workspace().join("man/cairn.7");
    let page = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\\-", "-")
        .replace("\\&", "");
    let mut missing = Vec::new();
    for m in msg::ALL {
        // `.TP` / `.B ID` / `NAME: …`, as the stage pages list theirs.
        let listed =
            page.lines().collect::<Vec<_>>().windows(2).any(|w| {
                w[0] == format!(".B {}", m.id) && w[1].starts_with(&format!("{}:", m.name))
            });
        if !listed {
            missing.push(format!(".B {}\\n{}: …", m.id, m.name));
        }
    }
    assert!(
        missing.is_empty(),
        "man/cairn.7 does not list these message ids (as in its JOURNAL section):\n{}",
        missing.join("\n")
    );
    // And it explains every field the catalog texts fill in.
    for m in msg::ALL {
        for part in m.detail.split('@').skip(1).step_by(2) {
            assert!(
                page.contains(part),
                "man/cairn.7 does not mention the journal field {part} (used by {})",
                m.name
            );
        }
    }
}
