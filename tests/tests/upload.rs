//! `cairn-upload` and `--remote` against a real S3 server (Garage, `cairn_tests::garage`):
//! the first mirror, a second run that sends nothing, a new snapshot that sends only its
//! new objects; faults between cairn and the server (`cairn_tests::faultproxy`: 503
//! SlowDown, 500, connection resets, a slow link); kill -9 in the middle of a multipart
//! upload; append-only without `--prune` and the grace period with it; a restore on a
//! "new host" from the bucket alone; and one-line errors for wrong credentials, a missing
//! bucket and an unreachable endpoint.
//!
//! Needs the garage binary, which `scripts/deps.sh test` (run by `make test`) installs.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_tests::faultproxy::{Fault, FaultProxy};
use cairn_tests::garage::Garage;
use common::{code, ok, text, Env};
use serde_json::Value;

const BUCKET: &str = "cairn-test";

/// A server with the test bucket, an upload key and a delete key (as files).
struct Remote {
    garage: Garage,
    dir: tempfile::TempDir,
}

impl Remote {
    fn start() -> Option<Remote> {
        // `make test` installs Garage first (scripts/deps.sh); a missing one is a
        // failure, not a skip.
        cairn_tests::garage::available().expect("Garage, the S3 server of these tests");
        let garage = Garage::start().unwrap();
        garage.bucket(BUCKET).unwrap();
        let dir = cairn_tests::fixture::tempdir().unwrap();
        garage
            .key("upload", BUCKET, &["--read", "--write"])
            .unwrap()
            .write_file(&dir.path().join("upload.cred"))
            .unwrap();
        garage
            .key("delete", BUCKET, &["--read", "--write", "--owner"])
            .unwrap()
            .write_file(&dir.path().join("delete.cred"))
            .unwrap();
        Some(Remote { garage, dir })
    }

