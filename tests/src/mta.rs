//! A real local mail system for the alert tests: mail that cairn hands to
//! `/usr/sbin/sendmail` (the `lettre` crate's sendmail transport runs
//! `/usr/sbin/sendmail -i -f FROM -- TO…` with a CRLF message on stdin; a
//! plain `sendmail -t` works too) is delivered by Debian's exim4 into the
//! mbox `/var/mail/cairn-mailtest`, where a test finds it.
//!
//! Design choice: no fake `sendmail` on `PATH` and no SMTP sink, but the
//! MTA an administrator actually has: exim4-daemon-light configured by
//! debconf as "local delivery only; not on a network". No daemon is needed
//! (checked on Debian 12): `sendmail -t` receives the message and forks a
//! delivery process at once, which appends to the mbox within milliseconds.
//! Nothing listens or goes out on the network. Delivery is asynchronous, so
//! tests poll the mbox with [`Mailbox::wait_for`].
//!
//! One mailbox is shared by every test, in parallel processes: a dedicated
//! local user, [`USER`] (address [`ADDRESS`]), created on first use by
//! [`Mta::mailbox`] under a lock file, so racing processes create it once.
//! **A test keeps its messages apart from the others' by a unique token**
//! ([`token`]) that it puts in what cairn mails — the host name or job
//! name in the subject, a path or config value that the alert quotes — and
//! then looks only for messages containing that token: [`Mailbox::wait_for`],
//! [`Mailbox::count`], [`Mailbox::expect_none`], and [`Mailbox::remove`] to
//! tidy up. Never clear the whole mailbox: other tests are reading it.
//!
//! Messages are parsed from the mbox ("From " separator lines; exim escapes
//! body lines starting with "From " as ">From ", undone here), headers are
//! unfolded and RFC 2047 encoded-words decoded, and bodies are decoded from
//! quoted-printable or base64 (whatever lettre chose) and from multipart
//! into text, so a test matches on what a person would read.
//!
//! Locking: the mbox is read without a lock and, once a match is seen, read
//! again under a shared `fcntl` lock (an open-file-description lock, which
//! conflicts with exim's own `fcntl` lock), so a message is never returned
//! half-written. [`Mailbox::remove`] rewrites the file in place under an
//! exclusive lock. An exim delivery that meets our lock waits and retries
//! (every 3 s by default), so locks are held for a single read or rewrite.
//!
//! Installing it in CI (Debian 12), before the tests:
//!
//! ```sh
//! export DEBIAN_FRONTEND=noninteractive
//! debconf-set-selections <<'EOF'
//! exim4-config exim4/dc_eximconfig_configtype select local delivery only; not on a network
//! exim4-config exim4/dc_local_interfaces string 127.0.0.1 ; ::1
//! exim4-config exim4/dc_other_hostnames string
//! exim4-config exim4/dc_relay_domains string
//! exim4-config exim4/dc_relay_nets string
//! exim4-config exim4/dc_minimaldns boolean false
//! exim4-config exim4/dc_localdelivery select mbox format in /var/mail/
//! exim4-config exim4/use_split_config boolean false
//! exim4-config exim4/dc_postmaster string root
//! EOF
//! apt-get install -y -qq --no-install-recommends exim4-daemon-light
//! ```
//!
//! (The package's postinst may try to start the daemon; whether
//! `policy-rc.d` lets it or not makes no difference to these tests.)
//!
//! When a message does not arrive, [`Mailbox::wait_for`]'s error carries
//! exim's queue and its log lines for [`ADDRESS`]; a delivery that was
//! deferred (and so sits in the queue, since no daemon retries it) is
//! forced once with `exim4 -Rff ADDRESS` before giving up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;

/// What cairn runs (lettre's `SendmailTransport::new()` default).
pub const SENDMAIL: &str = "/usr/sbin/sendmail";
/// exim itself.
pub const EXIM: &str = "/usr/sbin/exim4";
/// The local user whose mailbox the tests share.
pub const USER: &str = "cairn-mailtest";
/// Its address. `localhost` is always a local domain in Debian's exim
/// config, whatever the host name and mailname.
pub const ADDRESS: &str = "cairn-mailtest@localhost";
/// Its mbox.
pub const MBOX: &str = "/var/mail/cairn-mailtest";

