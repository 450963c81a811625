//! The contract every stage binary follows (DESIGN.md, "Contract shared by every stage
//! binary"): logging, `sd_notify`, the status file, the D-Bus signal and the exit code.
//!
//! A stage binary does
//!
//! ```no_run
//! # use cairn::stage::{Dirs, Outcome, Stage};
//! # fn main() -> std::process::ExitCode {
//! let dirs = Dirs::from_env();
//! let stage = match Stage::start("snapshot", &dirs) {
//!     Ok(stage) => stage,
//!     Err(e) => {
//!         cairn::stage::log(cairn::stage::Priority::Err, &e.to_string());
//!         return e.exit().into();
//!     }
//! };
//! // ... the work, reporting through stage.event(), stage.progress(), stage.status() ...
//! let code = stage.finish(Outcome::success("42 files, 1.2 GiB read"));
//! std::process::ExitCode::from(u8::try_from(code).unwrap_or(3))
//! # }
//! ```
//!
//! so that every stage looks the same to an operator. The design choice is to gather the
//! whole contract in one value, [`Stage`]: it is created once (logging first, so even a
//! failing start is reported), it is the only way to end a run ([`Stage::finish`] consumes
//! it), and a `Stage` dropped without `finish` (early return, panic) still records a failure
//! rather than leaving a status file that says "running" forever.
//!
//! **Result mapping** (status file `result`, D-Bus `result`, `MESSAGE_ID`):
//!
//! | outcome                                   | exit | result    | message id        |
//! |-------------------------------------------|------|-----------|-------------------|
//! | [`Outcome::success`]                      | 0    | `success` | `STAGE_SUCCEEDED` |
//! | [`Outcome::partial`]: work recorded, part of it failed | 3 | `partial` | `STAGE_PARTIAL` |
//! | [`Outcome::failure`] with any other code  | 1–5  | `failure` | `STAGE_FAILED`    |
//!
//! While a run is in progress its status file says `running`; a file that still says so
//! when the next run starts means the previous run was interrupted (`STAGE_INTERRUPTED`).
//!
//! Environment read at start: `$STATE_DIRECTORY`, `$CACHE_DIRECTORY`, `$RUNTIME_DIRECTORY`
//! ([`Dirs`]), `$INVOCATION_ID` (the run id), `$NOTIFY_SOCKET`, `$JOURNAL_STREAM`,
//! `$CAIRN_DEBUG`, `$CAIRN_NO_DBUS=1` (skip the D-Bus signal), `$DBUS_SYSTEM_BUS_ADDRESS`.
//! Nothing here adds secrets to logs or status files: only what callers pass is written.

pub mod dbus;
pub mod log;
pub mod msg;
mod notify;
mod progress;
mod run;
pub mod status;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

pub use self::dbus::SignalError;
pub use self::log::{
    exit_with, init_logging, install_panic_logging, log, log_event, logger, Logger, Priority,
};
pub use self::msg::MessageId;
pub use self::progress::Progress;
pub use self::run::Run;
pub use self::status::{read_status, status_path, StageResult, StatusFile};

use self::log::Sink;
use self::notify::{Notifier, NotifyState};

/// cairn's version, recorded in status files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes, with the same meaning in every cairn program and man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Exit {
    /// Everything done.
    Success = 0,
    /// Usage or configuration error.
    Usage = 1,
    /// Environment not fit: mount, identity, space, writability; repository locked or
    /// missing.
    Environment = 2,
    /// The operation failed: some data not backed up, upload failed, drill restore failed.
    Failed = 3,
    /// Drill: verification found a mismatch.
    Mismatch = 4,
    /// Succeeded, but an alert or ping could not be delivered.
    Undelivered = 5,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: [Exit; 6] = [
        Exit::Success,
        Exit::Usage,
        Exit::Environment,
        Exit::Failed,
        Exit::Mismatch,
        Exit::Undelivered,
    ];

    /// The process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// A few words for logs and `--help`.
    pub fn describe(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Usage => "usage or configuration error",
            Exit::Environment => "environment not fit",
            Exit::Failed => "the operation failed",
            Exit::Mismatch => "verification found a mismatch",
            Exit::Undelivered => "an alert or ping could not be delivered",
        }
    }

    /// The exit with this code, if it is one of cairn's.
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code(), self.describe())
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        // Codes are 0..=5.
        std::process::ExitCode::from(e.code() as u8)
    }
}

