//! The whole pipeline end to end on a real systemd (a booted container), as a sysadmin
//! installs and runs it: the package installed, `cairn setup` with a loop-device backup
//! disk, a local S3 server (Garage), the local MTA (the container's exim4), PostgreSQL
//! quiesced; then `cairn-backup.timer` fires and the chain runs by itself — preflight →
//! quiesce → snapshot → services back → upload → heartbeat ping → `cairn status` green —
//! and the drill timer passes. Then the failure matrix: each failure must reach the
//! operator through at least two independent channels within the run (the stage's own
//! mail, the `OnFailure=` alert mail, the heartbeat's `/fail` ping or a missing success
//! ping, the metrics), and leave a journal entry findable by `MESSAGE_ID` whose catalog
//! text says what to do.
//!
//! The container has its own network namespace (loopback only), so everything it talks
//! to listens there: the Garage server and the ping receiver run in the test process's
//! filesystem but inside the container's network namespace (`cairn_tests::netns`), and
//! exim4's daemon runs in the container itself (the SMTP fallback of the sandboxed
//! units). Needs root and systemd-nspawn; prints `SKIPPED:` without root.

use cairn_tests::output_text as text;
use std::time::{Duration, Instant};

use cairn::stage::msg::{self, MessageId};
use cairn_tests::container::Container;
use cairn_tests::disk::{self, Disk, Fs};
use cairn_tests::garage::Garage;
use cairn_tests::httpsink::HttpSink;
use serde_json::Value;

const MAIL_USER: &str = "e2email";
const BUCKET: &str = "cairn-e2e";
const PG_UNIT: &str = "postgresql@15-main.service";
/// How long one pipeline run may take here (2 cores, several containers at once).
const RUN: Duration = Duration::from_secs(240);
/// How long a mail or a ping may take to arrive once its stage has ended.
const ARRIVE: Duration = Duration::from_secs(60);

fn ready() -> bool {
    if !cairn_tests::container::ready() {
        return false;
    }
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    cairn_tests::garage::available().expect("Garage, the S3 server (scripts/deps.sh)");
    true
}

/// A container with cairn installed and set up, and what it talks to.
struct Pipeline {
    c: Container,
    garage: Garage,
    sink: HttpSink,
    /// The upload key.
    key: cairn_tests::garage::Key,
    /// The ping URL's unique part: `/ping/TAG`, `/drill/TAG`.
    tag: String,
    /// The backup disk (attached loop device) and its directory.
    _disk: Disk,
    _dir: tempfile::TempDir,
    cairn: String,
}

