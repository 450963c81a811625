//! The journal message ids of every event an operator may filter or alert on.
//!
//! This is the one table of ids in cairn: the journal catalog (`catalog/cairn.catalog`,
//! installed as `/usr/lib/systemd/catalog/cairn.catalog`) is generated from [`ALL`] by
//! [`catalog`], and `journalctl MESSAGE_ID=…` filters, alert rules and the man pages refer
//! to these values. An id is a fixed random 128-bit number written as 32 lowercase hex
//! digits, as systemd's catalog expects; once released an id never changes meaning. Add
//! new events here (and so to [`ALL`]) rather than inventing ids elsewhere, then regenerate
//! the catalog file: `CAIRN_UPDATE_CATALOG=1 cargo nextest run -p cairn-tests --test catalog`.
//!
//! The texts are the catalog's: `detail` may name a journal field of the entry as
//! `@FIELD@`, which `journalctl -x` replaces by the entry's value (by the field's name
//! when the entry lacks it or the value is longer than 256 bytes), as systemd's own
//! catalog does.

/// A journal `MESSAGE_ID` with the text the catalog shows for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Rust-side name, as used in `cairn::stage::msg::NAME`.
    pub name: &'static str,
    /// 32 lowercase hex digits: a fixed random 128-bit id.
    pub id: &'static str,
    /// One line: the catalog entry's subject.
    pub summary: &'static str,
    /// The catalog body, paragraphs separated by a blank line: what happened, then what
    /// the operator should do (or that nothing needs doing). `@FIELD@` is the value of the
    /// entry's journal field FIELD, see the module's documentation.
    pub detail: &'static str,
    /// The man pages that document the event besides cairn(7), as `cairn-snapshot(8)`:
    /// the catalog's `Documentation:` lines.
    pub pages: &'static [&'static str],
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

/// The entry with this Rust-side name (e.g. `"STAGE_FAILED"`).
pub fn find(name: &str) -> Option<&'static MessageId> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// The entry with this id (32 hex digits, any case).
pub fn by_id(id: &str) -> Option<&'static MessageId> {
    ALL.iter().copied().find(|m| m.id.eq_ignore_ascii_case(id))
}

/// The width the catalog's body text is filled to.
const CATALOG_WIDTH: usize = 72;

/// The journal catalog of every entry of [`ALL`], in systemd's catalog format (see
/// `journalctl --update-catalog`): a comment header, then per entry a `-- ID` line, the
/// `Subject:`, `Defined-By: cairn` and `Documentation:` header lines (the entry's
/// [`MessageId::pages`], then cairn(7)), a blank line and the body, filled to 72 columns.
/// There is no `Support:` line: cairn has no support address of its own. The committed
/// `catalog/cairn.catalog` is exactly this text (a test says so).
pub fn catalog() -> String {
    let mut out = String::from(
        "# SPDX-License-Identifier: GPL-3.0-or-later\n\
         #\n\
         # The journal message catalog of cairn, installed as\n\
         # /usr/lib/systemd/catalog/cairn.catalog (then run `journalctl --update-catalog`).\n\
         # `journalctl -x` shows an entry's text below each message with its MESSAGE_ID,\n\
         # @FIELD@ replaced by the message's field; `journalctl --list-catalog` lists them.\n\
         #\n\
         # Generated from core/src/stage/msg.rs: do not edit. Regenerate it with\n\
         #   CAIRN_UPDATE_CATALOG=1 cargo nextest run -p cairn-tests --test catalog\n",
    );
    for m in ALL {
        out.push_str(&format!(
            "\n-- {}\nSubject: {}\nDefined-By: cairn\n",
            m.id, m.summary
        ));
        for page in m.pages.iter().chain(std::iter::once(&"cairn(7)")) {
            out.push_str(&format!("Documentation: man:{page}\n"));
        }
        for paragraph in m.detail.split("\n\n") {
            out.push('\n');
            out.push_str(&fill(paragraph, CATALOG_WIDTH));
        }
    }
    out
}