/// The directories a stage works in; systemd creates them from `StateDirectory=`,
/// `CacheDirectory=` and `RuntimeDirectory=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Persistent state: status files (`/var/lib/cairn`).
    pub state: PathBuf,
    /// Rebuildable cache: files cache, index cache (`/var/cache/cairn`).
    pub cache: PathBuf,
    /// Volatile runtime files (`/run/cairn`).
    pub runtime: PathBuf,
}

impl Dirs {
    /// Default state directory.
    pub const DEFAULT_STATE: &'static str = "/var/lib/cairn";
    /// Default cache directory.
    pub const DEFAULT_CACHE: &'static str = "/var/cache/cairn";
    /// Default runtime directory.
    pub const DEFAULT_RUNTIME: &'static str = "/run/cairn";

    /// From `$STATE_DIRECTORY`, `$CACHE_DIRECTORY`, `$RUNTIME_DIRECTORY`, else the defaults.
    pub fn from_env() -> Dirs {
        Dirs::from_values(
            std::env::var_os("STATE_DIRECTORY").as_deref(),
            std::env::var_os("CACHE_DIRECTORY").as_deref(),
            std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
        )
    }

    /// From the variables' values. systemd passes a colon-separated list when a unit names
    /// several directories: the first non-empty entry is used. Unset or empty: the default.
    pub fn from_values(
        state: Option<&OsStr>,
        cache: Option<&OsStr>,
        runtime: Option<&OsStr>,
    ) -> Dirs {
        Dirs {
            state: first_dir(state, Dirs::DEFAULT_STATE),
            cache: first_dir(cache, Dirs::DEFAULT_CACHE),
            runtime: first_dir(runtime, Dirs::DEFAULT_RUNTIME),
        }
    }

    /// `root/state`, `root/cache`, `root/runtime`: for tests and demos.
    pub fn under(root: &Path) -> Dirs {
        Dirs {
            state: root.join("state"),
            cache: root.join("cache"),
            runtime: root.join("runtime"),
        }
    }
}

fn first_dir(value: Option<&OsStr>, default: &str) -> PathBuf {
    value
        .and_then(|v| v.as_bytes().split(|b| *b == b':').find(|p| !p.is_empty()))
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Why a stage could not start, or a status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The status directory could not be created.
    #[error("cannot create the status directory {path}: {source}")]
    StatusDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The status file could not be written.
    #[error("cannot write the status file {path}: {source}")]
    StatusWrite {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The status file could not be read.
    #[error("cannot read the status file {path}: {source}")]
    StatusRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The status file is not valid JSON of the expected shape.
    #[error("the status file {path} is not valid: {source}")]
    StatusParse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stage name that cannot be a file name.
    #[error("invalid stage name {0:?}")]
    InvalidName(String),
    /// No randomness for a run id.
    #[error("cannot generate a run id: {0}")]
    Random(#[source] openssl::error::ErrorStack),
}

impl StageError {
    /// The exit code a binary should end with on this error.
    pub fn exit(&self) -> Exit {
        match self {
            StageError::InvalidName(_) => Exit::Usage,
            _ => Exit::Environment,
        }
    }
}

/// How a run ended; given to [`Stage::finish`]. See the module docs for the result mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The exit code.
    pub exit: Exit,
    /// With [`Exit::Failed`]: the stage recorded its work but part of it failed
    /// (result `partial`). Ignored with any other exit code.
    pub partial: bool,
    /// One line for humans (newlines are replaced by spaces).
    pub summary: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Stage-specific numbers for the status file (`null` if none).
    pub figures: serde_json::Value,
}

impl Outcome {
    /// Exit 0.
    pub fn success(summary: impl Into<String>) -> Outcome {
        Outcome {
            exit: Exit::Success,
            partial: false,
            summary: summary.into(),
            error: None,
            figures: serde_json::Value::Null,
        }
    }

    /// Exit 3, result `partial`: the work was recorded, but part of it failed (e.g. a
    /// snapshot was written without some unreadable files).
    pub fn partial(summary: impl Into<String>, error: impl Into<String>) -> Outcome {
        Outcome {
            exit: Exit::Failed,
            partial: true,
            summary: summary.into(),
            error: Some(error.into()),
            figures: serde_json::Value::Null,
        }
    }

    /// Any exit code, result `failure` (or `success` for [`Exit::Success`]).
    pub fn failure(exit: Exit, summary: impl Into<String>, error: impl Into<String>) -> Outcome {
        Outcome {
            exit,
            partial: false,
            summary: summary.into(),
            error: Some(error.into()),
            figures: serde_json::Value::Null,
        }
    }

    /// The same outcome with these figures.
    pub fn with_figures(mut self, figures: serde_json::Value) -> Outcome {
        self.figures = figures;
        self
    }

    /// The result recorded in the status file and the D-Bus signal.
    pub fn result(&self) -> StageResult {
        match self.exit {
            Exit::Success => StageResult::Success,
            Exit::Failed if self.partial => StageResult::Partial,
            _ => StageResult::Failure,
        }
    }
}

/// Where the `StageFinished` signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbusTarget {
    /// `CAIRN_NO_DBUS=1`: not sent.
    Off,
    /// The system bus.
    System,
    /// This bus address (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Address(String),
}

