//! The journal message ids of every event an operator may filter or alert on.
//!
//! This is the one table of ids in cairn: the journal catalog (`cairn.catalog`) is generated
//! from [`ALL`], and `journalctl MESSAGE_ID=…` filters, alert rules and the man pages refer to
//! these values. An id is a fixed random 128-bit number written as 32 lowercase hex digits,
//! as systemd's catalog expects; once released an id never changes meaning. Add new events
//! here (and to [`ALL`]) rather than inventing ids elsewhere.

/// A journal `MESSAGE_ID` with the text the catalog shows for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Rust-side name, as used in `cairn::stage::msg::NAME`.
    pub name: &'static str,
    /// 32 lowercase hex digits: a fixed random 128-bit id.
    pub id: &'static str,
    /// One line: the catalog entry's subject.
    pub summary: &'static str,
    /// A few sentences for the catalog body: what happened and what the operator should do.
    pub detail: &'static str,
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

macro_rules! message_ids {
    ($( $(#[$doc:meta])* $name:ident = $id:literal, $summary:literal, $detail:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $name: MessageId = MessageId {
                name: stringify!($name),
                id: $id,
                summary: $summary,
                detail: $detail,
            };
        )*
        /// Every message id, in catalog order.
        pub const ALL: &[&MessageId] = &[$(&$name),*];
    };
}

