//! Browsing snapshots: `ls`, `diff`, snapshot id resolution, and opening the repository
//! with a systemd credential instead of a key file.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::{code, ok, stderr, text, Env};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ls_and_diff_show_what_changed() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let s = d.path().join("src");
    std::fs::create_dir_all(s.join("dir")).unwrap();
    std::fs::write(s.join("a.txt"), "one").unwrap();
    std::fs::write(s.join("dir/b.txt"), "bee").unwrap();
    std::fs::write(s.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin1").unwrap();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    std::fs::write(s.join("a.txt"), "two").unwrap();
    std::fs::remove_file(s.join("dir/b.txt")).unwrap();
    std::fs::write(s.join("c.txt"), "new").unwrap();
    std::fs::set_permissions(s.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    ok(&env.snapshot());
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 2);
    let st = env.status("snapshot");
    let f = &st["figures"]["figures"];
    assert_eq!(
        (
            f["files_new"].as_u64(),
            f["files_changed"].as_u64(),
            f["files_unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{st}"
    );

    let o = env.cairn(&["diff", &ids[0][..8], "latest"]);
    ok(&o);
    let out = stdout(&o);
    let p = s.display().to_string();
    for want in [
        format!("M {p}/a.txt"),
        format!("- {p}/dir/b.txt"),
        format!("+ {p}/c.txt"),
        format!("M {p}/dir\n"),
    ] {
        assert!(out.contains(&want), "diff must show {want:?}:\n{out}");
    }
    assert!(
        !out.contains("caf"),
        "an unchanged file is not a change:\n{out}"
    );
    let o = env.cairn(&["diff", &ids[0], &ids[1], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    assert_eq!(v["changes"].as_array().unwrap().len(), 4, "{v}");

    // ls below a path, as text and JSON; non-UTF-8 names are escaped, not mangled.
    let o = env.cairn(&["ls", "latest", &p]);
    let out = stdout(ok(&o));
    assert!(
        out.contains("-rw-r--r--") && out.contains("drwx------"),
        "{out}"
    );
    assert!(out.contains("caf\\xe9"), "{out}");
    let o = env.cairn(&["ls", &ids[0], &format!("{p}/dir"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![format!("{p}/dir"), format!("{p}/dir/b.txt")],
        "{v}"
    );
    let b = &v[1];
    assert_eq!(
        b["blake3"],
        blake3::hash(b"bee").to_hex().as_str(),
        "the whole-file hash is plain BLAKE3"
    );

    // Snapshot specs: an unknown id and an ambiguous (empty) prefix are usage errors.
    let o = env.cairn(&["ls", "ffffffffffff"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("no snapshot matches"));
    let o = env.cairn(&["ls", ""]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o = env.cairn(&["cat", "latest", &format!("{p}/dir")]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

#[test]
fn a_systemd_credential_opens_the_repository() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let s = d.path().join("src");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("f"), "x").unwrap();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    let creds = env.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&env.key, creds.join("cairn-repository-key")).unwrap();
    std::fs::copy(&env.key, creds.join("custom")).unwrap();
    let conf = env.path("cred.conf");
    let run = |extra: &str, with_dir: bool| {
        std::fs::write(
            &conf,
            format!(
                "[repository]\npath = {}\n{extra}\n[sources]\npaths = {}\n",
                env.repo.display(),
                s.display()
            ),
        )
        .unwrap();
        let mut c = env.cmd("cairn");
        c.env("CAIRN_CONFIG", &conf).arg("snapshots");
        if with_dir {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        }
        c.output().unwrap()
    };
    // The default credential name, picked up with no key configured.
    ok(&run("", true));
    // A named credential.
    ok(&run("key_credential = custom", true));
    // Named, but systemd passed none: environment error naming the fix.
    let o = run("key_credential = custom", false);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("LoadCredential"), "{}", text(&o));
    // Nothing configured at all, no terminal: a configuration error saying what to set.
    let o = run("", false);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("key_file"), "{}", text(&o));
}