/// What a stage takes from its environment; [`StageEnv::from_process`] in production,
/// built by hand in tests so they never touch the process environment.
#[derive(Debug)]
pub(crate) struct StageEnv {
    pub(crate) invocation_id: Option<String>,
    pub(crate) notifier: Notifier,
    pub(crate) dbus: DbusTarget,
    pub(crate) dbus_timeout: Duration,
    /// `None`: choose journal or stderr from the process.
    pub(crate) sink: Option<Sink>,
    /// Whether stderr is a terminal (progress bars).
    pub(crate) tty: bool,
}

impl StageEnv {
    pub(crate) fn from_process() -> StageEnv {
        use std::io::IsTerminal;
        let no_dbus = std::env::var_os("CAIRN_NO_DBUS").is_some_and(|v| !v.is_empty() && v != "0");
        StageEnv {
            invocation_id: std::env::var("INVOCATION_ID").ok(),
            notifier: Notifier::from_env(),
            dbus: if no_dbus {
                DbusTarget::Off
            } else {
                DbusTarget::System
            },
            dbus_timeout: dbus::SIGNAL_TIMEOUT,
            sink: None,
            tty: std::io::stderr().is_terminal(),
        }
    }
}

/// One run of a stage: see the module documentation.
#[derive(Debug)]
pub struct Stage {
    name: &'static str,
    run_id: String,
    dirs: Dirs,
    host: String,
    started: DateTime<Utc>,
    logger: Arc<Logger>,
    notifier: Notifier,
    dbus: DbusTarget,
    dbus_timeout: Duration,
    tty: bool,
    finished: bool,
    /// Carried over from the previous status file.
    last_success: Option<DateTime<Utc>>,
    first_started: DateTime<Utc>,
}

impl Stage {
    /// Start a run of stage `name` (`snapshot`, `upload`…): set up logging (journal or
    /// stderr, installed process-wide), take the run id from `$INVOCATION_ID` (or a random
    /// 128-bit hex id), write the status file with result `running`, log `STAGE_STARTED`.
    /// Fails only if the status file cannot be written (the error names the path).
    pub fn start(name: &'static str, dirs: &Dirs) -> Result<Stage, StageError> {
        Stage::start_in(name, dirs, StageEnv::from_process())
    }