const USER_LOCK: &str = "/run/lock/cairn-tests-mailuser.lock";
const POLL: Duration = Duration::from_millis(50);

/// Entry points: is the MTA there, and the test mailbox.
pub struct Mta;

impl Mta {
    /// Whether the local MTA is installed and usable: root (to create the
    /// user and read its mbox), exim4, and `/usr/sbin/sendmail`. `Err`
    /// names what is missing, for a test to print `SKIPPED: …` and return.
    pub fn available() -> std::result::Result<(), String> {
        let mut missing = Vec::new();
        if !rustix::process::geteuid().is_root() {
            missing.push("root".to_string());
        }
        if !Path::new(EXIM).is_file() {
            missing.push(format!(
                "{EXIM} (Debian package exim4-daemon-light, configured \
                 'local delivery only'; see cairn_tests::mta's doc)"
            ));
        }
        if !Path::new(SENDMAIL).exists() {
            missing.push(format!("{SENDMAIL} (from exim4-daemon-light)"));
        }
        if !Path::new("/usr/sbin/useradd").is_file() {
            missing.push("useradd (Debian package passwd)".to_string());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("mail tests need {}", missing.join(", ")))
        }
    }

    /// The shared test mailbox; creates [`USER`] on first use and checks that
    /// exim routes [`ADDRESS`] to a local mailbox.
    pub fn mailbox() -> Result<Mailbox> {
        static READY: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        READY
            .get_or_init(|| prepare().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)?;
        Ok(Mailbox {
            path: PathBuf::from(MBOX),
        })
    }
}

/// A unique token (`TAG-<32 hex digits>`) for a test to put in what it has
/// cairn mail, and to look for.
pub fn token(tag: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read /proc/sys/kernel/random/uuid");
    format!("{tag}-{}", uuid.trim().replace('-', ""))
}

/// Hands a complete message (headers, blank line, body) to
/// `/usr/sbin/sendmail -t -i`, as cairn does; recipients come from its
/// `To:`/`Cc:` headers. Returns once exim has accepted it.
pub fn sendmail(message: &[u8]) -> Result<()> {
    let mut cmd = Command::new(SENDMAIL);
    cmd.args(["-t", "-i"]);
    pipe_to(cmd, message)
}

/// Hands `message` to `/usr/sbin/sendmail -i -f FROM -- TO…`, exactly as
/// lettre's sendmail transport does (the envelope from the arguments, not
/// the headers). Returns once exim has accepted it.
pub fn sendmail_envelope(from: &str, to: &[&str], message: &[u8]) -> Result<()> {
    let mut cmd = Command::new(SENDMAIL);
    cmd.args(["-i", "-f", from, "--"]).args(to);
    pipe_to(cmd, message)
}

