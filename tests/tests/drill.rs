//! `cairn-drill`: a good repository passes, from the local repository and from the bucket
//! (a real Garage); one flipped byte in a pack, a missing pack and a live file that rotted
//! are each exit 4 with an UNTRUSTED mail through the real MTA; an unreachable bucket is
//! exit 3; a sample restores and verifies only its share; the scratch data is gone after.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{code, ok, text, Env};
use serde_json::Value;

fn tree(d: &Path, files: usize, tag: &str) -> PathBuf {
    let s = d.join(format!("src-{tag}"));
    std::fs::create_dir_all(s.join("sub")).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(3);
    for i in 0..files {
        std::fs::write(
            s.join(format!("f{i:03}.txt")),
            format!("file {i} {tag}\n").repeat(200),
        )
        .unwrap();
    }
    std::fs::write(s.join("sub/big.bin"), rng.bytes(2 << 20)).unwrap();
    std::os::unix::fs::symlink("f000.txt", s.join("link")).unwrap();
    s
}

fn drill(env: &Env) -> (i32, Value, std::process::Output) {
    let o = env
        .cmd("cairn-drill")
        .arg("--json")
        .output()
        .expect("run cairn-drill");
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (code(&o), v, o)
}

fn append(conf: &Path, t: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(conf)
        .unwrap()
        .write_all(t.as_bytes())
        .unwrap();
}

fn scratch_is_empty(env: &Env) -> bool {
    std::fs::read_dir(env.path("cache/drill")).is_ok_and(|mut d| d.next().is_none())
}

fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in std::fs::read_dir(repo.join("data")).unwrap() {
        for e in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            v.push(e.unwrap().path());
        }
    }
    v.sort();
    v
}