    pub(crate) fn start_in(
        name: &'static str,
        dirs: &Dirs,
        env: StageEnv,
    ) -> Result<Stage, StageError> {
        let run_id = run_id_from(env.invocation_id.as_deref())?;
        let identifier = format!("cairn-{name}");
        let context = vec![
            ("CAIRN_STAGE", name.to_owned()),
            ("CAIRN_RUN", run_id.clone()),
        ];
        let logger = Arc::new(match env.sink {
            Some(sink) => Logger::with_sink(&identifier, context, sink, false),
            None => Logger::detect(&identifier, context),
        });
        log::install(Arc::clone(&logger));
        let tty = env.tty && !logger.is_journal();
        let started = now();
        let mut stage = Stage {
            name,
            run_id,
            dirs: dirs.clone(),
            host: hostname(),
            started,
            logger,
            notifier: env.notifier,
            dbus: env.dbus,
            dbus_timeout: env.dbus_timeout,
            tty,
            // Until the running status is written, dropping must not record anything.
            finished: true,
            last_success: None,
            first_started: started,
        };
        if let Err(e) = status_path(dirs, name) {
            stage.error(&e.to_string());
            return Err(e);
        }
        let previous = read_status(dirs, name);
        if let Ok(Some(prev)) = &previous {
            stage.last_success = prev.last_success.or(match prev.result {
                StageResult::Success => prev.finished,
                _ => None,
            });
            stage.first_started = prev.first_started.unwrap_or(prev.started).min(started);
        }
        match previous {
            Ok(Some(prev)) if prev.result == StageResult::Running => stage.event(
                &msg::STAGE_INTERRUPTED,
                Priority::Warning,
                &format!(
                    "the previous {name} run {} (started {}, pid {}) has no recorded result: \
                     it was interrupted (or is still running)",
                    prev.run_id,
                    prev.started.to_rfc3339(),
                    prev.pid
                ),
                &[("CAIRN_PREVIOUS_RUN", &prev.run_id)],
            ),
            Ok(_) => {}
            Err(e) => stage.warn(&format!("{e}; it will be replaced")),
        }
        if let Err(e) = status::write_status(dirs, &stage.running_status()) {
            stage.error(&e.to_string());
            return Err(e);
        }
        stage.finished = false;
        stage.event(
            &msg::STAGE_STARTED,
            Priority::Info,
            &format!("{name} started (run {}, cairn {VERSION})", stage.run_id),
            &[("CAIRN_VERSION", VERSION)],
        );
        Ok(stage)
    }

    /// The stage name (`snapshot`).
    pub fn name(&self) -> &str {
        self.name
    }