fn pipe_to(mut cmd: Command, message: &[u8]) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(message)
        .context("write to sendmail")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn prepare() -> Result<()> {
    if let Err(e) = Mta::available() {
        bail!("{e}");
    }
    ensure_user()?;
    let out = Command::new(EXIM)
        .args(["-bt", ADDRESS])
        .output()
        .with_context(|| format!("run {EXIM} -bt"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("transport = mail_spool") {
        bail!(
            "exim does not deliver {ADDRESS} into {MBOX} (expected Debian's \
             'local delivery only' config with mbox delivery): {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates [`USER`] unless it exists, under a lock file so that parallel
/// test processes do not race `useradd`. Its home is `/`: exim changes to
/// the recipient's home directory before delivering, so it must exist.
fn ensure_user() -> Result<()> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(USER_LOCK)
        .with_context(|| format!("open {USER_LOCK}"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("lock {USER_LOCK}"))?;
    match nix::unistd::User::from_name(USER).context("look up the mail test user")? {
        Some(u) if u.dir.is_dir() => Ok(()),
        Some(_) => run_ok(Command::new("usermod").args(["--home", "/", USER])),
        None => run_ok(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "cairn tests mailbox",
            USER,
        ])),
    }
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The shared test mailbox ([`MBOX`]). Look only for messages carrying
/// your own [`token`].
#[derive(Debug, Clone)]
pub struct Mailbox {
    path: PathBuf,
}

impl Mailbox {
    /// The address to mail ([`ADDRESS`]), e.g. for `[alert] mail_to`.
    pub fn address(&self) -> &str {
        ADDRESS
    }

    pub fn user(&self) -> &str {
        USER
    }

    /// The mbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message now in the mbox, oldest first (read under a shared
    /// lock: none half-written).
    pub fn messages(&self) -> Result<Vec<Message>> {
        Ok(parse_mbox(&self.read(true)?))
    }

    /// The messages containing `needle` (see [`Message::contains`]).
    pub fn find(&self, needle: &str) -> Result<Vec<Message>> {
        Ok(self
            .messages()?
            .into_iter()
            .filter(|m| m.contains(needle))
            .collect())
    }

    /// How many messages contain `needle`.
    pub fn count(&self, needle: &str) -> Result<usize> {
        Ok(self.find(needle)?.len())
    }

    /// Waits until a message containing `needle` is delivered and returns
    /// the first such message.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<Message> {
        self.wait_for_match(|m| m.contains(needle), timeout)
            .with_context(|| format!("no message containing {needle:?}"))
    }

    /// Waits until a message satisfying `pred` is delivered and returns the
    /// first such message. The error, on timeout, shows exim's queue and log
    /// lines for [`ADDRESS`].
    pub fn wait_for_match(
        &self,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Result<Message> {
        Ok(self
            .wait_for_n(&pred, 1, timeout)?
            .into_iter()
            .next()
            .expect("one"))
    }

    /// Waits until at least `n` messages contain `needle`; returns all that
    /// do (possibly more than `n`).
    pub fn wait_for_count(
        &self,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>> {
        self.wait_for_n(&|m: &Message| m.contains(needle), n, timeout)
            .with_context(|| format!("fewer than {n} messages containing {needle:?}"))
    }

    fn wait_for_n(
        &self,
        pred: &dyn Fn(&Message) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>> {
        let start = Instant::now();
        let mut kicked = false;
        loop {
            // Cheap unlocked look; on a hit, read again under the lock.
            let seen = parse_mbox(&self.read(false)?)
                .iter()
                .filter(|m| pred(m))
                .count();
            if seen >= n {
                let found: Vec<Message> =
                    self.messages()?.into_iter().filter(|m| pred(m)).collect();
                if found.len() >= n {
                    return Ok(found);
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                let total = parse_mbox(&self.read(false)?).len();
                bail!(
                    "after {:.1} s ({total} messages in {}, {seen} matching)\n{}",
                    elapsed.as_secs_f64(),
                    self.path.display(),
                    diagnostics()
                );
            }
            if !kicked && elapsed >= timeout / 2 && queued_for_us() {
                // A deferred delivery waits for a queue runner that does not
                // run here: force it once.
                kicked = true;
                let _ = Command::new(EXIM).args(["-Rff", ADDRESS]).output();
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits `grace` and checks that no message containing `needle` arrived
    /// by then (`Err` with the message if one did).
    pub fn expect_none(&self, needle: &str, grace: Duration) -> Result<()> {
        std::thread::sleep(grace);
        if let Some(m) = self.find(needle)?.into_iter().next() {
            bail!(
                "a message containing {needle:?} was delivered:\n{}",
                String::from_utf8_lossy(&m.raw)
            );
        }
        Ok(())
    }

    /// Deletes the messages containing `needle` from the mbox (rewriting it
    /// in place under an exclusive lock) and returns how many.
    pub fn remove(&self, needle: &str) -> Result<usize> {
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("open {}", self.path.display())),
        };
        ofd_lock(&f, libc::F_WRLCK)?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        let mut kept = Vec::with_capacity(data.len());
        let mut removed = 0;
        for span in split_mbox(&data) {
            if parse_message(span).contains(needle) {
                removed += 1;
            } else {
                kept.extend_from_slice(span);
            }
        }
        if removed > 0 {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&kept)?;
            f.set_len(kept.len() as u64)?;
            f.sync_all()?;
        }
        Ok(removed)
    }

    fn read(&self, locked: bool) -> Result<Vec<u8>> {
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("open {}", self.path.display())),
        };
        if locked {
            ofd_lock(&f, libc::F_RDLCK)?;
        }
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .with_context(|| format!("read {}", self.path.display()))?;
        Ok(data)
    }
}

/// Whole-file open-file-description lock (released when `f` is closed).
fn ofd_lock(f: &File, kind: libc::c_int) -> Result<()> {
    let fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        // SAFETY: a valid fd and a fully initialised struct flock.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("lock the mbox");
        }
    }
}

fn queued_for_us() -> bool {
    Command::new(EXIM)
        .arg("-bp")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(ADDRESS))
}

/// exim's queue and its recent log lines about [`ADDRESS`], for errors.
pub fn diagnostics() -> String {
    let mut s = String::new();
    match Command::new(EXIM).arg("-bp").output() {
        Ok(o) => {
            let q = String::from_utf8_lossy(&o.stdout);
            let q = q.trim();
            if q.is_empty() {
                s.push_str("exim queue: empty\n");
            } else {
                s.push_str("exim queue (exim4 -bp):\n");
                s.push_str(&tail_chars(q, 3000));
                s.push('\n');
            }
        }
        Err(e) => s.push_str(&format!("exim4 -bp: {e}\n")),
    }
    for log in ["/var/log/exim4/mainlog", "/var/log/exim4/paniclog"] {
        if let Ok(text) = std::fs::read_to_string(log) {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| log.ends_with("paniclog") || l.contains(USER))
                .collect();
            if !lines.is_empty() {
                s.push_str(&format!("{log} (last lines about {USER}):\n"));
                for l in &lines[lines.len().saturating_sub(12)..] {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
    }
    s
}

fn tail_chars(s: &str, n: usize) -> String {
    let skip = s.chars().count().saturating_sub(n);
    s.chars().skip(skip).collect()
}

/// A delivered message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The envelope sender from the mbox "From " line.
    pub envelope_from: String,
    /// The message as delivered (the "From " line removed, ">From "
    /// unescaped, line ends LF).
    pub raw: Vec<u8>,
    headers: Vec<(String, String)>,
    body: String,
}

impl Message {
    /// All headers in order, names as written, values unfolded but not
    /// decoded.
    pub fn raw_headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header `name` (case-insensitive), RFC 2047 decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(v))
    }

    /// Every header `name`, decoded, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(v))
            .collect()
    }

    /// The decoded subject ("" if none).
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The decoded text: the body, or the text parts of a multipart body
    /// joined by newlines (of a `multipart/alternative`, only the
    /// `text/plain` one); transfer encodings undone, charset decoded.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Whether `needle` occurs in any decoded header value or in the
    /// decoded body.
    pub fn contains(&self, needle: &str) -> bool {
        self.body.contains(needle)
            || self
                .headers
                .iter()
                .any(|(_, v)| v.contains(needle) || decode_words(v).contains(needle))
    }
}