message_ids! {
    // --- every stage -------------------------------------------------------------------
    /// A stage began a run (CAIRN_STAGE, CAIRN_RUN).
    STAGE_STARTED = "6448c4c8e0d14c1ed34ee972f850b319",
        "A cairn stage started",
        "The stage named in CAIRN_STAGE started the run CAIRN_RUN and recorded it as running in its status file under /var/lib/cairn/status/.";
    /// A stage completed everything it had to do.
    STAGE_SUCCEEDED = "e76b7565cbca374f8c9acc668f7e649b",
        "A cairn stage succeeded",
        "The stage completed its run. The status file holds the summary and figures; `cairn status` shows them.";
    /// A stage recorded its work but part of it failed (exit code 3).
    STAGE_PARTIAL = "e29edb72e2b26e3ec80e9ba1fe1a8afa",
        "A cairn stage partially failed",
        "The stage recorded its work, but some of it failed (for a snapshot: some files could not be read and are not in the backup). The stage exits with code 3. Look for the preceding warnings of the same CAIRN_RUN to see what is missing.";
    /// A stage failed (any non-zero exit code other than a partial run).
    STAGE_FAILED = "f3f74269aaeb7c85a65cb830e4acd6a8",
        "A cairn stage failed",
        "The stage did not complete. CAIRN_EXIT_CODE says why: 1 usage or configuration error, 2 environment not fit (mount, identity, space, writability, repository locked or missing), 3 the operation failed, 4 the drill found a mismatch, 5 an alert or ping could not be delivered. CAIRN_ERROR holds the error.";
    /// The previous run of a stage never recorded its result (crash, kill, power loss).
    STAGE_INTERRUPTED = "e0c0d9d6880b9587bf1c24987b05fe41",
        "A previous cairn run was interrupted",
        "When the stage started, its status file still said \"running\" for an earlier run (CAIRN_PREVIOUS_RUN): that run was killed, crashed or lost power before it could record a result. The new run carries on; a repository is consistent at any crash point.";

    // --- snapshot ------------------------------------------------------------------------
    /// A source file or directory could not be read; it is missing from the snapshot.
    FILE_UNREADABLE = "7eb03c8cf4e2975ac59fbb3bc04e5adf",
        "A file could not be read for the backup",
        "The file in CAIRN_PATH could not be read and is not in this snapshot (the previous snapshot's copy, if any, is still there). Check permissions, the unit's CAP_DAC_READ_SEARCH, or exclude the path in [sources].";
    /// A source file changed while it was being read.
    FILE_CHANGED = "0b54f4720a4a5f37e7205d071ecd941c",
        "A file changed while it was backed up",
        "The file in CAIRN_PATH changed while it was read; the snapshot holds a copy that may be inconsistent. Quiesce the service writing it ([quiesce] units) or use a [database.*] dump.";
    /// A snapshot was written to the repository.
    SNAPSHOT_RECORDED = "7b098426d20622b2369520690631246e",
        "A snapshot was recorded",
        "A new snapshot (CAIRN_SNAPSHOT) is in the repository. Its figures are in the status file and in `cairn snapshots`.";
    /// A database dump (PostgreSQL, MySQL, SQLite) failed.
    DATABASE_DUMP_FAILED = "090a2d06c6bc6dc0e54d885be9c2201d",
        "A database dump failed",
        "The dump of the database section CAIRN_DATABASE failed and is not in this snapshot. The error says why (credentials, server down, dump tool missing).";
    /// A database dump was stored whole in the snapshot.
    DATABASE_DUMPED = "fb4fd279865ca2681a75104b3cc8d26d",
        "A database dump was stored",
        "The dump tool of the database section CAIRN_DATABASE exited successfully and its whole output is in the snapshot at CAIRN_PATH; restore it with `cairn cat SNAPSHOT CAIRN_PATH` piped into the database's own tool.";
    /// Snapshots were removed by the retention policy.
    SNAPSHOT_FORGOTTEN = "bcc0b043a51dcf66ec7ddbdf6a0c84ec",
        "Snapshots were removed by the retention policy",
        "Snapshots no longer kept by [retention] were removed from the repository, Their data stays in the repository until `cairn prune` deletes what no snapshot uses.";

    // --- restore and check ---------------------------------------------------------------
    /// One file could not be restored.
    RESTORE_FILE_FAILED = "984dce74f5c36501b3ea9edb341ecad8",
        "A file could not be restored",
        "The file in CAIRN_PATH could not be restored; the error says why (target not writable, missing or damaged data). The rest of the restore continued.";
    /// A restore completed.
    RESTORE_DONE = "0386704df53263fc8821b278306b663e",
        "A restore completed",
        "The restore of snapshot CAIRN_SNAPSHOT finished; the message says how many files and bytes were written and whether any failed.";
    /// Repository check found damage.
    CHECK_FAILED = "6f733962f23b39bdf17707f2b2bc1b5e",
        "The repository check found a problem",
        "`cairn check` found a missing, damaged or inconsistent object, named in the message. Snapshots that refer to it may not restore completely. Re-run the next snapshot to re-add missing data, or restore the object from the S3 mirror.";
    /// A lock left by a dead process was removed.
    LOCK_STALE_REMOVED = "a976f48aa9972db8dfbf064d4e943e69",
        "A stale repository lock was removed",
        "A lock in the repository belonged to a process that no longer exists (or was not refreshed for 30 minutes); the message names it. It was removed, so this run could proceed.";

    // --- preflight -----------------------------------------------------------------------
    /// The backup disk is not the expected one, or not usable.
    MOUNT_UNFIT = "37a1d4c3591b0733e85f709587ac09cb",
        "The backup disk is missing or not the expected one",
        "Preflight found the backup target unfit: not mounted, wrong label/UUID/filesystem, wrong owner, read-only, or below min_free. Nothing was backed up. The message names the check that failed.";
    /// Preflight fixed something itself (mounted the disk, repaired an fstab entry).
    MOUNT_REPAIRED = "356babd4034e95334fd3c83b3596c1c3",
        "Preflight repaired the backup mount",
        "Preflight mounted the backup disk (auto_mount), added its /etc/fstab line (ensure_fstab) or changed the owner of the repository (fix_owner); CAIRN_CHECK names which. The message says what was changed.";

    // --- quiesce -------------------------------------------------------------------------
    /// A service was stopped for the snapshot.
    UNIT_STOPPED = "d29ef4c7b6edee61f6cc710d9ed660cd",
        "A service was stopped for the backup",
        "The unit CAIRN_UNIT was stopped so the snapshot reads consistent files; it is started again when the snapshot ends.";
    /// A service stopped for the snapshot could not be started again.
    UNIT_RESTART_FAILED = "e14a7c3ad168557bd3768b9d7dc00e13",
        "A service stopped for the backup did not come back",
        "The unit CAIRN_UNIT, stopped for the snapshot, failed to start again. It is down now: check `systemctl status` for it and start it by hand.";
    /// A pre_hook or post_hook failed.
    HOOK_FAILED = "33663317df0d9e3ac33111e133ab1b8f",
        "A quiesce hook failed",
        "The hook command in CAIRN_HOOK exited with an error or timed out. Its output is in the journal of the same CAIRN_RUN.";
    /// A service stopped for the snapshot was started again.
    UNIT_STARTED = "881a9b973aaa62d47e41a5d82b24d0e7",
        "A service stopped for the backup was started again",
        "The unit CAIRN_UNIT, stopped by cairn-quiesce for the snapshot, is active again.";
    /// A service did not stop within stop_timeout: the backup was aborted.
    UNIT_STOP_FAILED = "c28e7c80edb3eea552c82784ac746fba",
        "A service could not be stopped for the backup",
        "The unit CAIRN_UNIT did not stop within [quiesce] stop_timeout, or systemd refused to stop it. No snapshot was taken: everything cairn-quiesce had stopped was started again. Find out why it does not stop (`systemctl status`, `journalctl -u` for it), or raise stop_timeout.";
    /// A unit listed in [quiesce] units does not exist.
    QUIESCE_UNIT_NOT_LOADED = "410204b014d79d54012b4589da5dcf0f",
        "A unit to quiesce does not exist",
        "The unit CAIRN_UNIT is listed in [quiesce] units, but systemd has no such unit (or it is masked), so it was not stopped and the snapshot reads its data live. Correct the name in [quiesce] units (as `systemctl list-units` shows it).";
    /// A service stopped for the snapshot was running again before the snapshot ended.
    UNIT_ACTIVE_DURING_BACKUP = "06ade470e3a3c82cbedc1e91a648f22c",
        "A stopped service was running again during the backup",
        "The unit CAIRN_UNIT, stopped for the snapshot, was already active again when the snapshot ended: something started it (an administrator, a dependency, socket or timer activation) while the snapshot read its data, which may be inconsistent in this snapshot. List its .socket or .timer in [quiesce] units too, or find what started it.";

    // --- upload --------------------------------------------------------------------------
    /// The repository was mirrored to S3.
    UPLOAD_DONE = "2d5bcdc11e8ae046635fcf52307aaf28",
        "The repository was mirrored to remote storage",
        "New repository objects were uploaded to the [remote] bucket; the message gives the number of objects and bytes.";
    /// The mirror to S3 failed.
    UPLOAD_FAILED = "65e26e028270c1891f942189c14a35e9",
        "Mirroring to remote storage failed",
        "Some repository objects could not be uploaded (network, credentials, bucket policy). The next run retries them; until then the remote copy lags behind the local one.";

    // --- drill ---------------------------------------------------------------------------
    /// The restore drill restored and verified the latest snapshot.
    DRILL_PASSED = "37be28e5e020e8ab2c3227713a625e35",
        "The restore drill passed",
        "The latest snapshot was restored to the scratch directory and every file's content hash matched.";
    /// The restore drill found restored content that does not match.
    DRILL_MISMATCH = "4f0410007db2c038139e91b0c83ce507",
        "The restore drill found a mismatch",
        "A file restored by the drill (CAIRN_PATH) does not match the content hash recorded at backup time. The backup may be damaged: run `cairn check --read-data` and take a new snapshot.";

    // --- heartbeat and alerts ------------------------------------------------------------
    /// A stage has not succeeded for longer than its max_age.
    BACKUP_STALE = "7ed0ad9e3745a08f4e104e8517a27cd0",
        "A cairn stage has not succeeded recently",
        "The last success of the stage in CAIRN_STALE_STAGE is older than the configured max_age: backups (or drills) are not happening. Look at `cairn status`, the stage's status file and its journal (`journalctl -u cairn-snapshot.service`), and `systemctl list-timers 'cairn*'`.";
    /// The dead-man's-switch ping could not be delivered.
    PING_FAILED = "57efe03536fea3803e7892ecbda37e4a",
        "The heartbeat ping failed",
        "The ping to [heartbeat] ping_url could not be delivered; the monitoring service will eventually report the host as silent.";
    /// An alert was handed to the local MTA.
    ALERT_SENT = "a794775aaa84e37e31cc275238ff1b44",
        "An alert was sent",
        "An alert about the stage in CAIRN_ALERT_STAGE (kind CAIRN_ALERT: FAILED, STALE, WARNING, or DOWN for a service that did not come back) went out by the path in CAIRN_ALERT_CHANNEL: `mail`, handed to the local MTA's sendmail for [alert] mail_to (the MTA delivers or queues it), or `webhook`, accepted by [alert] webhook.";
    /// An alert could not be handed to the local MTA or webhook.
    ALERT_UNDELIVERED = "6eb4dc709835fbf6a92d9bbaaa330a23",
        "An alert could not be delivered",
        "An alert could not be delivered by the path in CAIRN_ALERT_CHANNEL. `mail`: it could not be handed to the local MTA's sendmail, so nobody was told by mail; check the MTA (`sendmail -bv root`, its log) or [alert] sendmail. `webhook`: [alert] webhook did not accept it (the message gives the HTTP status or the network error; a stage whose unit has no network cannot post, the OnFailure= alert unit and cairn-heartbeat can). A stage that otherwise succeeded exits with code 5 when its mail was not delivered; one that failed keeps its own code.";
    /// A stage that was stale has succeeded again: the staleness episode is over.
    BACKUP_FRESH = "a1b2da4f5bf063c14d60cd1a1fe80a8c",
        "A stale cairn stage has succeeded again",
        "The stage in CAIRN_STALE_STAGE, reported stale earlier (BACKUP_STALE), has a recent success again: the episode is over, and the next time it goes stale is alerted anew.";
    /// The Prometheus metrics file could not be written.
    METRICS_UNWRITABLE = "8b84c086ff74d93657b162ea56b7c610",
        "The cairn metrics file could not be written",
        "cairn-heartbeat could not write [heartbeat] metrics_file (CAIRN_PATH); the message says why. Under cairn-heartbeat.service the file's directory must be writable by the user cairn and listed in ReadWritePaths= (the unit allows /var/lib/prometheus/node-exporter; add a drop-in for any other directory). Until it is fixed, Prometheus sees the old figures or none.";
    /// The heartbeat has no connection to the system bus.
    HEARTBEAT_NO_BUS = "8b1a25b82a34edc4775bee3eed46e773",
        "cairn-heartbeat cannot listen on the system bus",
        "cairn-heartbeat could not connect to the system D-Bus, or lost the connection, so it does not receive the stages' StageFinished signals; it retries with backoff. Meanwhile it still follows the status files in /var/lib/cairn/status, so pings, metrics and staleness checks go on.";
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