    /// The run id (`CAIRN_RUN`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The directories the stage was started with.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// When the run started.
    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }

    /// When the first run of this stage recorded in the state directory started.
    pub fn first_started(&self) -> DateTime<Utc> {
        self.first_started
    }

    /// The run's logger (also installed process-wide).
    pub fn logger(&self) -> &Arc<Logger> {
        &self.logger
    }

    /// `READY=1` to the service manager (no-op without `$NOTIFY_SOCKET`).
    pub fn ready(&self) {
        self.notify(&[NotifyState::Ready]);
    }

    /// `STATUS=text`, shown by `systemctl status` (one line).
    pub fn status(&self, text: &str) {
        let line = one_line(text);
        self.notify(&[NotifyState::Status(&line)]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: ask for `d` more before the unit's timeout fires.
    pub fn extend_timeout(&self, d: Duration) {
        let line = notify::extend_timeout_line(d);
        self.notify(&[NotifyState::Custom(&line)]);
    }

    /// `WATCHDOG=1` (for `WatchdogSec=` daemons).
    pub fn watchdog(&self) {
        self.notify(&[NotifyState::Watchdog]);
    }

    fn notify(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = self.notifier.send(states) {
            self.logger
                .log(Priority::Debug, &format!("sd_notify failed: {e}"));
        }
    }

    /// Log an event with a `MESSAGE_ID` and extra journal fields (`("CAIRN_PATH", "/x")`).
    pub fn event(&self, id: &MessageId, prio: Priority, message: &str, fields: &[(&str, &str)]) {
        self.logger.event(id, prio, message, fields);
    }

    /// Log a line at `prio`.
    pub fn log(&self, prio: Priority, message: &str) {
        self.logger.log(prio, message);
    }

    /// Log at info.
    pub fn info(&self, message: &str) {
        self.logger.log(Priority::Info, message);
    }

    /// Log at notice.
    pub fn notice(&self, message: &str) {
        self.logger.log(Priority::Notice, message);
    }

    /// Log at warning.
    pub fn warn(&self, message: &str) {
        self.logger.log(Priority::Warning, message);
    }

    /// Log at error.
    pub fn error(&self, message: &str) {
        self.logger.log(Priority::Err, message);
    }

    /// Log at debug (shown only with `$CAIRN_DEBUG`).
    pub fn debug(&self, message: &str) {
        self.logger.log(Priority::Debug, message);
    }

    /// Progress of `what` (`total_bytes` if known): a bar on a terminal, `STATUS=` at most
    /// once a second under systemd, nothing otherwise.
    pub fn progress(&self, total_bytes: Option<u64>, what: &str) -> Progress {
        Progress::new(
            what,
            total_bytes,
            self.tty,
            &self.notifier,
            Some(Arc::clone(&self.logger)),
        )
    }

    /// End the run: write the final status file, log `STAGE_SUCCEEDED`, `STAGE_PARTIAL` or
    /// `STAGE_FAILED`, emit the D-Bus signal (best effort, at most ~2 s), and return the
    /// exit code to end the process with.
    pub fn finish(mut self, outcome: Outcome) -> i32 {
        self.finished = true;
        self.conclude(&outcome)
    }

    fn running_status(&self) -> StatusFile {
        StatusFile {
            stage: self.name.to_owned(),
            run_id: self.run_id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            version: VERSION.to_owned(),
            started: self.started,
            finished: None,
            result: StageResult::Running,
            exit_code: None,
            summary: String::new(),
            error: None,
            figures: serde_json::Value::Null,
            last_success: self.last_success,
            first_started: Some(self.first_started),
        }
    }

    fn conclude(&self, outcome: &Outcome) -> i32 {
        let code = outcome.exit.code();
        let result = outcome.result();
        let summary = one_line(&outcome.summary);
        let finished = now();
        let status = StatusFile {
            finished: Some(finished),
            last_success: if result == StageResult::Success {
                Some(finished)
            } else {
                self.last_success
            },
            result,
            exit_code: Some(code),
            summary: summary.clone(),
            error: outcome.error.clone(),
            figures: outcome.figures.clone(),
            ..self.running_status()
        };
        if let Err(e) = status::write_status(&self.dirs, &status) {
            self.error(&e.to_string());
        }

        let (id, prio, verb) = match result {
            StageResult::Success => (&msg::STAGE_SUCCEEDED, Priority::Notice, "succeeded"),
            StageResult::Partial => (&msg::STAGE_PARTIAL, Priority::Warning, "partially failed"),
            StageResult::Running | StageResult::Failure => {
                (&msg::STAGE_FAILED, Priority::Err, "failed")
            }
        };
        let mut message = format!("{} {verb}", self.name);
        if code != 0 {
            message.push_str(&format!(" (exit {})", outcome.exit));
        }
        if !summary.is_empty() {
            message.push_str(": ");
            message.push_str(&summary);
        }
        if let Some(err) = &outcome.error {
            message.push_str(if summary.is_empty() { ": " } else { "; " });
            message.push_str(err);
        }
        let code_text = code.to_string();
        let mut fields = vec![
            ("CAIRN_RESULT", result.as_str()),
            ("CAIRN_EXIT_CODE", code_text.as_str()),
        ];
        if let Some(err) = &outcome.error {
            fields.push(("CAIRN_ERROR", err.as_str()));
        }
        self.event(id, prio, &message, &fields);
        self.status(&format!("{verb}: {summary}"));

        let address = match &self.dbus {
            DbusTarget::Off => return code,
            DbusTarget::System => None,
            DbusTarget::Address(a) => Some(a.as_str()),
        };
        if let Err(e) = dbus::emit_stage_finished_at(address, &status, self.dbus_timeout) {
            self.notice(&format!("StageFinished D-Bus signal not sent: {e}"));
        }
        code
    }
}

impl Drop for Stage {
    /// A run that ends without [`Stage::finish`] is recorded as a failure.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let why = if std::thread::panicking() {
            "the stage panicked"
        } else {
            "the stage ended without recording an outcome"
        };
        self.conclude(&Outcome::failure(
            Exit::Failed,
            "internal error",
            format!("{why} (this is a bug in cairn)"),
        ));
    }
}

/// `$INVOCATION_ID` if it is a 128-bit hex id, else a random one.
pub(crate) fn run_id_from(invocation_id: Option<&str>) -> Result<String, StageError> {
    if let Some(id) = invocation_id {
        let id = id.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_ascii_lowercase());
        }
    }
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).map_err(StageError::Random)?;
    Ok(hex::encode(bytes))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Now, to the millisecond (status files stay readable).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