/// Splits an mbox into messages and parses each.
pub fn parse_mbox(data: &[u8]) -> Vec<Message> {
    split_mbox(data).into_iter().map(parse_message).collect()
}

/// The byte spans of the messages, each starting with its "From " line.
fn split_mbox(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in data.iter().enumerate() {
        if at_line_start && data[i..].starts_with(b"From ") {
            starts.push(i);
        }
        at_line_start = b == b'\n';
    }
    let mut spans = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(data.len());
        spans.push(&data[s..e]);
    }
    spans
}

/// One mbox span ("From " line first) into a [`Message`].
fn parse_message(span: &[u8]) -> Message {
    let text = crlf_to_lf(span);
    let (from_line, rest) = match text.iter().position(|&b| b == b'\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (&text[..], &[][..]),
    };
    let envelope_from = String::from_utf8_lossy(from_line)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    // exim's message_suffix is one "\n": drop that blank line.
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let mut raw = Vec::with_capacity(rest.len());
    for line in rest.split_inclusive(|&b| b == b'\n') {
        raw.extend_from_slice(
            line.strip_prefix(b">")
                .filter(|l| l.starts_with(b"From "))
                .unwrap_or(line),
        );
    }
    let (headers, body) = split_entity(&raw);
    let body = entity_text(&headers, body);
    Message {
        envelope_from,
        raw,
        headers,
        body,
    }
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Headers (unfolded) and body of a MIME entity with LF line ends.
fn split_entity(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i);
        let line = &data[pos..end];
        pos = (end + 1).min(data.len());
        if line.is_empty() {
            return (headers, &data[pos..]);
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    (headers, &[])
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `type/subtype` (lower case) and a parameter lookup of a Content-Type.
fn content_type(headers: &[(String, String)]) -> (String, Vec<(String, String)>) {
    let Some(v) = find_header(headers, "Content-Type") else {
        return ("text/plain".to_string(), Vec::new());
    };
    let mut it = v.split(';');
    let mime = it.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = it
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    (mime, params)
}

/// The readable text of an entity: decoded text, or its text parts.
fn entity_text(headers: &[(String, String)], body: &[u8]) -> String {
    let (mime, params) = content_type(headers);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if mime.starts_with("multipart/") {
        if let Some(boundary) = param("boundary") {
            let parts: Vec<_> = multipart_parts(body, boundary)
                .into_iter()
                .map(split_entity)
                .collect();
            if mime == "multipart/alternative" {
                // One content, several renderings: the plain one is what a
                // person reads in a terminal.
                let pick = parts
                    .iter()
                    .find(|(h, _)| content_type(h).0 == "text/plain")
                    .or(parts.last());
                return pick.map_or_else(String::new, |(h, b)| entity_text(h, b));
            }
            return parts
                .iter()
                .map(|(h, b)| entity_text(h, b))
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    if mime == "message/rfc822" {
        let (h, b) = split_entity(body);
        return entity_text(&h, b);
    }
    if !(mime.starts_with("text/") || mime.is_empty()) {
        return String::new();
    }
    let cte = find_header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match cte.as_str() {
        "base64" => decode_base64_lenient(body),
        "quoted-printable" => decode_qp(body, false),
        _ => body.to_vec(),
    };
    decode_charset(&bytes, param("charset").unwrap_or("utf-8"))
}

/// The bodies of the parts between `--boundary` lines.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let line = &body[pos..end];
        let next = (end + 1).min(body.len());
        if line.starts_with(delim.as_bytes()) {
            let tail = &line[delim.len()..];
            if let Some(s) = start {
                // The line break before a delimiter belongs to the delimiter.
                parts.push(&body[s..pos.saturating_sub(1).max(s)]);
            }
            if tail.starts_with(b"--") {
                return parts;
            }
            start = Some(next);
        }
        pos = next;
    }
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

fn decode_base64_lenient(data: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_ascii_end())
        })
        .unwrap_or_else(|_| data.to_vec())
}

