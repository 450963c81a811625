//! Crash and fault safety: kill -9 at random moments of a backup, and a repository disk
//! that fills up. Afterwards `check` passes, every earlier snapshot restores, and the
//! next run succeeds and reuses what was already written.

mod common;

use std::process::Command;
use std::time::Duration;

use cairn_tests::{compare_trees, format_differences, CompareOpts};
use common::{code, ok, stderr, text, Env};

fn fill(dir: &std::path::Path, files: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(seed);
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i:03}")), rng.bytes(size)).unwrap();
    }
}

fn restore_matches(env: &Env, snap: &str, expected: &std::path::Path, src: &std::path::Path) {
    let t = env.path(&format!("r-{}", &snap[..snap.len().min(8)]));
    let _ = std::fs::remove_dir_all(&t);
    ok(&env.cairn(&["restore", snap, "--target", t.to_str().unwrap()]));
    let diffs = compare_trees(
        expected,
        &t.join(src.strip_prefix("/").unwrap()),
        &CompareOpts {
            ignore_root_metadata: true,
            ..CompareOpts::for_current_user()
        },
    );
    assert!(
        diffs.is_empty(),
        "snapshot {snap} does not restore:\n{}",
        format_differences(&diffs)
    );
    std::fs::remove_dir_all(&t).unwrap();
}

#[test]
fn kill9_during_backup_never_breaks_the_repository() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    fill(&src.join("old"), 8, 256 << 10, 1);
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let first = env.snapshot_ids()[0].clone();
    let copy = d.path().join("copy");
    assert!(Command::new("cp")
        .args(["-a"])
        .arg(&src)
        .arg(&copy)
        .status()
        .unwrap()
        .success());

    // 48 MiB of new, incompressible data; small packs so kills land between pack writes.
    fill(&src.join("new"), 48, 1 << 20, 2);
    let mut rng = cairn_tests::fixture::Prng::new(99);
    let packs = || walk_count(&env.repo.join("data"));
    let mut mid_write = 0;
    for t in 0..12u64 {
        let before = packs();
        let mut child = env
            .cmd("cairn-snapshot")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Every third kill lands early (opening, locking, recovering); the others once a
        // few new packs are on disk, i.e. in the middle of writing data.
        let target = before + 1 + (rng.next_u64() % 5) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        if t % 3 == 0 {
            std::thread::sleep(Duration::from_millis(10 + rng.next_u64() % 60));
        } else {
            while packs() < target
                && child.try_wait().unwrap().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if !finished && t % 3 != 0 {
            mid_write += 1;
        }
        let c = env.cairn(&["check"]);
        assert_eq!(code(&c), 0, "after kill #{t}, check fails:\n{}", text(&c));
    }
    assert!(mid_write >= 6, "only {mid_write} kills landed mid-write");
    assert_eq!(
        env.snapshot_ids().len(),
        1,
        "no killed run may have recorded a snapshot"
    );
    ok(&env.cairn(&["check", "--read-data"]));
    restore_matches(&env, &first, &copy, &src);

    // The next run completes and reuses what the killed runs had written.
    let o = env.snapshot();
    ok(&o);
    let st = env.status("snapshot");
    let added = st["figures"]["figures"]["bytes_added"].as_u64().unwrap();
    eprintln!("final run added {added} bytes of 48 MiB new");
    assert!(
        added < 40 << 20,
        "the killed runs' packs must be reused, but {added} bytes were added again\n{}",
        text(&o)
    );
    restore_matches(&env, "latest", &src, &src);
    ok(&env.cairn(&["check", "--read-data"]));
}

fn walk_count(dir: &std::path::Path) -> usize {
    common::listing(dir)
        .iter()
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
}

/// A loop-mounted ext4 file system, unmounted and detached on drop.
struct Loop {
    mnt: std::path::PathBuf,
}

impl Loop {
    fn new(dir: &std::path::Path, mib: u64) -> Option<Loop> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let img = dir.join("disk.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mk = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            mk.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&mk.stderr)
        );
        let m = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        if !m.status.success() {
            eprintln!(
                "SKIPPED: cannot loop-mount here: {}",
                String::from_utf8_lossy(&m.stderr)
            );
            return None;
        }
        Some(Loop { mnt })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

#[test]
fn a_full_repository_disk_fails_cleanly_and_recovers() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let Some(disk) = Loop::new(d.path(), 96) else {
        eprintln!("SKIPPED: needs root and loop devices");
        return;
    };
    let src = d.path().join("src");
    fill(&src.join("a"), 4, 1 << 20, 5);
    // The repository lives on the small disk; a filler takes most of the space.
    let env = Env::new(&[&src]);
    let repo = disk.mnt.join("repo");
    let conf = std::fs::read_to_string(&env.conf).unwrap().replace(
        &format!("path = {}\n", env.repo.display()),
        &format!("path = {}\n", repo.display()),
    );
    std::fs::write(&env.conf, conf).unwrap();
    ok(&env.cairn(&["init"]));
    ok(&env.snapshot());
    let first = env.snapshot_ids()[0].clone();
    let copy = d.path().join("copy");
    assert!(Command::new("cp")
        .args(["-a"])
        .arg(&src)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let filler = disk.mnt.join("filler");
    let free = rustix::fs::statvfs(&disk.mnt)
        .map(|s| s.f_bavail * s.f_frsize)
        .unwrap();
    std::fs::File::create(&filler).unwrap().set_len(0).unwrap();
    std::fs::write(&filler, vec![1u8; (free - (24 << 20)) as usize]).unwrap();

    fill(&src.join("b"), 40, 1 << 20, 6);
    let o = env.snapshot();
    assert_eq!(
        code(&o),
        3,
        "a full disk is 'the operation failed':\n{}",
        text(&o)
    );
    let e = stderr(&o);
    assert!(
        e.contains("No space left on device") && e.contains("disk holding the repository is full"),
        "{e}"
    );
    assert_eq!(env.status("snapshot")["result"], "failure");
    assert_eq!(
        env.snapshot_ids().len(),
        1,
        "no snapshot may be recorded by a failed run"
    );
    let c = env.cairn(&["check", "--read-data"]);
    assert_eq!(code(&c), 0, "{}", text(&c));
    restore_matches(&env, &first, &copy, &src);

    // Space freed: the next run is fine, and the repository checks out.
    std::fs::remove_file(&filler).unwrap();
    ok(&env.snapshot());
    ok(&env.cairn(&["check", "--read-data"]));
    restore_matches(&env, "latest", &src, &src);
}