impl Pipeline {
    /// Boot, install, configure, `cairn setup`. `heartbeat` is added to `[heartbeat]`,
    /// `extra` to the end of the config.
    fn new(name: &str, heartbeat: &str, extra: &str) -> Pipeline {
        let dir = cairn_tests::fixture::tempdir().unwrap();
        let uuid = disk::random_uuid();
        let d = Disk::create_attached(
            dir.path(),
            Fs::Ext4,
            256,
            &disk::unique_label(name, Fs::Ext4),
            &uuid,
        )
        .unwrap();
        let c = Container::builder()
            .block_device(d.device())
            .boot()
            .unwrap();
        let garage = Garage::start_in_netns(c.leader_pid()).unwrap();
        garage.bucket(BUCKET).unwrap();
        let key = garage
            .key("upload", BUCKET, &["--read", "--write"])
            .unwrap();
        let sink = HttpSink::start_in_netns(c.leader_pid());
        let tag = cairn_tests::mta::token(name);
        let cairn = install(&c);
        let root = c.root().to_path_buf();
        std::fs::create_dir_all(root.join("etc/credstore")).unwrap();
        key.write_file(&root.join("etc/credstore/cairn-s3"))
            .unwrap();
        c.sh_ok(&format!(
            "chmod 0600 /etc/credstore/cairn-s3 && useradd --create-home {MAIL_USER} && \
                 install -d -m 0755 /srv/data /etc/cairn && \
                 head -c 3000000 /dev/urandom > /srv/data/random.bin && \
                 seq 1 100000 > /srv/data/numbers.txt && echo secret > /srv/data/root-only && \
                 chmod 0600 /srv/data/root-only && \
                 systemctl is-active {PG_UNIT} && systemctl is-active exim4.service"
        ));
        std::fs::write(
            root.join("etc/cairn/cairn.conf"),
            format!(
                "[repository]\npath = /srv/backup/cairn\nkey_credential = cairn.key\n\
                 [sources]\npaths = /srv/data /var/lib/postgresql\n\
                 [retention]\nkeep_last = 5\n\
                 [preflight]\nmount = /srv/backup\nuuid = {uuid}\nmin_free = 16 MiB\n\
                 [quiesce]\nunits = {PG_UNIT}\nstop_timeout = 60s\n\
                 [remote]\nurl = s3://{BUCKET}/host1\npreset = garage\nendpoint = {}\n\
                 credentials = credential:cairn-s3\nretries = 1\ntimeout = 5s\n\
                 [heartbeat]\nping_url = {}\ndrill_ping_url = {}\n\
                 metrics_file = /var/lib/prometheus/node-exporter/cairn.prom\n\
                 retries = 1\ntimeout = 5s\n{heartbeat}\
                 [alert]\nmail_to = {MAIL_USER}\n{extra}",
                garage.endpoint(),
                sink.url(&format!("/ping/{tag}")),
                sink.url(&format!("/drill/{tag}")),
            ),
        )
        .unwrap();
        let o = c.exec(&[&cairn, "setup", "--json"]);
        let v: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        assert_eq!(o.status.code(), Some(0), "cairn setup: {v:#}\n{}", text(&o));
        // Setup made the metrics directory (missing here) for the heartbeat's user.
        let (result, detail) = setup_step(&v, "metrics");
        assert_eq!(result, "done", "{detail}");
        assert_eq!(
            c.sh_ok("stat -c %U /var/lib/prometheus/node-exporter")
                .trim(),
            "cairn"
        );
        for u in [
            "cairn-backup.timer",
            "cairn-drill.timer",
            "cairn-heartbeat.service",
        ] {
            assert_eq!(
                text(&c.systemctl(&["is-active", u])).trim(),
                "active",
                "{u} after setup: {v:#}"
            );
        }
        Pipeline {
            c,
            garage,
            sink,
            key,
            tag,
            _disk: d,
            _dir: dir,
            cairn,
        }
    }