    fn cred(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `[remote]` section for `endpoint` (the server, or a proxy in front of it).
    fn section(&self, endpoint: &str, prefix: &str, extra: &str) -> String {
        format!(
            "[remote]\nurl = s3://{BUCKET}/{prefix}\npreset = garage\nendpoint = {endpoint}\n\
             credentials = {}\ndelete_credentials = {}\n{extra}",
            self.cred("upload.cred").display(),
            self.cred("delete.cred").display()
        )
    }
}

fn append(conf: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(conf).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn upload(env: &Env, args: &[&str]) -> (i32, Value, std::process::Output) {
    let o = env
        .cmd("cairn-upload")
        .arg("--json")
        .args(args)
        .output()
        .expect("run cairn-upload");
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (code(&o), v, o)
}

fn uploaded(v: &Value) -> u64 {
    v["figures"]["uploaded"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// Every object of the local repository, as `DIR/NAME` (data without its XX level).
fn local_objects(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert("config".to_string());
    for dir in ["keys", "index", "snapshots"] {
        for e in std::fs::read_dir(repo.join(dir)).unwrap() {
            out.insert(format!(
                "{dir}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    for sub in std::fs::read_dir(repo.join("data")).unwrap() {
        for e in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            out.insert(format!("data/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    out.retain(|n| !n.contains(".cairn-tmp") && !n.contains("/.tmp"));
    out
}

/// Every object in the bucket under the config's prefix, in the same form.
fn remote_objects(env: &Env, _prefix: &str) -> BTreeSet<String> {
    use cairn::backend::{Backend, Kind};
    let cfg = cairn::config::Config::load(Some(&env.conf)).unwrap();
    let b =
        cairn::backend::s3::S3Backend::new(cairn::upload::connect(cfg.remote().unwrap()).unwrap());
    let mut out = BTreeSet::new();
    for kind in [Kind::Keys, Kind::Data, Kind::Index, Kind::Snapshots] {
        for n in b.list(kind).unwrap() {
            out.insert(format!("{}/{n}", kind.dir()));
        }
    }
    if b.exists(None, "config").unwrap() {
        out.insert("config".to_string());
    }
    out
}

fn source_tree(d: &Path) -> PathBuf {
    let s = d.join("src");
    std::fs::create_dir_all(s.join("sub")).unwrap();
    std::fs::write(s.join("a.txt"), "alpha\n").unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(7);
    std::fs::write(s.join("sub/random.bin"), rng.bytes(3 << 20)).unwrap();
    s
}

#[test]
fn mirror_then_nothing_then_only_the_new_objects() {
    let Some(r) = Remote::start() else { return };
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = source_tree(d.path());
    let env = Env::new(&[&src]);
    append(&env.conf, &r.section(&r.garage.endpoint(), "host1", ""));
    ok(&env.snapshot());

    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    let first = local_objects(&env.repo);
    assert_eq!(uploaded(&v), first.len() as u64, "{v:#}");
    assert_eq!(
        remote_objects(&env, "host1"),
        first,
        "the bucket mirrors the repository"
    );
    assert!(v["figures"]["bytes"].as_u64().unwrap() > 3 << 20, "{v:#}");
    assert_eq!(env.status("upload")["result"], "success");

    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(uploaded(&v), 0, "the second run sends nothing: {v:#}");
    assert_eq!(v["figures"]["present"].as_u64(), Some(first.len() as u64));

    std::fs::write(src.join("b.txt"), "beta, new\n").unwrap();
    ok(&env.snapshot());
    let second = local_objects(&env.repo);
    let new: BTreeSet<_> = second.difference(&first).cloned().collect();
    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(
        uploaded(&v),
        new.len() as u64,
        "only the new objects: {new:?} {v:#}"
    );
    assert_eq!(remote_objects(&env, "host1"), second);
    // The bucket alone passes check, with and without the key.
    ok(&env.cairn(&["--remote", "check", "--read-data"]));
}

#[test]
fn a_new_host_restores_from_the_bucket_alone() {
    let Some(r) = Remote::start() else { return };
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("tree");
    std::fs::create_dir_all(&src).unwrap();
    cairn_tests::build_full_tree(&src).unwrap();
    let env = Env::new(&[&src]);
    append(&env.conf, &r.section(&r.garage.endpoint(), "h", ""));
    ok(&env.snapshot());
    let (c, _, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));

    // The new host: the config and the key, no repository, state or cache at all.
    let host = cairn_tests::fixture::tempdir().unwrap();
    let key = host.path().join("repo.key");
    std::fs::copy(&env.key, &key).unwrap();
    let conf = host.path().join("cairn.conf");
    std::fs::write(
        &conf,
        format!(
            "[repository]\npath = {}\nkey_file = {}\n{}",
            host.path().join("no-repository-here").display(),
            key.display(),
            r.section(&r.garage.endpoint(), "h", "")
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        env.bins
            .cmd("cairn")
            .env("CAIRN_CONFIG", &conf)
            .env("STATE_DIRECTORY", host.path().join("state"))
            .env("CACHE_DIRECTORY", host.path().join("cache"))
            .env("CAIRN_NO_DBUS", "1")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["--remote", "snapshots", "--json"]);
    ok(&o);
    let snaps: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let target = host.path().join("restored");
    ok(&run(&[
        "--remote",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]));
    let restored = target.join(src.strip_prefix("/").unwrap());
    cairn_tests::assert_trees_equal(&src, &restored, &cairn_tests::CompareOpts::default());
    assert!(
        !host.path().join("no-repository-here").exists(),
        "nothing local was made"
    );
    // Without a key: every object's name is still verified.
    std::fs::write(
        &conf,
        format!(
            "[repository]\npath = /nonexistent\n{}",
            r.section(&r.garage.endpoint(), "h", "")
        ),
    )
    .unwrap();
    let o = run(&["--remote", "check"]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("every object's name verified"),
        "{}",
        text(&o)
    );
}

#[test]
fn faults_between_cairn_and_the_bucket_are_ridden_out() {
    let Some(r) = Remote::start() else { return };
    let proxy = FaultProxy::start(r.garage.addr()).unwrap();
    // Two faults in every five requests, of every kind, and a slow link now and then.
    proxy.set_plan(|req| match req.seq % 10 {
        1 => Fault::SlowDown,
        3 if req.body_len > 0 => Fault::Reset,
        4 => Fault::InternalError,
        6 => Fault::Slow(2 << 20),
        8 if req.method == "PUT" => Fault::SlowDown,
        _ => Fault::Pass,
    });
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = source_tree(d.path());
    for i in 0..12 {
        std::fs::write(
            src.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(50_000),
        )
        .unwrap();
    }
    let env = Env::new(&[&src]);
    append(
        &env.conf,
        &r.section(&proxy.url(), "faulty", "retries = 10\ntimeout = 30s\n"),
    );
    ok(&env.snapshot());
    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    let st = proxy.stats();
    for f in ["SlowDown", "InternalError", "Reset", "Slow"] {
        assert!(
            st.injected.get(f).copied().unwrap_or(0) > 0,
            "{f} injected: {st:?}"
        );
    }
    assert_eq!(uploaded(&v), local_objects(&env.repo).len() as u64, "{v:#}");
    // Read back through the same faults: check and a restore both come through.
    let o = env.cairn(&["--remote", "check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

/// Verification on arrival: a body changed on the way (its checksum header unchanged) is
/// refused by the server, with either checksum, and sent again; when every body arrives
/// damaged, the run fails and nothing is stored under a final name.
#[test]
fn a_body_damaged_on_the_way_is_refused_and_sent_again() {
    let Some(r) = Remote::start() else { return };
    let proxy = FaultProxy::start(r.garage.addr()).unwrap();
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = source_tree(d.path());
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let base = std::fs::read_to_string(&env.conf).unwrap();
    for sum in ["crc64nvme", "sha256"] {
        // The first two PUTs with a body arrive damaged, then the link is clean.
        let mut damaged = 0;
        proxy.set_plan(move |req| {
            if req.method == "PUT" && req.body_len > 0 && damaged < 2 {
                damaged += 1;
                Fault::Corrupt
            } else {
                Fault::Pass
            }
        });
        std::fs::write(
            &env.conf,
            format!(
                "{base}{}",
                r.section(
                    &proxy.url(),
                    sum,
                    &format!("checksum = {sum}\nretries = 1\n")
                )
            ),
        )
        .unwrap();
        let before = proxy.stats().injected.get("Corrupt").copied().unwrap_or(0);
        let (c, v, o) = upload(&env, &[]);
        assert_eq!(c, 0, "{sum}: {}", text(&o));
        let st = proxy.stats();
        assert_eq!(st.injected.get("Corrupt").copied().unwrap_or(0), before + 2);
        assert!(
            text(&o).contains("does not match its checksum"),
            "{sum}: the refusal is reported: {}",
            text(&o)
        );
        assert_eq!(uploaded(&v), local_objects(&env.repo).len() as u64, "{v:#}");
        assert_eq!(remote_objects(&env, sum), local_objects(&env.repo));
        let o = env.cairn(&["--remote", "check", "--read-data"]);
        assert_eq!(code(&o), 0, "{sum}: {}", text(&o));
    }
    // Every body damaged: exit 3, and the bucket holds nothing of it.
    proxy.set_plan(|req| {
        if req.method == "PUT" && req.body_len > 0 {
            Fault::Corrupt
        } else {
            Fault::Pass
        }
    });
    std::fs::write(
        &env.conf,
        format!(
            "{base}{}",
            r.section(&proxy.url(), "never", "retries = 1\n")
        ),
    )
    .unwrap();
    let (c, _, o) = upload(&env, &[]);
    assert_eq!(c, 3, "{}", text(&o));
    assert!(
        text(&o).contains("does not match its checksum"),
        "{}",
        text(&o)
    );
    assert!(remote_objects(&env, "never").is_empty());
}

#[test]
fn a_killed_upload_is_finished_by_the_next_run() {
    let Some(r) = Remote::start() else { return };
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(11);
    std::fs::write(src.join("big.bin"), rng.bytes(14 << 20)).unwrap();
    // Big packs, so that one goes up in 5 MiB parts, slowly.
    let env = Env::with_repo_extra(&[&src], "pack_size = 16 MiB\n");
    append(
        &env.conf,
        &r.section(
            &r.garage.endpoint(),
            "killed",
            "part_size = 5 MiB\nbandwidth_limit = 2 MiB/s\n",
        ),
    );
    ok(&env.snapshot());
    let mut child = env
        .cmd("cairn-upload")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = env.path("state").join("upload-multipart.json");
    let t = Instant::now();
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"id\"")) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "a multipart upload started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let local = local_objects(&env.repo);
    let partial = remote_objects(&env, "killed");
    assert!(
        !partial.iter().any(|n| n.starts_with("snapshots/")),
        "killed during the data phase: no snapshot is in the bucket yet: {partial:?}"
    );
    // The next run, at full speed, finishes the job and aborts the dead upload.
    let conf = std::fs::read_to_string(&env.conf)
        .unwrap()
        .replace("bandwidth_limit = 2 MiB/s\n", "");
    std::fs::write(&env.conf, conf).unwrap();
    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(v["figures"]["aborted_multipart"], 1, "{v:#}");
    assert_eq!(remote_objects(&env, "killed"), local);
    assert!(
        !std::fs::read_to_string(&state)
            .unwrap_or_default()
            .contains("\"id\""),
        "no upload left recorded"
    );
    ok(&env.cairn(&["--remote", "check", "--read-data"]));
}

#[test]
fn append_only_without_prune_and_the_grace_period_with_it() {
    let Some(r) = Remote::start() else { return };
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = source_tree(d.path());
    let env = Env::with_repo_extra(&[&src], "");
    append(&env.conf, "[retention]\nkeep_last = 1\n");
    append(&env.conf, &r.section(&r.garage.endpoint(), "p", ""));
    ok(&env.snapshot());
    let (c, _, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    let before = remote_objects(&env, "p");
    // Change everything, snapshot (retention forgets the first), prune locally.
    std::fs::remove_file(src.join("sub/random.bin")).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(99);
    std::fs::write(src.join("other.bin"), rng.bytes(2 << 20)).unwrap();
    ok(&env.snapshot());
    ok(&env.cairn(&["prune"]));
    let local = local_objects(&env.repo);
    let dropped: BTreeSet<_> = before.difference(&local).cloned().collect();
    assert!(
        dropped.iter().any(|n| n.starts_with("snapshots/")),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|n| n.starts_with("data/")),
        "{dropped:?}"
    );

    // Without --prune nothing is ever deleted.
    let (c, v, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    let now = remote_objects(&env, "p");
    assert!(now.is_superset(&before), "append-only: nothing deleted");
    assert_eq!(
        v["figures"]["remote_only"].as_u64(),
        Some(dropped.len() as u64)
    );

    // --prune within the grace period (default 7 days): still nothing.
    let (c, v, o) = upload(&env, &["--prune"]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(v["figures"]["pruned"], 0, "{v:#}");
    assert_eq!(
        v["figures"]["prune_kept_young"].as_u64(),
        Some(dropped.len() as u64)
    );
    assert!(remote_objects(&env, "p").is_superset(&before));

    // With no grace: exactly what the local repository dropped goes.
    append(&env.conf, "prune_grace = 0s\n");
    let (c, v, o) = upload(&env, &["--prune"]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(
        v["figures"]["pruned"].as_u64(),
        Some(dropped.len() as u64),
        "{v:#}"
    );
    assert_eq!(remote_objects(&env, "p"), local);
    ok(&env.cairn(&["--remote", "check"]));

    // A bucket that refuses a delete (Object Lock on that object): it is kept, counted,
    // and deleted by a later run once the bucket lets it go.
    ok(&env.snapshot());
    std::fs::write(src.join("c.txt"), "gamma\n").unwrap();
    ok(&env.snapshot());
    ok(&env.cairn(&["prune"]));
    let proxy = FaultProxy::start(r.garage.addr()).unwrap();
    let conf = std::fs::read_to_string(&env.conf).unwrap();
    std::fs::write(&env.conf, conf.replace(&r.garage.endpoint(), &proxy.url())).unwrap();
    let (c, _, o) = upload(&env, &[]);
    assert_eq!(c, 0, "{}", text(&o));
    let mut denied = 0;
    proxy.set_plan(move |req| {
        if req.method == "DELETE" && denied == 0 {
            denied += 1;
            Fault::AccessDenied
        } else {
            Fault::Pass
        }
    });
    let local = local_objects(&env.repo);
    let there = remote_objects(&env, "p");
    let stale = there.difference(&local).count() as u64;
    assert!(stale >= 2, "{there:?}");
    let (c, v, o) = upload(&env, &["--prune"]);
    assert_eq!(c, 0, "a refused delete is not a failure: {}", text(&o));
    assert_eq!(
        v["figures"]["prune_refused"],
        1,
        "{v:#} {:?}",
        proxy.stats()
    );
    let left = remote_objects(&env, "p").difference(&local).count() as u64;
    assert!(left >= 1, "the refused object is kept");
    assert!(
        v["figures"]["pruned"].as_u64().unwrap() < stale,
        "while a snapshot stays in the bucket its packs stay too: {v:#}"
    );
    let (c, v, o) = upload(&env, &["--prune"]);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(
        v["figures"]["pruned"].as_u64(),
        Some(left),
        "retried and deleted: {v:#}"
    );
    assert_eq!(remote_objects(&env, "p"), local);
    let conf = std::fs::read_to_string(&env.conf).unwrap();
    std::fs::write(&env.conf, conf.replace(&proxy.url(), &r.garage.endpoint())).unwrap();

    // --prune without delete credentials refuses, before touching anything.
    let conf = std::fs::read_to_string(&env.conf).unwrap();
    let conf: String = conf
        .lines()
        .filter(|l| !l.starts_with("delete_credentials"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.conf, conf).unwrap();
    let (c, _, o) = upload(&env, &["--prune"]);
    assert_eq!(c, 1, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("delete_credentials"));
}

#[test]
fn wrong_credentials_missing_bucket_and_no_server_are_one_line_each() {
    let Some(r) = Remote::start() else { return };
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = source_tree(d.path());
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let base = std::fs::read_to_string(&env.conf).unwrap();
    let bad = d.path().join("bad.cred");
    std::fs::write(
        &bad,
        "access_key_id = GK0000000000000000000000\nsecret_access_key = 00000000\n",
    )
    .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The failure is mailed too (the first case), through the local MTA.
    let mail = cairn_tests::mta::Mta::mailbox().expect("the local MTA (scripts/deps.sh)");
    let tag = cairn_tests::mta::token("upl");
    let cases = [
        (
            format!(
                "[alert]\nmail_to = {}\n[remote]\nurl = s3://{BUCKET}/{tag}\npreset = garage\nendpoint = {}\ncredentials = {}\nretries = 1\n",
                cairn_tests::mta::ADDRESS,
                r.garage.endpoint(),
                bad.display()
            ),
            "refused the credentials",
        ),
        (
            format!(
                "[remote]\nurl = s3://no-such-bucket/x\npreset = garage\nendpoint = {}\ncredentials = {}\nretries = 1\n",
                r.garage.endpoint(),
                r.cred("upload.cred").display()
            ),
            "does not exist",
        ),
        (
            format!(
                "[remote]\nurl = s3://{BUCKET}/x\npreset = garage\nendpoint = http://{dead}\ncredentials = {}\nretries = 1\ntimeout = 5s\n",
                r.cred("upload.cred").display()
            ),
            "cannot reach",
        ),
    ];
    for (section, says) in &cases {
        std::fs::write(&env.conf, format!("{base}{section}")).unwrap();
        let o = env.cmd("cairn-upload").output().unwrap();
        assert_eq!(code(&o), 3, "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "one error line: {err}");
        assert!(errors[0].contains(says), "{says}: {err}");
        assert!(!err.contains("00000000\n") && !err.contains("secret_access_key ="));
        // `cairn remote test` says the same, at its step.
        let o = env.cairn(&["remote", "test", "--json"]);
        assert_eq!(code(&o), 2, "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let failed = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["ok"] == false)
            .unwrap()
            .clone();
        assert!(failed["detail"].as_str().unwrap().contains(says), "{v:#}");
    }
    let m = mail.wait_for(&tag, Duration::from_secs(30)).unwrap();
    assert!(m.subject().contains("FAILED"), "{}", m.subject());
    assert!(m.body().contains("refused the credentials"), "{}", m.body());
    // And the right settings pass every step.
    std::fs::write(
        &env.conf,
        format!("{base}{}", r.section(&r.garage.endpoint(), "ok", "")),
    )
    .unwrap();
    let o = env.cairn(&["remote", "test", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}