/// Quoted-printable (RFC 2045); `underscore_space` for RFC 2047 Q words.
fn decode_qp(data: &[u8], underscore_space: bool) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'=' if data.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' => match (
                data.get(i + 1).copied().and_then(hex),
                data.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b'_' if underscore_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match charset.to_ascii_lowercase().as_str() {
        "iso-8859-1" | "latin1" | "iso8859-1" | "windows-1252" => {
            bytes.iter().map(|&b| b as char).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Decodes RFC 2047 encoded-words (`=?utf-8?B?…?=`, `=?utf-8?Q?…?=`) in a
/// header value; whitespace between two encoded-words is dropped.
pub fn decode_words(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    let mut pending_ws = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, len)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&pending_ws);
            }
            pending_ws.clear();
            out.push_str(&decoded);
            rest = &rest[len..];
            last_was_word = true;
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        if c == ' ' || c == '\t' {
            pending_ws.push(c);
        } else {
            out.push_str(&pending_ws);
            pending_ws.clear();
            out.push(c);
            last_was_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_ws);
    out
}

/// An encoded-word at the start of `s`: its text and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    let enc = body[q1 + 1..].chars().next()?;
    if body.as_bytes().get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let end = body[text_start..].find("?=")? + text_start;
    let text = &body[text_start..end];
    let charset = charset.split('*').next().unwrap_or(charset);
    let bytes = match enc.to_ascii_uppercase() {
        'B' => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()?,
        'Q' => decode_qp(text.as_bytes(), true),
        _ => return None,
    };
    Some((decode_charset(&bytes, charset), 2 + end + 2))
}