    /// Make `timer` fire a second after now, as if its calendar time had come.
    fn fire(&self, timer: &str) {
        let dir = self.c.root().join(format!("etc/systemd/system/{timer}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("e2e-now.conf"),
            "[Timer]\nOnCalendar=\nRandomizedDelaySec=0\nAccuracySec=1s\nOnActiveSec=1s\n",
        )
        .unwrap();
        assert!(self.c.systemctl(&["daemon-reload"]).status.success());
        let o = self.c.systemctl(&["restart", timer]);
        assert!(o.status.success(), "restart {timer}: {}", text(&o));
    }

    /// Fire `timer` and wait for `stage` to finish a new run; its status file.
    fn fire_and_wait(&self, timer: &str, stage: &str) -> Value {
        let before = self.status(stage);
        self.fire(timer);
        self.wait_finished(stage, &before)
    }

    /// A stage's status file.
    fn status(&self, stage: &str) -> Value {
        let p = self
            .c
            .root()
            .join(format!("var/lib/cairn/status/{stage}.json"));
        std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// Wait until `stage`'s status file holds a finished run other than `before`'s.
    fn wait_finished(&self, stage: &str, before: &Value) -> Value {
        let deadline = Instant::now() + RUN;
        loop {
            let st = self.status(stage);
            // A new run (quiesce's stop and start share the snapshot's run id).
            let new = st["run_id"] != before["run_id"] || st["started"] != before["started"];
            if new && st["result"].is_string() && st["result"] != "running" {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "{stage} did not finish within {RUN:?}: {st:#}\n{}",
                    self.c.journal(&["-n", "150"])
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every mail in the operator's mailbox.
    fn mails(&self) -> Vec<cairn_tests::mta::Message> {
        let data =
            std::fs::read(self.c.root().join(format!("var/mail/{MAIL_USER}"))).unwrap_or_default();
        cairn_tests::mta::parse_mbox(&data)
    }

    /// Wait for the ping `/KIND/TAG/SUFFIX` (`suffix` "" for the success ping).
    fn wait_ping(&self, kind: &str, suffix: &str) {
        let path = if suffix.is_empty() {
            format!("/{kind}/{}", self.tag)
        } else {
            format!("/{kind}/{}/{suffix}", self.tag)
        };
        self.sink.wait_for_path(&path, ARRIVE).unwrap_or_else(|e| {
            panic!(
                "{e}: pings so far {:?}\n{}",
                self.sink
                    .requests()
                    .iter()
                    .map(|r| r.path.clone())
                    .collect::<Vec<_>>(),
                self.c
                    .journal(&["-u", "cairn-heartbeat.service", "-n", "40"])
            )
        });
    }

    /// Where things stand before a case: mails, pings and the clock.
    fn mark(&self) -> Mark {
        Mark {
            mails: self.mails().len(),
            requests: self.sink.requests().len(),
            since: self.now(),
        }
    }

    /// A new mail since `m` whose subject has `needle` and none of `not`.
    fn new_mail(&self, m: &Mark, needle: &str, not: &[&str]) -> cairn_tests::mta::Message {
        let deadline = Instant::now() + ARRIVE;
        loop {
            if let Some(x) = self.mails().into_iter().skip(m.mails).find(|x| {
                let s = x.subject();
                s.contains(needle) && !not.iter().any(|n| s.contains(n))
            }) {
                return x;
            }
            if Instant::now() > deadline {
                let subjects: Vec<String> = self.mails().iter().map(|x| x.subject()).collect();
                panic!(
                    "no new mail {needle:?} (without {not:?}); subjects: {subjects:#?}\n{}",
                    self.c.journal(&["-n", "80"])
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A new ping `/KIND/TAG/SUFFIX` since `m`.
    fn new_ping(&self, m: &Mark, kind: &str, suffix: &str) {
        let path = format!("/{kind}/{}/{suffix}", self.tag);
        let deadline = Instant::now() + ARRIVE;
        while !self
            .sink
            .requests()
            .iter()
            .skip(m.requests)
            .any(|r| r.path == path)
        {
            if Instant::now() > deadline {
                panic!(
                    "no new ping {path}; pings since: {:?}\n{}",
                    self.sink
                        .requests()
                        .iter()
                        .skip(m.requests)
                        .map(|r| r.path.clone())
                        .collect::<Vec<_>>(),
                    self.c.journal(&[
                        "-u",
                        "cairn-heartbeat.service",
                        "-u",
                        "cairn-alert@*",
                        "-n",
                        "60"
                    ])
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// No success ping of the pipeline since `m`.
    fn no_success_ping(&self, m: &Mark) {
        let path = format!("/ping/{}", self.tag);
        let got: Vec<String> = self
            .sink
            .requests()
            .iter()
            .skip(m.requests)
            .map(|r| r.path.clone())
            .collect();
        assert!(
            !got.contains(&path),
            "a success ping after a failure: {got:?}"
        );
    }

    /// A stage that ran and failed with `exit`: its own mail, the `OnFailure=` alert mail,
    /// the heartbeat's `/EXIT` ping, the metrics, and the catalogued journal entry `id`.
    fn expect_stage_failure(&self, m: &Mark, stage: &str, exit: i32, id: &MessageId) {
        let unit = format!("cairn-{stage}.service");
        let own = self.new_mail(m, &format!("{stage} FAILED"), &[".service failed"]);
        assert!(!own.body().trim().is_empty(), "{}", own.subject());
        self.new_mail(m, &format!("{unit} failed"), &[]);
        self.new_ping(m, "ping", &exit.to_string());
        self.wait_metric(&format!(
            "cairn_stage_last_exit_code{{stage=\"{stage}\"}} {exit}"
        ));
        self.no_success_ping(m);
        self.assert_catalogued(id, &m.since);
    }

    /// Success pings of the pipeline so far.
    fn success_pings(&self) -> usize {
        self.sink.to_path(&format!("/ping/{}", self.tag)).len()
    }

    /// The metrics file once it has `line` (`name{labels} value`); panics after a while.
    fn wait_metric(&self, line: &str) -> String {
        let path = self
            .c
            .root()
            .join("var/lib/prometheus/node-exporter/cairn.prom");
        let deadline = Instant::now() + ARRIVE;
        loop {
            let m = std::fs::read_to_string(&path).unwrap_or_default();
            if m.lines().any(|l| l.starts_with(line)) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "no `{line}` in {}: {m}\n{}",
                    path.display(),
                    self.c
                        .journal(&["-u", "cairn-heartbeat.service", "-n", "40"])
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The journal entry with this id since `since` (a `journalctl --since` time), shown
    /// with its catalog text (`-x`): it must exist and explain what to do.
    fn assert_catalogued(&self, id: &MessageId, since: &str) {
        let out = self
            .c
            .journal(&["-x", "--since", since, &format!("MESSAGE_ID={}", id.id)]);
        assert!(
            out.lines()
                .any(|l| !l.starts_with("--") && !l.trim().is_empty()),
            "a {} entry since {since}: {out}",
            id.name
        );
        assert!(
            out.contains(id.summary),
            "journalctl -x shows the catalog text of {} ({}): {out}",
            id.name,
            id.summary
        );
        // ...with its last paragraph, what to do: its first words (before any field
        // journalctl fills in, and before the catalog's line breaks).
        let todo = id.detail.rsplit("\n\n").next().unwrap_or_default();
        let words: Vec<&str> = todo
            .split(['@', '`'])
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .take(4)
            .collect();
        assert!(
            !words.is_empty() && out.contains(&words.join(" ")),
            "journalctl -x says what to do about {} ({words:?}): {out}",
            id.name
        );
    }

    /// The container's clock, for `journalctl --since`.
    fn now(&self) -> String {
        self.c.sh_ok("date '+%Y-%m-%d %H:%M:%S'").trim().to_string()
    }

    fn run_backup_ok(&self) {
        let before = self.status("upload");
        let pings = self.success_pings();
        self.fire("cairn-backup.timer");
        let up = self.wait_finished("upload", &before);
        assert_eq!(up["result"], "success", "{up:#}\n{}", self.journal_all());
        let deadline = Instant::now() + ARRIVE;
        while self.success_pings() <= pings {
            assert!(
                Instant::now() < deadline,
                "no success ping after the upload"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn journal_all(&self) -> String {
        self.c.journal(&[
            "-u",
            "cairn-preflight.service",
            "-u",
            "cairn-snapshot.service",
            "-u",
            "cairn-upload.service",
            "-n",
            "120",
        ])
    }
}

/// What a case starts from.
struct Mark {
    mails: usize,
    requests: usize,
    since: String,
}

/// Install the package (`make deb`, built once for all tests), as an administrator
/// does. Returns the path of `cairn` inside.
fn install(c: &Container) -> String {
    let deb = cairn_tests::package::deb();
    std::fs::create_dir_all(c.root().join("opt/cairn-test")).unwrap();
    std::fs::copy(&deb, c.root().join("opt/cairn-test/cairn.deb")).unwrap();
    c.sh_ok("dpkg -i /opt/cairn-test/cairn.deb");
    "/usr/bin/cairn".to_string()
}

/// A step of `cairn setup --json`: (result, detail).
fn setup_step(v: &Value, name: &str) -> (String, String) {
    v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .map(|s| {
            (
                s["result"].as_str().unwrap_or_default().to_string(),
                s["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_else(|| panic!("no {name} step: {v:#}"))
}

/// The time of an RFC 3339 field of a status file.
fn at(v: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    v[field]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("{field} in {v:#}"))
        .with_timezone(&chrono::Utc)
}

#[test]
fn the_timer_runs_the_whole_chain_by_itself_and_the_drill_passes() {
    if !ready() {
        return;
    }
    let p = Pipeline::new("e2eok", "", "");
    let c = &p.c;
    let pg_before = text(&c.systemctl(&["show", PG_UNIT, "-P", "ActiveEnterTimestampMonotonic"]));
    let since = p.now();
    let up = p.fire_and_wait("cairn-backup.timer", "upload");
    assert_eq!(up["result"], "success", "{up:#}\n{}", p.journal_all());
    let (pre, snap) = (p.status("preflight"), p.status("snapshot"));
    assert_eq!(pre["result"], "success", "{pre:#}");
    assert_eq!(snap["result"], "success", "{snap:#}");
    // In order: preflight before the snapshot, the upload after it.
    assert!(
        at(&pre, "finished") <= at(&snap, "started"),
        "{pre:#}\n{snap:#}"
    );
    assert!(
        at(&snap, "finished") <= at(&up, "started"),
        "{snap:#}\n{up:#}"
    );
    // PostgreSQL was stopped for the snapshot (its data directory has no postmaster.pid
    // in it) and is running again.
    // (As root at a shell: the key comes from the credential store setup wrote.)
    let o = c.exec(&[&p.cairn, "ls", "latest", "/var/lib/postgresql/15/main"]);
    let listing = text(&o);
    assert!(o.status.success(), "{listing}");
    assert!(listing.contains("PG_VERSION"), "{listing}");
    assert!(!listing.contains("postmaster.pid"), "quiesced: {listing}");
    assert_eq!(text(&c.systemctl(&["is-active", PG_UNIT])).trim(), "active");
    let pg_after = text(&c.systemctl(&["show", PG_UNIT, "-P", "ActiveEnterTimestampMonotonic"]));
    assert_ne!(
        pg_before, pg_after,
        "PostgreSQL was stopped and started again"
    );
    // The heartbeat pinged the start and the success; the metrics say so.
    p.wait_ping("ping", "start");
    p.wait_ping("ping", "");
    p.wait_metric("cairn_stage_last_exit_code{stage=\"upload\"} 0");
    p.wait_metric("cairn_pipeline_last_success_timestamp_seconds ");
    // The bucket holds the snapshot: listed through --remote.
    let o = c.exec(&[&p.cairn, "--remote", "snapshots", "--json"]);
    let snaps: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let listed = snaps
        .as_array()
        .or(snaps["snapshots"].as_array())
        .map(Vec::len);
    assert_eq!(listed, Some(1), "{snaps:#}");
    p.assert_catalogued(&msg::STAGE_SUCCEEDED, &since);

    // The weekly drill, fired by its timer, passes and pings.
    let drill = p.fire_and_wait("cairn-drill.timer", "drill");
    assert_eq!(
        drill["result"],
        "success",
        "{drill:#}\n{}",
        c.journal(&["-u", "cairn-drill.service"])
    );
    p.wait_ping("drill", "");
    // And the weekly prune, by its timer (forget, then prune; no status file of its own:
    // the unit's result says how it went).
    let show = |prop: &str| {
        text(&c.systemctl(&["show", "cairn-prune.service", "-P", prop]))
            .trim()
            .to_string()
    };
    let before = show("InactiveEnterTimestampMonotonic");
    p.fire("cairn-prune.timer");
    let deadline = Instant::now() + RUN;
    while show("InactiveEnterTimestampMonotonic") == before || show("ActiveState") != "inactive" {
        assert!(
            Instant::now() < deadline,
            "the prune ran: {}",
            c.journal(&["-u", "cairn-prune.service"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        show("Result"),
        "success",
        "{}",
        c.journal(&["-u", "cairn-prune.service"])
    );
    // Everything is green, as root at a shell sees it (the key and the bucket's
    // credential from the stores setup wrote).
    let o = c.exec(&[&p.cairn, "status", "--json"]);
    let st: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(o.status.code(), Some(0), "{st:#}");
    for s in st["stages"].as_array().unwrap() {
        assert_eq!(s["light"], "green", "{}: {st:#}", s["stage"]);
    }
    for stage in [
        "preflight",
        "quiesce",
        "snapshot",
        "upload",
        "drill",
        "heartbeat",
    ] {
        assert!(
            st["stages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["stage"] == stage),
            "{stage} is shown: {st:#}"
        );
    }
    assert_eq!(st["overall"], "green", "{st:#}");
    // No alert went out on the way.
    let subjects: Vec<String> = p.mails().iter().map(|m| m.subject()).collect();
    assert!(subjects.is_empty(), "no mail for a good run: {subjects:?}");
    c_shutdown(p);
}

fn c_shutdown(p: Pipeline) {
    let Pipeline {
        c, garage, sink, ..
    } = p;
    drop(sink);
    drop(garage);
    c.shutdown().unwrap();
}

/// The backup disk: an impostor mounted in its place, the disk gone (unmounted, its
/// filesystem unreadable), the disk full. Preflight stops the backup each time (exit 2)
/// and the operator hears of it four ways; then the disk is back and a backup succeeds.
#[test]
fn backup_disk_failures_reach_the_operator() {
    if !ready() {
        return;
    }
    let p = Pipeline::new("e2edisk", "", "");
    let c = &p.c;
    let dev = c
        .sh_ok("findmnt -n -o SOURCE /srv/backup")
        .trim()
        .to_string();
    assert!(
        dev.starts_with("/dev/"),
        "the disk is mounted by setup: {dev}"
    );

    // An impostor: another disk (same kind, another UUID) mounted where the backup disk
    // belongs.
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let other = Disk::create_attached(
        dir.path(),
        Fs::Ext4,
        64,
        &disk::unique_label("impostor", Fs::Ext4),
        &disk::random_uuid(),
    )
    .unwrap();
    let inside = c.add_block_device(other.device()).unwrap();
    c.sh_ok(&format!(
        "umount /srv/backup && mount {} /srv/backup",
        inside.display()
    ));
    let m = p.mark();
    let pre = p.fire_and_wait("cairn-backup.timer", "preflight");
    assert_eq!(pre["exit_code"], 2, "{pre:#}");
    p.expect_stage_failure(&m, "preflight", 2, &msg::MOUNT_UNFIT);
    assert!(
        !c.root().join("srv/backup/cairn").exists(),
        "nothing was written to the impostor"
    );
    c.sh_ok("! mountpoint -q /srv/backup || umount /srv/backup");

    // The disk gone: unmounted, and its filesystem unreadable (the ext4 magic number
    // overwritten through the device), so neither the UUID nor a mount can find it.
    c.sh_ok(&format!(
        "printf '\\000\\000' | dd of={dev} bs=1 seek=1080 count=2 conv=notrunc status=none && \
             blockdev --flushbufs {dev}"
    ));
    let m = p.mark();
    let pre = p.fire_and_wait("cairn-backup.timer", "preflight");
    assert_eq!(pre["exit_code"], 2, "{pre:#}");
    p.expect_stage_failure(&m, "preflight", 2, &msg::MOUNT_UNFIT);
    // Back: the magic number restored (0xEF53, little-endian).
    c.sh_ok(&format!(
        "printf '\\123\\357' | dd of={dev} bs=1 seek=1080 count=2 conv=notrunc status=none && \
             blockdev --flushbufs {dev}"
    ));

    // The disk back: preflight mounts it again and the backup runs.
    p.run_backup_ok();
    assert!(c
        .exec(&["mountpoint", "-q", "/srv/backup"])
        .status
        .success());

    // The disk full: less than min_free left.
    c.sh_ok(
        "avail=$(df --output=avail -B1 /srv/backup | tail -n1); \
         fallocate -l $((avail - 8*1024*1024)) /srv/backup/filler",
    );
    let m = p.mark();
    let pre = p.fire_and_wait("cairn-backup.timer", "preflight");
    assert_eq!(pre["exit_code"], 2, "{pre:#}");
    p.expect_stage_failure(&m, "preflight", 2, &msg::MOUNT_UNFIT);
    c.sh_ok("rm /srv/backup/filler");
    p.run_backup_ok();
    drop(other);
    c_shutdown(p);
}

/// The repository key missing, the bucket's credentials revoked, the network to the
/// bucket down during the upload, a quiesced service that does not come back: each
/// reaches the operator at least twice, and the next run after the fix succeeds.
#[test]
fn key_bucket_network_and_service_failures_reach_the_operator() {
    if !ready() {
        return;
    }
    let p = Pipeline::new("e2erem", "", "");
    let c = &p.c;
    p.run_backup_ok();

    // The repository key gone: the unit cannot even start (its credential is missing),
    // so no status file records it; the OnFailure= alert mails it and tells the
    // switch.
    let key = if c.root().join("etc/credstore.encrypted/cairn.key").exists() {
        "/etc/credstore.encrypted/cairn.key"
    } else {
        "/etc/credstore/cairn.key"
    };
    c.sh_ok(&format!("mv {key} {key}.away"));
    let m = p.mark();
    p.fire("cairn-backup.timer");
    let alert = p.new_mail(&m, "cairn-snapshot.service failed", &[]);
    assert!(
        alert.body().contains("cairn.key") || alert.body().contains("credential"),
        "the alert shows why: {}",
        alert.body()
    );
    p.new_ping(&m, "ping", "fail");
    p.no_success_ping(&m);
    p.assert_catalogued(&msg::ALERT_SENT, &m.since);
    c.sh_ok(&format!("mv {key}.away {key}"));
    p.run_backup_ok();

    // The bucket's credentials revoked: the upload fails (exit 3).
    c.sh_ok("echo one > /srv/data/new-1");
    p.garage
        .cli(&[
            "bucket", "deny", "--read", "--write", BUCKET, "--key", &p.key.id,
        ])
        .unwrap();
    let m = p.mark();
    let up = p.fire_and_wait("cairn-backup.timer", "upload");
    assert_eq!(up["exit_code"], 3, "{up:#}");
    p.expect_stage_failure(&m, "upload", 3, &msg::UPLOAD_FAILED);
    p.garage
        .cli(&[
            "bucket", "allow", "--read", "--write", BUCKET, "--key", &p.key.id,
        ])
        .unwrap();
    p.run_backup_ok();

    // The network to the bucket down during the upload (the server stops answering).
    c.sh_ok("echo two > /srv/data/new-2");
    p.garage.pause();
    let m = p.mark();
    let up = p.fire_and_wait("cairn-backup.timer", "upload");
    p.garage.resume();
    assert_eq!(up["exit_code"], 3, "{up:#}");
    p.expect_stage_failure(&m, "upload", 3, &msg::UPLOAD_FAILED);
    p.run_backup_ok();

    // A quiesced service that fails to start again.
    let dropin = c
        .root()
        .join(format!("etc/systemd/system/{PG_UNIT}.d/e2e-broken.conf"));
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "[Service]\nExecStartPre=/bin/false\n").unwrap();
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    let m = p.mark();
    // The stop (quiesce's first run), then the start that fails (its second).
    let stop = p.fire_and_wait("cairn-backup.timer", "quiesce");
    assert_eq!(stop["figures"]["command"], "stop", "{stop:#}");
    let q = p.wait_finished("quiesce", &stop);
    assert_eq!(q["figures"]["command"], "start", "{q:#}");
    assert_eq!(q["result"], "failure", "{q:#}");
    let down = p.new_mail(&m, "DOWN", &[]);
    assert!(down.body().contains(PG_UNIT), "{}", down.body());
    p.new_mail(&m, "cairn-snapshot.service failed", &[]);
    p.new_ping(&m, "ping", &q["exit_code"].to_string());
    p.assert_catalogued(&msg::UNIT_RESTART_FAILED, &m.since);
    std::fs::remove_file(&dropin).unwrap();
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    assert!(c.systemctl(&["start", PG_UNIT]).status.success());
    p.run_backup_ok();
    c_shutdown(p);
}

/// The timer disabled (the staleness alert), the snapshot SIGKILLed in the middle of a
/// run (services back, the next run fine), a corrupted pack found by the drill.
#[test]
fn staleness_a_killed_snapshot_and_a_corrupt_pack_reach_the_operator() {
    if !ready() {
        return;
    }
    let p = Pipeline::new("e2edrl", "max_age = 45s\n", "[drill]\nsource = local\n");
    let c = &p.c;
    p.run_backup_ok();

    // The timer disabled: no backup for longer than max_age. The heartbeat's check (at
    // its start, as after a reboot; else its 15-minute tick) alerts, and the metrics
    // say stale; the switch gets no success ping.
    let m = p.mark();
    assert!(c
        .systemctl(&["disable", "--now", "cairn-backup.timer"])
        .status
        .success());
    std::thread::sleep(Duration::from_secs(50));
    assert!(c
        .systemctl(&["restart", "cairn-heartbeat.service"])
        .status
        .success());
    let stale = p.new_mail(&m, "STALE", &[]);
    assert!(!stale.body().trim().is_empty());
    p.wait_metric("cairn_pipeline_stale 1");
    p.no_success_ping(&m);
    p.assert_catalogued(&msg::BACKUP_STALE, &m.since);
    let o = c.exec(&[&p.cairn, "status"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "cairn status is red: {}",
        text(&o)
    );
    assert!(c
        .systemctl(&["enable", "--now", "cairn-backup.timer"])
        .status
        .success());
    p.run_backup_ok();

    // The snapshot SIGKILLed while it reads (a large sparse file keeps it busy) and
    // PostgreSQL is stopped: ExecStopPost= brings PostgreSQL back, the alert mails it
    // and tells the switch; the next run is fine and says the last one was interrupted.
    c.sh_ok("truncate -s 40G /srv/data/sparse.img");
    let m = p.mark();
    let before = p.status("snapshot");
    p.fire("cairn-backup.timer");
    let deadline = Instant::now() + RUN;
    loop {
        let st = p.status("snapshot");
        let pg = text(&c.systemctl(&["is-active", PG_UNIT]));
        if st["run_id"] != before["run_id"] && st["result"] == "running" && pg.trim() != "active" {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot runs: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(c
        .systemctl(&["kill", "--signal=SIGKILL", "cairn-snapshot.service"])
        .status
        .success());
    c.wait_for_unit_state(PG_UNIT, "active", ARRIVE).unwrap();
    let alert = p.new_mail(&m, "cairn-snapshot.service failed", &[]);
    assert!(alert.body().contains("signal"), "{}", alert.body());
    p.new_ping(&m, "ping", "fail");
    p.no_success_ping(&m);
    c.sh_ok("rm /srv/data/sparse.img");
    p.run_backup_ok();
    p.assert_catalogued(&msg::STAGE_INTERRUPTED, &m.since);

    // A pack damaged on the backup disk: the drill restores, finds the mismatch (exit 4).
    // The largest pack, one byte in each tenth of it: the first snapshot's pack, which
    // holds the incompressible /srv/data/random.bin every later snapshot shares (the
    // killed run may have left a pack no snapshot refers to, whose damage no restore
    // could see).
    c.sh_ok(
        "f=$(find /srv/backup/cairn/data -type f -printf '%s %p\\n' | sort -rn | head -n1 | \
         cut -d' ' -f2); test -n \"$f\" && \
         python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,\"rb\").read()); \
         [b.__setitem__(i, b[i]^1) for i in range(len(b)//20, len(b), len(b)//10)]; \
         open(p,\"wb\").write(b)' \"$f\"",
    );
    let m = p.mark();
    let drill = p.fire_and_wait("cairn-drill.timer", "drill");
    assert_eq!(drill["exit_code"], 4, "{drill:#}");
    let own = p.new_mail(&m, "drill UNTRUSTED", &[]);
    assert!(!own.body().trim().is_empty());
    p.new_mail(&m, "cairn-drill.service failed", &[]);
    p.new_ping(&m, "drill", "4");
    p.wait_metric("cairn_drill_passed 0");
    p.assert_catalogued(&msg::DRILL_MISMATCH, &m.since);
    c_shutdown(p);
}