#[test]
fn a_good_repository_passes_and_leaves_no_scratch_data() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = tree(d.path(), 20, "good");
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let (c, v, o) = drill(&env);
    assert_eq!(c, 0, "{}", text(&o));
    let f = &v["figures"];
    assert_eq!(f["mismatches"], 0, "{v:#}");
    assert_eq!(f["files"].as_u64(), Some(21), "every file read back: {v:#}");
    assert!(f["bytes"].as_u64().unwrap() >= 2 << 20);
    assert!(f["throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(f["source"], "local");
    assert!(scratch_is_empty(&env), "the scratch data is removed");
    let st = env.status("drill");
    assert_eq!(st["result"], "success", "{st:#}");
    assert_eq!(
        st["figures"]["figures"]["files"].as_u64(),
        Some(21),
        "{st:#}"
    );
}

#[test]
fn a_flipped_byte_or_a_missing_pack_is_exit_4_and_an_untrusted_mail() {
    let mail = cairn_tests::mta::Mta::mailbox().expect("the local MTA (scripts/deps.sh)");
    let tag = cairn_tests::mta::token("drl");
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = tree(d.path(), 5, &tag);
    let env = Env::new(&[&src]);
    append(
        &env.conf,
        &format!("[alert]\nmail_to = {}\n", cairn_tests::mta::ADDRESS),
    );
    ok(&env.snapshot());
    // One byte, in the middle of the first blob of the biggest pack.
    let all = packs(&env.repo);
    let pack = all
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(pack, &bytes).unwrap();
    let (c, v, o) = drill(&env);
    assert_eq!(c, 4, "{}", text(&o));
    assert!(v["figures"]["mismatches"].as_u64().unwrap() >= 1, "{v:#}");
    assert!(scratch_is_empty(&env));
    let m = mail.wait_for(&tag, Duration::from_secs(30)).unwrap();
    assert!(m.subject().contains("UNTRUSTED"), "{}", m.subject());
    assert!(
        m.body().contains("ARE UNTRUSTED"),
        "the mail says it first: {}",
        m.body()
    );
    assert_eq!(env.status("drill")["exit_code"], 4);

    // A pack gone altogether.
    bytes[100] ^= 0x01;
    std::fs::write(pack, &bytes).unwrap();
    let (c, _, o) = drill(&env);
    assert_eq!(c, 0, "repaired: {}", text(&o));
    std::fs::remove_file(pack).unwrap();
    let (c, v, o) = drill(&env);
    assert_eq!(c, 4, "{}", text(&o));
    let listed = v["figures"]["mismatch_list"].to_string();
    assert!(
        listed.contains("did not restore") || listed.contains("missing"),
        "{listed}"
    );
}

#[test]
fn a_sample_restores_and_verifies_only_its_share() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = tree(d.path(), 99, "sample");
    let env = Env::new(&[&src]);
    append(&env.conf, "[drill]\nsample = 10%\n");
    ok(&env.snapshot());
    let (c, v, o) = drill(&env);
    assert_eq!(c, 0, "{}", text(&o));
    let f = &v["figures"];
    assert_eq!(f["files_in_snapshot"].as_u64(), Some(100), "{v:#}");
    assert_eq!(f["files"].as_u64(), Some(10), "a tenth of the files: {v:#}");
    assert!((f["sample"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    // A damaged file outside the sample goes unnoticed by this drill, inside it not:
    // so the sample really is what was verified (checked by the figures above).
}

#[test]
fn a_live_file_that_rotted_since_the_snapshot_is_found_with_compare_live() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = tree(d.path(), 5, "live");
    let env = Env::new(&[&src]);
    append(&env.conf, "[drill]\ncompare_live = yes\n");
    ok(&env.snapshot());
    let (c, v, o) = drill(&env);
    assert_eq!(c, 0, "{}", text(&o));
    assert!(
        v["figures"]["live_compared"].as_u64().unwrap() >= 6,
        "{v:#}"
    );
    // Same size, same mtime, other bytes: what bit rot looks like.
    let f = src.join("f002.txt");
    let m = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut b = std::fs::read(&f).unwrap();
    b[10] ^= 0x20;
    std::fs::write(&f, &b).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(m)
        .unwrap();
    let (c, v, o) = drill(&env);
    assert_eq!(c, 4, "{}", text(&o));
    let listed = v["figures"]["mismatch_list"].to_string();
    assert!(
        listed.contains("f002.txt") && listed.contains("live file"),
        "{listed}"
    );
}

#[test]
fn the_bucket_is_drilled_and_an_unreachable_one_is_exit_3() {
    cairn_tests::garage::available().expect("Garage, the S3 server (scripts/deps.sh)");
    let g = cairn_tests::garage::Garage::start().unwrap();
    g.bucket("drill").unwrap();
    let d = cairn_tests::fixture::tempdir().unwrap();
    g.key("k", "drill", &["--read", "--write"])
        .unwrap()
        .write_file(&d.path().join("k.cred"))
        .unwrap();
    let src = tree(d.path(), 8, "remote");
    let env = Env::new(&[&src]);
    let base = std::fs::read_to_string(&env.conf).unwrap();
    let remote = |endpoint: &str| {
        format!(
            "[remote]\nurl = s3://drill/h\npreset = garage\nendpoint = {endpoint}\n\
             credentials = {}\nretries = 1\ntimeout = 5s\n",
            d.path().join("k.cred").display()
        )
    };
    std::fs::write(&env.conf, format!("{base}{}", remote(&g.endpoint()))).unwrap();
    ok(&env.snapshot());
    ok(&env.cmd("cairn-upload").output().unwrap());
    // The local repository is damaged, the bucket is not: the drill reads the bucket.
    for p in packs(&env.repo) {
        std::fs::remove_file(p).unwrap();
    }
    let (c, v, o) = drill(&env);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(v["figures"]["source"], "remote");
    assert_eq!(v["figures"]["files"].as_u64(), Some(9));

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &env.conf,
        format!("{base}{}", remote(&format!("http://{dead}"))),
    )
    .unwrap();
    let (c, v, o) = drill(&env);
    assert_eq!(c, 3, "could not run: {}", text(&o));
    assert!(
        v["error"].as_str().unwrap().contains("cannot reach"),
        "{v:#}"
    );
}
