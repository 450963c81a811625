//! A stage run that may be a dry run.
//!
//! Design: a dry run is not a run of the stage — monitoring must not take it for one — so
//! it writes no status file and sends no signal; it only logs, through the process-wide
//! logger. [`Run`] gives both kinds the same methods, so stage code is written once.

use super::{Dirs, Exit, MessageId, Outcome, Priority, Progress, Stage};

/// A real run, or a dry run that only logs.
pub enum Run {
    /// Reports under the stage contract.
    Real(Box<Stage>),
    /// `--dry-run`: logs only.
    DryRun,
}

impl Run {
    /// [`Stage::event`]; a dry run logs the message as a plain line, without the id.
    pub fn event(&self, id: &MessageId, prio: Priority, message: &str, fields: &[(&str, &str)]) {
        match self {
            Run::Real(s) => s.event(id, prio, message, fields),
            // Without its MESSAGE_ID: alert rules must not fire on a rehearsal.
            Run::DryRun => {
                let _ = (id, fields);
                super::log(prio, message)
            }
        }
    }
    /// [`Stage::info`].
    pub fn info(&self, message: &str) {
        match self {
            Run::Real(s) => s.info(message),
            Run::DryRun => super::log(Priority::Info, message),
        }
    }
    /// [`Stage::error`].
    pub fn error(&self, message: &str) {
        match self {
            Run::Real(s) => s.error(message),
            Run::DryRun => super::log(Priority::Err, message),
        }
    }
    /// [`Stage::warn`].
    pub fn warn(&self, message: &str) {
        match self {
            Run::Real(s) => s.warn(message),
            Run::DryRun => super::log(Priority::Warning, message),
        }
    }
    /// [`Stage::status`] (nothing in a dry run).
    pub fn status(&self, text: &str) {
        if let Run::Real(s) = self {
            s.status(text);
        }
    }
    /// [`Stage::ready`] (nothing in a dry run).
    pub fn ready(&self) {
        if let Run::Real(s) = self {
            s.ready();
        }
    }
    /// [`Stage::progress`] (hidden in a dry run).
    pub fn progress(&self, what: &str) -> Progress {
        match self {
            Run::Real(s) => s.progress(None, what),
            Run::DryRun => Progress::hidden(),
        }
    }
    /// [`Stage::finish`]; a dry run logs the outcome and returns its exit code.
    pub fn finish(self, outcome: Outcome) -> i32 {
        match self {
            Run::Real(s) => s.finish(outcome),
            Run::DryRun => {
                let line = match &outcome.error {
                    Some(e) => format!("{}: {e}", outcome.summary),
                    None => outcome.summary.clone(),
                };
                let prio = if outcome.exit == Exit::Success {
                    Priority::Info
                } else {
                    Priority::Err
                };
                super::log(prio, &format!("dry run: {line}"));
                outcome.exit.code()
            }
        }
    }
}

impl Run {
    /// Start stage `name`: a real [`Stage`] (status file, journal fields, signal), or with
    /// `dry_run` just the process-wide logger. `Err` is the exit code to end with, the
    /// reason already logged.
    pub fn start(name: &'static str, dry_run: bool) -> Result<Run, i32> {
        if dry_run {
            super::init_logging(&format!("cairn-{name}"));
            return Ok(Run::DryRun);
        }
        match Stage::start(name, &Dirs::from_env()) {
            Ok(s) => Ok(Run::Real(Box::new(s))),
            Err(e) => {
                super::log(Priority::Err, &e.to_string());
                Err(e.exit().code())
            }
        }
    }

    /// The underlying stage of a real run.
    pub fn stage(&self) -> Option<&Stage> {
        match self {
            Run::Real(s) => Some(s),
            Run::DryRun => None,
        }
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        matches!(self, Run::DryRun)
    }
}