/// `text` filled to `width` columns, each line ending in a newline. A span in backticks
/// (a command) is kept on one line where it fits alone; a word longer than the width
/// stands alone on its line.
fn fill(text: &str, width: usize) -> String {
    // Words, with the words of a backticked span joined into one.
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for w in text.split_whitespace() {
        if open {
            let last = words.last_mut().expect("an open span has a first word");
            last.push(' ');
            last.push_str(w);
        } else {
            words.push(w.to_string());
        }
        if w.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    let mut out = String::new();
    let mut line = String::new();
    for w in words {
        let pieces: Vec<String> = if w.chars().count() > width && w.contains(' ') {
            // A span longer than a line: break it after all.
            w.split(' ').map(str::to_string).collect()
        } else {
            vec![w]
        };
        for p in pieces {
            if !line.is_empty() && line.chars().count() + 1 + p.chars().count() > width {
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&p);
        }
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

macro_rules! message_ids {
    ($(
        $(#[$doc:meta])*
        $name:ident = $id:literal, [$($page:literal),*], $summary:literal,
            [$first:literal $(, $para:literal)* $(,)?];
    )*) => {
        $(
            $(#[$doc])*
            pub const $name: MessageId = MessageId {
                name: stringify!($name),
                id: $id,
                summary: $summary,
                detail: concat!($first $(, "\n\n", $para)*),
                pages: &[$($page),*],
            };
        )*
        /// Every message id, in catalog order.
        pub const ALL: &[&MessageId] = &[$(&$name),*];
    };
}

message_ids! {
    // --- every stage -------------------------------------------------------------------
    /// A stage began a run (CAIRN_STAGE, CAIRN_RUN).
    STAGE_STARTED = "6448c4c8e0d14c1ed34ee972f850b319", [],
        "A cairn stage started",
        ["The cairn stage @CAIRN_STAGE@ (cairn @CAIRN_VERSION@) started the run @CAIRN_RUN@ \
          and recorded it as running in its status file, \
          /var/lib/cairn/status/@CAIRN_STAGE@.json.",
         "No action is needed. Every message of this run carries the same CAIRN_RUN: \
          `journalctl CAIRN_RUN=@CAIRN_RUN@` shows them all."];
    /// A stage completed everything it had to do.
    STAGE_SUCCEEDED = "e76b7565cbca374f8c9acc668f7e649b", [],
        "A cairn stage succeeded",
        ["The cairn stage @CAIRN_STAGE@ completed the run @CAIRN_RUN@, with exit status 0. \
          Its status file, /var/lib/cairn/status/@CAIRN_STAGE@.json, holds the summary and \
          the figures; `cairn status` shows them beside the other stages.",
         "No action is needed."];
    /// A stage recorded its work but part of it failed (exit code 3).
    STAGE_PARTIAL = "e29edb72e2b26e3ec80e9ba1fe1a8afa", [],
        "A cairn stage partially failed",
        ["The cairn stage @CAIRN_STAGE@ recorded its work in the run @CAIRN_RUN@, but part \
          of it failed: for cairn-snapshot, some files or database dumps could not be read \
          and are not in this snapshot, which is marked incomplete. The stage exits with \
          status 3. The error: @CAIRN_ERROR@",
         "Find what is missing with `journalctl -p warning CAIRN_RUN=@CAIRN_RUN@` (the \
          FILE_UNREADABLE and DATABASE_DUMP_FAILED messages name each path), fix the cause \
          (permissions, a database server that is down) or exclude in [sources] what should \
          not be backed up, then run the stage again or wait for its timer."];
    /// A stage failed (any non-zero exit code other than a partial run).
    STAGE_FAILED = "f3f74269aaeb7c85a65cb830e4acd6a8", [],
        "A cairn stage failed",
        ["The cairn stage @CAIRN_STAGE@ did not complete the run @CAIRN_RUN@. The error: \
          @CAIRN_ERROR@",
         "Its exit status, @CAIRN_EXIT_CODE@, says what kind of failure it was: 1 usage or \
          configuration error; 2 environment not fit (the backup disk, its mount, identity, \
          space or writability; the repository locked or missing; no key); 3 the operation \
          failed; 4 verification found a mismatch; 5 the work succeeded, but an alert or \
          ping could not be delivered.",
         "Read the whole run with `journalctl -x CAIRN_RUN=@CAIRN_RUN@`, fix what the \
          error names, then run the stage again, or wait for its timer: \
          `systemctl start cairn-snapshot.service` runs preflight, quiesce and snapshot; \
          the upload and the drill have cairn-upload.service and cairn-drill.service."];
    /// The previous run of a stage never recorded its result (crash, kill, power loss).
    STAGE_INTERRUPTED = "e0c0d9d6880b9587bf1c24987b05fe41", [],
        "A previous cairn run was interrupted",
        ["When the cairn stage @CAIRN_STAGE@ started the run @CAIRN_RUN@, its status file \
          still said \"running\" for the earlier run @CAIRN_PREVIOUS_RUN@: that run was \
          killed, crashed or lost power before it could record a result (or it is still \
          running). The new run carries on: a repository is consistent at any crash point, \
          and data the earlier run wrote is used by the next one or reclaimed by \
          `cairn prune`.",
         "Nothing needs repairing. To find out why the earlier run stopped, read its last \
          messages with `journalctl CAIRN_RUN=@CAIRN_PREVIOUS_RUN@`, and look for an OOM \
          kill or a crash in `journalctl -k`."];

    // --- snapshot ------------------------------------------------------------------------
    /// A source file or directory could not be read; it is missing from the snapshot.
    FILE_UNREADABLE = "7eb03c8cf4e2975ac59fbb3bc04e5adf", ["cairn-snapshot(8)"],
        "A file could not be read for the backup",
        ["The file or directory @CAIRN_PATH@ could not be read and is not in this snapshot, \
          which is recorded as incomplete (exit status 3); the message gives the error. \
          Earlier snapshots still hold their copy of it.",
         "\"Permission denied\" under cairn-snapshot.service means the unit lacks \
          CAP_DAC_READ_SEARCH (see its drop-ins with `systemctl cat cairn-snapshot.service`) \
          or the file system ignores it (FUSE, NFS with root squashing); an I/O error points \
          at the source disk. If the path should not be backed up, add it to [sources] \
          exclude."];
    /// A source file changed while it was being read.
    FILE_CHANGED = "0b54f4720a4a5f37e7205d071ecd941c", ["cairn-snapshot(8)"],
        "A file changed while it was backed up",
        ["The file @CAIRN_PATH@ changed (its size, modification or change time) while it was \
          read; the snapshot holds it as it was read, which may be inconsistent. This alone \
          does not make the snapshot incomplete.",
         "If a service writes the file, stop it for the backup with [quiesce] units; for a \
          database, add a [database.NAME] dump and exclude its files; for a log or cache \
          that may be torn, ignore this or exclude it in [sources]."];
    /// A snapshot was written to the repository.
    SNAPSHOT_RECORDED = "7b098426d20622b2369520690631246e", ["cairn-snapshot(8)"],
        "A snapshot was recorded",
        ["The snapshot @CAIRN_SNAPSHOT@ was written to the repository; the message gives \
          its figures (files new, changed and unchanged, bytes read, added and stored).",
         "No action is needed. `cairn snapshots` lists it and `cairn ls @CAIRN_SNAPSHOT@` \
          shows what it holds."];
    /// A database dump (PostgreSQL, MySQL, SQLite) failed.
    DATABASE_DUMP_FAILED = "090a2d06c6bc6dc0e54d885be9c2201d", ["cairn-snapshot(8)"],
        "A database dump failed",
        ["The dump @CAIRN_PATH@ of [database.@CAIRN_DATABASE@] failed and is not in this \
          snapshot: a cut-off dump is never stored. The files were still backed up, and the \
          snapshot is incomplete (exit status 3). The message gives the dump tool's error.",
         "Fix what it names (the server down or not listening on its socket, the role or \
          password, the dump tool missing; cairn-snapshot(8) shows the read-only role to \
          give the user cairn), then take a snapshot again: \
          `systemctl start cairn-snapshot.service`."];
    /// A database dump was stored whole in the snapshot.
    DATABASE_DUMPED = "fb4fd279865ca2681a75104b3cc8d26d", ["cairn-snapshot(8)"],
        "A database dump was stored",
        ["The dump tool of [database.@CAIRN_DATABASE@] exited successfully, and its whole \
          output is in the snapshot as @CAIRN_PATH@.",
         "No action is needed. To restore it, pipe `cairn cat SNAPSHOT @CAIRN_PATH@` into \
          the database's own tool (pg_restore, psql, mariadb), as cairn-snapshot(8) shows."];
    /// Snapshots were removed by the retention policy.
    SNAPSHOT_FORGOTTEN = "bcc0b043a51dcf66ec7ddbdf6a0c84ec", ["cairn-snapshot(8)", "cairn(8)"],
        "Snapshots were removed by the retention policy",
        ["The [retention] policy no longer keeps the snapshot @CAIRN_SNAPSHOT@, and its record \
          was removed from the repository; the message says which snapshot it was and why \
          it was not kept. Its data stays in the repository until `cairn prune` deletes what \
          no snapshot uses.",
         "No action is needed: cairn-prune.timer runs forget and prune every week. To keep \
          a snapshot for good, `cairn protect` it."];

    // --- restore and check ---------------------------------------------------------------
    /// One file could not be restored.
    RESTORE_FILE_FAILED = "984dce74f5c36501b3ea9edb341ecad8", ["cairn(8)"],
        "A file could not be restored",
        ["The entry @CAIRN_PATH@ could not be restored; the message says why: the target is \
          not writable or full, or the entry's data is missing or damaged in the repository \
          (a file whose content does not verify is not left behind). The rest of the \
          restore went on, and `cairn restore` exits with status 3.",
         "Fix the target and restore the entry again with `cairn restore SNAPSHOT --target \
          DIR --include @CAIRN_PATH@`. If its data is damaged, run `cairn check --read-data`, \
          and restore the entry from an older snapshot or from the bucket \
          (`cairn --remote restore`)."];
    /// A restore completed.
    RESTORE_DONE = "0386704df53263fc8821b278306b663e", ["cairn(8)"],
        "A restore completed",
        ["The restore of the snapshot @CAIRN_SNAPSHOT@ finished, and every selected entry \
          was restored and verified; the message gives the target directory and the number \
          of files.",
         "No action is needed."];
    /// Repository check found damage.
    CHECK_FAILED = "6f733962f23b39bdf17707f2b2bc1b5e", ["cairn(8)"],
        "The repository check found a problem",
        ["`cairn check` found a missing, damaged or inconsistent object; the message gives \
          the number of problems and the first, and the command listed them all on standard \
          error. Snapshots that use the object may not restore completely. `cairn check` \
          exits with status 4.",
         "Check the backup disk's health (`journalctl -k`, `smartctl -a`). When [remote] is \
          set, `cairn --remote check` tells whether the bucket's copy is sound: the bucket \
          has the same layout and object names, so a damaged object can be copied back from \
          it, and `cairn --remote restore` restores from it meanwhile. Then run \
          `cairn check --read-data` again."];
    /// A lock left by a dead process was removed.
    LOCK_STALE_REMOVED = "a976f48aa9972db8dfbf064d4e943e69", ["cairn-snapshot(8)"],
        "A stale repository lock was removed",
        ["A lock in the repository belonged to a process that no longer exists on this host, \
          or had not been refreshed for 30 minutes; the message names it and says which. It \
          was removed, so this run could proceed.",
         "No action is needed. If it happens often, runs are being killed (look for \
          STAGE_INTERRUPTED) or a host sharing the repository has a wrong clock."];

    // --- preflight -----------------------------------------------------------------------
    /// The backup disk is not the expected one, or not usable.
    MOUNT_UNFIT = "37a1d4c3591b0733e85f709587ac09cb", ["cairn-preflight(8)"],
        "The backup disk is missing or not the expected one",
        ["cairn-preflight found the backup disk unfit at its check @CAIRN_CHECK@: not \
          mounted, another disk (label, UUID or file system type), wrong owner, not \
          writable, below min_free, or the repository missing or locked. Nothing was backed \
          up: the snapshot does not run, and a FAILED alert goes to [alert] mail_to.",
         "The message ends with what to do for this check: do it, check the result with \
          `cairn-preflight --dry-run`, then back up with \
          `systemctl start cairn-snapshot.service`."];
    /// Preflight fixed something itself (mounted the disk, repaired an fstab entry).
    MOUNT_REPAIRED = "356babd4034e95334fd3c83b3596c1c3", ["cairn-preflight(8)"],
        "Preflight repaired the backup mount",
        ["cairn-preflight repaired what its check @CAIRN_CHECK@ found: it mounted the backup \
          disk (auto_mount), added its /etc/fstab line (ensure_fstab; the previous file is \
          kept beside it) or gave the repository to its owner (fix_owner). The message says \
          what was changed.",
         "No action is needed. If it happens on every run, find what undoes it: a disk \
          that is unplugged or unmounted, an automounter, a configuration manager that \
          rewrites /etc/fstab."];

    // --- quiesce -------------------------------------------------------------------------
    /// A service was stopped for the snapshot.
    UNIT_STOPPED = "d29ef4c7b6edee61f6cc710d9ed660cd", ["cairn-quiesce(8)"],
        "A service was stopped for the backup",
        ["cairn-quiesce stopped the unit @CAIRN_UNIT@ ([quiesce] units) so that the snapshot \
          reads its files at rest. It is recorded in /run/cairn-snapshot/quiesced.json and \
          started again when the snapshot ends, whatever became of it.",
         "No action is needed. UNIT_STARTED follows once it is back; UNIT_RESTART_FAILED if \
          it does not come back."];
    /// A service stopped for the snapshot could not be started again.
    UNIT_RESTART_FAILED = "e14a7c3ad168557bd3768b9d7dc00e13", ["cairn-quiesce(8)"],
        "A service stopped for the backup did not come back",
        ["The unit @CAIRN_UNIT@, stopped for the snapshot, did not become active again after \
          it: the service is down now. A DOWN alert was sent, and `cairn-quiesce start` \
          exits with status 3.",
         "See why with `systemctl status @CAIRN_UNIT@` and `journalctl -u @CAIRN_UNIT@`, fix \
          it, and start the unit by hand: `systemctl start @CAIRN_UNIT@`."];
    /// A pre_hook or post_hook failed.
    HOOK_FAILED = "33663317df0d9e3ac33111e133ab1b8f", ["cairn-quiesce(8)"],
        "A quiesce hook failed",
        ["The [quiesce] @CAIRN_HOOK@ exited with an error or timed out; the message says \
          which. A failed pre_hook aborts the backup: nothing stays stopped and no snapshot \
          is taken. A failed post_hook makes `cairn-quiesce start` exit with status 3, the \
          services being started again all the same.",
         "What the hook printed is logged line by line, after its name, in the same run: \
          `journalctl CAIRN_RUN=@CAIRN_RUN@`. Try the command by hand as [quiesce] \
          hook_user, and fix it or the @CAIRN_HOOK@ line."];
    /// A service stopped for the snapshot was started again.
    UNIT_STARTED = "881a9b973aaa62d47e41a5d82b24d0e7", ["cairn-quiesce(8)"],
        "A service stopped for the backup was started again",
        ["The unit @CAIRN_UNIT@, stopped by cairn-quiesce for the snapshot, is active again.",
         "No action is needed."];
    /// A service did not stop within stop_timeout: the backup was aborted.
    UNIT_STOP_FAILED = "c28e7c80edb3eea552c82784ac746fba", ["cairn-quiesce(8)"],
        "A service could not be stopped for the backup",
        ["The unit @CAIRN_UNIT@ did not stop within [quiesce] stop_timeout, or systemd \
          refused to stop it. No snapshot was taken: everything cairn-quiesce had stopped \
          was started again.",
         "Find out why it does not stop (`systemctl status @CAIRN_UNIT@`, \
          `journalctl -u @CAIRN_UNIT@`), or raise [quiesce] stop_timeout."];
    /// A unit listed in [quiesce] units does not exist.
    QUIESCE_UNIT_NOT_LOADED = "410204b014d79d54012b4589da5dcf0f", ["cairn-quiesce(8)"],
        "A unit to quiesce does not exist",
        ["The unit @CAIRN_UNIT@ is listed in [quiesce] units, but systemd has no such unit \
          (or it is masked), so it was not stopped and the snapshot reads its data live.",
         "Correct the name in [quiesce] units as `systemctl list-units --all` shows it, or \
          remove it."];
    /// A service stopped for the snapshot was running again before the snapshot ended.
    UNIT_ACTIVE_DURING_BACKUP = "06ade470e3a3c82cbedc1e91a648f22c", ["cairn-quiesce(8)"],
        "A stopped service was running again during the backup",
        ["The unit @CAIRN_UNIT@, stopped for the snapshot, was already active again when the \
          snapshot ended: something started it (an administrator, a dependency, socket or \
          timer activation) while the snapshot read its data, which may be inconsistent in \
          this snapshot.",
         "List its .socket or .timer unit in [quiesce] units too \
          (`systemctl show -p TriggeredBy -p WantedBy @CAIRN_UNIT@` shows what can start it), \
          or find who started it in `journalctl -u @CAIRN_UNIT@`."];

    // --- upload --------------------------------------------------------------------------
    /// The repository was mirrored to S3.
    UPLOAD_DONE = "2d5bcdc11e8ae046635fcf52307aaf28", ["cairn-upload(8)"],
        "The repository was mirrored to remote storage",
        ["cairn-upload sent the repository's new objects to the [remote] bucket \
          (@CAIRN_OBJECTS@ objects); the message gives the bytes, the time taken and what \
          was already there. The bucket now holds every snapshot of the local repository.",
         "No action is needed."];
    /// The mirror to S3 failed.
    UPLOAD_FAILED = "65e26e028270c1891f942189c14a35e9", ["cairn-upload(8)"],
        "Mirroring to remote storage failed",
        ["Some repository objects could not be uploaded to the [remote] bucket; the message \
          says why (network or endpoint, credentials, the bucket's policy, a damaged local \
          object). The bucket never holds a snapshot whose data is missing, and the next run \
          sends what is missing; until then the off-site copy lags behind the local one.",
         "Test the credentials and the bucket with `cairn remote test`, fix what the message \
          names (a damaged local object: run `cairn check`), then upload again with \
          `systemctl start cairn-upload.service`."];

    // --- drill ---------------------------------------------------------------------------
    /// The restore drill restored and verified the latest snapshot.
    DRILL_PASSED = "37be28e5e020e8ab2c3227713a625e35", ["cairn-drill(8)"],
        "The restore drill passed",
        ["The restore drill restored the snapshot @CAIRN_SNAPSHOT@ (or the sample [drill] \
          sample asks for) into its scratch directory, and every entry verified against the \
          snapshot: content hash, size, mode, owner, times, link targets, extended \
          attributes. The message gives the figures, including the time the restore took.",
         "No action is needed."];
    /// The restore drill found restored content that does not match.
    DRILL_MISMATCH = "4f0410007db2c038139e91b0c83ce507", ["cairn-drill(8)"],
        "The restore drill found a mismatch",
        ["Entries the drill restored from the snapshot @CAIRN_SNAPSHOT@ do not match what \
          was recorded at backup time; the message gives how many and the first. The \
          backups are untrusted: data may be damaged or missing in the repository the drill \
          read, the bucket when [remote] is set, else the backup disk. The drill exits with \
          status 4.",
         "Find the damage with `cairn --remote check --read-data` (with [remote]) or \
          `cairn check --read-data`, and check the health of the disk or the provider. The \
          bucket and the backup disk hold the same objects under the same names: copy a \
          sound one over a damaged one, then run `systemctl start cairn-drill.service` \
          again."];

    // --- heartbeat and alerts ------------------------------------------------------------
    /// A stage has not succeeded for longer than its max_age.
    BACKUP_STALE = "7ed0ad9e3745a08f4e104e8517a27cd0", ["cairn-heartbeat(8)", "cairn-preflight(8)"],
        "A cairn stage has not succeeded recently",
        ["The last success of the stage @CAIRN_STALE_STAGE@ is older than the configured \
          max_age: backups (or drills) are not happening. The message gives the age and \
          since when. A STALE alert is sent once for each such episode.",
         "See what fails with `cairn status` and the stage's messages \
          (`journalctl -u cairn-@CAIRN_STALE_STAGE@.service`), and whether its timer runs at \
          all (`systemctl list-timers 'cairn*'`); fix that, and start the stage's service \
          by hand to check."];
    /// The dead-man's-switch ping could not be delivered.
    PING_FAILED = "57efe03536fea3803e7892ecbda37e4a", ["cairn-heartbeat(8)"],
        "The heartbeat ping failed",
        ["The @CAIRN_PING@ ping to the @CAIRN_PING_CHECK@ check ([heartbeat] ping_url or \
          drill_ping_url) could not be delivered, even after its retries; the message gives \
          the error. While pings fail, the monitoring service will report this host as \
          silent, whether backups run or not.",
         "Check that the host reaches the URL (`curl -fsS URL`) and that \
          cairn-heartbeat.service may use the network, then send one with \
          `cairn-heartbeat ping`."];
    /// An alert was handed to the local MTA.
    ALERT_SENT = "a794775aaa84e37e31cc275238ff1b44", ["cairn-heartbeat(8)"],
        "An alert was sent",
        ["An alert about the stage @CAIRN_ALERT_STAGE@ (@CAIRN_ALERT@: FAILED, STALE, WARNING, \
          or DOWN for a service that did not come back) went out by @CAIRN_ALERT_CHANNEL@: \
          mail, handed to the local MTA's sendmail for [alert] mail_to (the MTA delivers or \
          queues it), or webhook, accepted by [alert] webhook.",
         "No action is needed for this message; the alert itself says what to do."];
    /// An alert could not be handed to the local MTA or webhook.
    ALERT_UNDELIVERED = "6eb4dc709835fbf6a92d9bbaaa330a23", ["cairn-heartbeat(8)"],
        "An alert could not be delivered",
        ["An alert about the stage @CAIRN_ALERT_STAGE@ (@CAIRN_ALERT@) could not be delivered \
          by @CAIRN_ALERT_CHANNEL@: for mail, it could not be handed to the local MTA's \
          sendmail, so nobody was told by mail; for webhook, [alert] webhook did not accept \
          it (the message gives the HTTP status or the network error). A stage that \
          otherwise succeeded exits with status 5; one that failed keeps its own status.",
         "For mail, check the MTA: `sendmail -bv root`, its log, and [alert] sendmail. For \
          the webhook, check the URL and the network: a stage whose unit has no network \
          cannot post, while the OnFailure= alert unit and cairn-heartbeat can."];
    /// A stage that was stale has succeeded again: the staleness episode is over.
    BACKUP_FRESH = "a1b2da4f5bf063c14d60cd1a1fe80a8c", ["cairn-heartbeat(8)"],
        "A stale cairn stage has succeeded again",
        ["The stage @CAIRN_STALE_STAGE@, reported stale earlier (BACKUP_STALE), has a recent \
          success again: the episode is over.",
         "No action is needed; if it goes stale again, that is alerted anew."];
    /// The Prometheus metrics file could not be written.
    METRICS_UNWRITABLE = "8b84c086ff74d93657b162ea56b7c610", ["cairn-heartbeat(8)"],
        "The cairn metrics file could not be written",
        ["cairn-heartbeat could not write [heartbeat] metrics_file, @CAIRN_PATH@; the message \
          says why. Until it can, Prometheus sees the old figures or none.",
         "Make the file's directory writable by the user cairn. Under \
          cairn-heartbeat.service it must also be in ReadWritePaths=: the unit allows \
          /var/lib/prometheus/node-exporter, and `cairn setup` writes the drop-in for \
          another directory (run it again after changing metrics_file), then \
          `systemctl restart cairn-heartbeat.service`."];
    /// The heartbeat has no connection to the system bus.
    HEARTBEAT_NO_BUS = "8b1a25b82a34edc4775bee3eed46e773", ["cairn-heartbeat(8)"],
        "cairn-heartbeat cannot listen on the system bus",
        ["cairn-heartbeat could not connect to the system D-Bus, or lost the connection, so \
          it does not receive the stages' StageFinished signals; it retries with backoff. \
          Meanwhile it follows the status files in /var/lib/cairn/status, so pings, metrics \
          and staleness checks go on.",
         "Check the bus with `systemctl status dbus.service`; once it runs, cairn-heartbeat \
          reconnects by itself."];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for m in ALL {
            assert_eq!(m.id.len(), 32, "{}: id must be 32 hex digits", m.name);
            assert!(
                m.id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{}: id must be lowercase hex",
                m.name
            );
            assert!(ids.insert(m.id), "{}: duplicate id {}", m.name, m.id);
            assert!(names.insert(m.name), "duplicate name {}", m.name);
            assert!(
                !m.summary.is_empty() && !m.summary.contains('\n'),
                "{}",
                m.name
            );
            assert!(!m.detail.is_empty(), "{}", m.name);
        }
        assert!(ALL.len() >= 11);
    }

    /// The `@FIELD@` names of a text, or an error for an `@` that opens none.
    fn fields_of(text: &str) -> Result<Vec<&str>, String> {
        let mut fields = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('@') {
            let after = &rest[i + 1..];
            let end = after
                .find('@')
                .ok_or_else(|| format!("a lone @ in {text:?}"))?;
            let name = &after[..end];
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(format!("@{name}@ is not a journal field name, in {text:?}"));
            }
            fields.push(name);
            rest = &after[end + 1..];
        }
        Ok(fields)
    }

    #[test]
    fn details_say_what_happened_then_what_to_do() {
        for m in ALL {
            let paragraphs: Vec<&str> = m.detail.split("\n\n").collect();
            assert!(
                paragraphs.len() >= 2,
                "{}: the detail needs a paragraph on what happened and a last one on what \
                 to do (or that no action is needed)",
                m.name
            );
            for p in &paragraphs {
                assert!(
                    !p.trim().is_empty() && !p.contains('\n'),
                    "{}: {p:?}",
                    m.name
                );
                assert!(
                    p.ends_with(['.', ')']) || p.ends_with("@CAIRN_ERROR@"),
                    "{}: {p:?}",
                    m.name
                );
                assert_eq!(
                    p.matches('`').count() % 2,
                    0,
                    "{}: unbalanced ` in {p:?}",
                    m.name
                );
            }
            fields_of(m.detail).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            fields_of(m.summary).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            for page in m.pages {
                assert!(
                    page.starts_with("cairn") && page.ends_with(")") && page.contains('('),
                    "{}: {page} is not a cairn man page as NAME(SECTION)",
                    m.name
                );
            }
        }
    }

    /// The Rust sources of the library (`core/src`), as (path, text).
    fn sources() -> Vec<(std::path::PathBuf, String)> {
        let mut out = Vec::new();
        let mut todo = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    out.push((p, text));
                }
            }
        }
        out
    }

    /// Every `msg::NAME` used in the library is an entry of [`ALL`] (so in the catalog),
    /// every entry is used somewhere besides this file, and every `@FIELD@` of a catalog
    /// text is a field the library logs (`("FIELD", …)` somewhere in its sources).
    #[test]
    fn table_and_sources_agree() {
        let mut used = HashSet::new();
        let mut logged_fields: HashSet<String> = ["CAIRN_STAGE", "CAIRN_RUN"]
            .into_iter()
            .map(String::from)
            .collect();
        for (path, text) in sources() {
            // This file defines the entries (and names them in its documentation).
            if path.ends_with("stage/msg.rs") {
                continue;
            }
            for (i, _) in text.match_indices("msg::") {
                let name: String = text[i + 5..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() < 2 || name == "ALL" {
                    continue; // msg::MessageId, msg::find, msg::ALL
                }
                assert!(
                    find(&name).is_some(),
                    "{}: msg::{name} is not an entry of msg::ALL",
                    path.display()
                );
                used.insert(name);
            }
            for (i, _) in text.match_indices("(\"CAIRN_") {
                let name: String = text[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if text[i + 2 + name.len()..].starts_with("\",") {
                    logged_fields.insert(name);
                }
            }
        }
        for m in ALL {
            assert!(
                used.contains(m.name),
                "{} is in msg::ALL but nothing in core/src logs it",
                m.name
            );
            for f in fields_of(m.detail).unwrap() {
                assert!(
                    logged_fields.contains(f),
                    "{}: @{f}@ is not a field core/src logs (known: {logged_fields:?})",
                    m.name
                );
            }
        }
    }

    #[test]
    fn catalog_format() {
        let text = catalog();
        let mut ids = Vec::new();
        for line in text.lines() {
            assert!(!line.ends_with(' '), "trailing space: {line:?}");
            if let Some(id) = line.strip_prefix("-- ") {
                ids.push(id);
            }
        }
        let want: Vec<&str> = ALL.iter().map(|m| m.id).collect();
        assert_eq!(ids, want);
        let m = &FILE_UNREADABLE;
        let entry = format!(
            "-- {}\nSubject: {}\nDefined-By: cairn\nDocumentation: man:cairn-snapshot(8)\n\
             Documentation: man:cairn(7)\n\nThe file or directory @CAIRN_PATH@ could not be",
            m.id, m.summary
        );
        assert!(text.contains(&entry), "{text}");
        // Everything before the first entry is comments.
        let head = &text[..text.find("\n-- ").unwrap()];
        assert!(head.lines().all(|l| l.starts_with('#')), "{head}");
    }

    #[test]
    fn fill_wraps_words_and_keeps_commands_whole() {
        let text = "one two three `journalctl -u cairn-snapshot.service` four five";
        assert_eq!(
            fill(text, 40),
            "one two three\n`journalctl -u cairn-snapshot.service`\nfour five\n"
        );
        assert_eq!(fill("a `b c` d", 5), "a\n`b c`\nd\n");
        let long = "x".repeat(30);
        assert_eq!(fill(&format!("a {long} b"), 10), format!("a\n{long}\nb\n"));
        // A command longer than a line is broken after all.
        assert_eq!(fill("`aaaa bbbb cccc`", 10), "`aaaa bbbb\ncccc`\n");
        for m in ALL {
            for line in fill(m.detail, CATALOG_WIDTH).lines() {
                assert!(
                    line.chars().count() <= CATALOG_WIDTH || !line.contains(' '),
                    "{}: {line:?}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn lookup_by_name_and_id() {
        assert_eq!(find("STAGE_FAILED"), Some(&STAGE_FAILED));
        assert_eq!(
            by_id(&STAGE_PARTIAL.id.to_uppercase()),
            Some(&STAGE_PARTIAL)
        );
        assert_eq!(find("NOPE"), None);
        assert_eq!(STAGE_STARTED.to_string(), STAGE_STARTED.id);
    }
}
