//! Logging for stages and tools: the journal's native protocol when stderr is connected to
//! journald, plain lines on stderr otherwise.
//!
//! systemd documents how a service finds out that its stderr goes to the journal:
//! `$JOURNAL_STREAM` holds the `device:inode` of that stream, and it only counts if stderr's
//! `fstat` matches (a child that inherited the variable but writes elsewhere must not
//! switch). Then every line is sent as a structured entry (`SYSLOG_IDENTIFIER`,
//! `CAIRN_STAGE`, `CAIRN_RUN`, `MESSAGE_ID`, `PRIORITY`, the event's own fields); otherwise
//! it becomes `cairn-snapshot: warning: message` on stderr, coloured only on a terminal.
//! A journal send that fails falls back to stderr, so no line is lost silently.
//!
//! One logger is installed process-wide ([`init_logging`] or `Stage::start`), so library
//! code can log through [`log`] and [`log_event`] and still carry the run's fields.
//! Debug lines are dropped unless `$CAIRN_DEBUG` is set (to anything but `0`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use indicatif::WeakProgressBar;

use super::msg::MessageId;

/// Importance of a log line; the journal's `PRIORITY` (syslog levels 3 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Something failed (syslog `err`, 3).
    Err,
    /// Something is wrong but the work goes on (4).
    Warning,
    /// Normal but significant: results, repairs (5).
    Notice,
    /// Progress and routine facts (6).
    Info,
    /// Details for debugging; shown only with `$CAIRN_DEBUG` (7).
    Debug,
}

impl Priority {
    /// The syslog level number written to the journal's `PRIORITY=` field.
    pub fn syslog_level(self) -> u8 {
        match self {
            Priority::Err => 3,
            Priority::Warning => 4,
            Priority::Notice => 5,
            Priority::Info => 6,
            Priority::Debug => 7,
        }
    }

    fn journal(self) -> libsystemd::logging::Priority {
        use libsystemd::logging::Priority as P;
        match self {
            Priority::Err => P::Error,
            Priority::Warning => P::Warning,
            Priority::Notice => P::Notice,
            Priority::Info => P::Info,
            Priority::Debug => P::Debug,
        }
    }
}

/// Where a logger's lines go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Native journal protocol.
    Journal,
    /// Plain lines on stderr, with ANSI colours when `color`.
    Stderr { color: bool },
    /// Tests: every entry as the journal fields it would carry (`MESSAGE`, `PRIORITY` first).
    #[cfg(test)]
    Memory(MemoryLog),
}

/// Captured entries, each as its journal fields in order.
#[cfg(test)]
pub(crate) type MemoryLog = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A configured log destination with the fields every entry carries.
pub struct Logger {
    identifier: String,
    context: Vec<(&'static str, String)>,
    sink: Sink,
    debug: bool,
    /// The terminal progress bar on screen, if any: stderr lines are printed "around" it.
    bar: Mutex<Option<WeakProgressBar>>,
    /// Set after the first failed journal send (reported once).
    journal_failed: AtomicBool,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("identifier", &self.identifier)
            .field("context", &self.context)
            .field("sink", &self.sink)
            .field("debug", &self.debug)
            .finish_non_exhaustive()
    }
}

/// Journal fields the logger sets itself; callers' fields with these names are dropped.
const RESERVED: &[&str] = &[
    "MESSAGE",
    "PRIORITY",
    "MESSAGE_ID",
    "SYSLOG_IDENTIFIER",
    "CAIRN_STAGE",
    "CAIRN_RUN",
];

impl Logger {
    /// A logger for `identifier` (the `SYSLOG_IDENTIFIER`, e.g. `cairn-snapshot`), with
    /// `context` fields on every entry; the sink is chosen from the process environment.
    pub fn detect(identifier: &str, context: Vec<(&'static str, String)>) -> Logger {
        let sink = if stderr_is_journal() {
            Sink::Journal
        } else {
            Sink::Stderr {
                color: stderr_wants_color(),
            }
        };
        let debug = std::env::var_os("CAIRN_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
        Logger::with_sink(identifier, context, sink, debug)
    }

    pub(crate) fn with_sink(
        identifier: &str,
        context: Vec<(&'static str, String)>,
        sink: Sink,
        debug: bool,
    ) -> Logger {
        Logger {
            identifier: identifier.to_owned(),
            context,
            sink,
            debug,
            bar: Mutex::new(None),
            journal_failed: AtomicBool::new(false),
        }
    }

    /// The `SYSLOG_IDENTIFIER` (also the stderr prefix).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Whether entries go to the journal (rather than stderr).
    pub fn is_journal(&self) -> bool {
        matches!(self.sink, Sink::Journal)
    }

    /// Log a plain line.
    pub fn log(&self, prio: Priority, message: &str) {
        self.emit(None, prio, message, &[]);
    }

    /// Log an event an operator may filter on: `MESSAGE_ID` plus extra journal fields
    /// (`("CAIRN_PATH", "/etc/x")`). On stderr only the message is printed, so it must be
    /// self-contained.
    pub fn event(&self, id: &MessageId, prio: Priority, message: &str, fields: &[(&str, &str)]) {
        self.emit(Some(id), prio, message, fields);
    }

    fn emit(&self, id: Option<&MessageId>, prio: Priority, message: &str, fields: &[(&str, &str)]) {
        if prio == Priority::Debug && !self.debug {
            return;
        }
        match &self.sink {
            Sink::Journal => {
                let all = self.journal_fields(id, fields);
                let sent =
                    libsystemd::logging::journal_send(prio.journal(), message, all.into_iter());
                if let Err(e) = sent {
                    if !self.journal_failed.swap(true, Ordering::Relaxed) {
                        self.write_stderr(&format_line(
                            &self.identifier,
                            Priority::Warning,
                            &format!("cannot log to the journal ({e}); logging to stderr"),
                            false,
                        ));
                    }
                    self.write_stderr(&format_line(&self.identifier, prio, message, false));
                }
            }
            Sink::Stderr { color } => {
                self.write_stderr(&format_line(&self.identifier, prio, message, *color));
            }
            #[cfg(test)]
            Sink::Memory(entries) => {
                let mut entry = vec![
                    ("MESSAGE".to_owned(), message.to_owned()),
                    ("PRIORITY".to_owned(), prio.syslog_level().to_string()),
                ];
                entry.extend(
                    self.journal_fields(id, fields)
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned())),
                );
                entries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(entry);
            }
        }
    }

    /// The fields sent besides `MESSAGE` and `PRIORITY`, in order.
    fn journal_fields<'a>(
        &'a self,
        id: Option<&'a MessageId>,
        fields: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut all = Vec::with_capacity(3 + self.context.len() + fields.len());
        all.push(("SYSLOG_IDENTIFIER", self.identifier.as_str()));
        all.extend(self.context.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(id) = id {
            all.push(("MESSAGE_ID", id.id));
        }
        all.extend(
            fields
                .iter()
                .copied()
                .filter(|(k, _)| !RESERVED.contains(k)),
        );
        all
    }

    fn write_stderr(&self, line: &str) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(WeakProgressBar::upgrade);
        let write = || {
            // Nowhere else to report a failing stderr; the exit code still tells.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        };
        match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(write),
            _ => write(),
        }
    }

    /// Register the progress bar currently drawn on stderr (see [`Logger::write_stderr`]).
    pub(crate) fn set_bar(&self, bar: Option<WeakProgressBar>) {
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = bar;
    }
}

/// One stderr line: `identifier: warning: message\n`. Control characters other than
/// newline and tab are escaped, so a hostile file name cannot drive the terminal.
pub(crate) fn format_line(identifier: &str, prio: Priority, message: &str, color: bool) -> String {
    let (label, ansi) = match prio {
        Priority::Err => ("error: ", "\x1b[1;31m"),
        Priority::Warning => ("warning: ", "\x1b[1;33m"),
        Priority::Notice | Priority::Info => ("", ""),
        Priority::Debug => ("debug: ", "\x1b[2m"),
    };
    let mut line = String::with_capacity(identifier.len() + label.len() + message.len() + 16);
    line.push_str(identifier);
    line.push_str(": ");
    if color && !label.is_empty() {
        line.push_str(ansi);
        line.push_str(label.trim_end());
        line.push_str("\x1b[0m ");
    } else {
        line.push_str(label);
    }
    for c in message.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            line.push_str(&c.escape_unicode().to_string());
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    line
}

/// Whether `$JOURNAL_STREAM` (`device:inode`) names the stream with stderr's device and
/// inode numbers, as systemd documents for upgrading to the native protocol.
pub fn journal_stream_matches(
    journal_stream: Option<&str>,
    stderr_dev: libc::dev_t,
    stderr_ino: libc::ino_t,
) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    matches!(
        (dev.parse::<libc::dev_t>(), ino.parse::<libc::ino_t>()),
        (Ok(d), Ok(i)) if d == stderr_dev && i == stderr_ino
    )
}

/// Whether this process's stderr is connected to journald.
pub fn stderr_is_journal() -> bool {
    let stream = std::env::var("JOURNAL_STREAM").ok();
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => journal_stream_matches(stream.as_deref(), st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

fn stderr_wants_color() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

static GLOBAL: RwLock<Option<Arc<Logger>>> = RwLock::new(None);

/// Set up logging for a tool that is not a stage (e.g. `cairn`): `identifier` becomes the
/// `SYSLOG_IDENTIFIER` and the stderr prefix. Journal when under journald, else stderr.
pub fn init_logging(identifier: &str) {
    install(Arc::new(Logger::detect(identifier, Vec::new())));
}

/// How a stage binary ends: run the stage and turn its code into the process's exit
/// status; a panic (logged by [`install_panic_logging`], recorded as a failure in the
/// status file as the stage unwinds) ends as exit 3, as the stage contract says, not Rust's
/// 101, and so does a code outside 0–255.
pub fn exit_with(stage: impl FnOnce() -> i32 + std::panic::UnwindSafe) -> std::process::ExitCode {
    let code = std::panic::catch_unwind(stage).unwrap_or(3);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(3))
}

/// Log a panic through the process-wide logger (the journal under systemd) before the
/// default hook prints it, so a crash at any point of a stage is on record with its
/// location, whatever stderr is connected to (once, not twice). Safe to call more than
/// once.
pub fn install_panic_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            log(
                Priority::Err,
                &format!("internal error (panic){location}: {payload}; this is a bug in cairn"),
            );
            // The line above already reached stderr or the journal; the default hook adds
            // only a backtrace, when one is asked for.
            if std::env::var_os("RUST_BACKTRACE").is_some() {
                previous(info);
            }
        }));
    });
}

/// Make `logger` the process-wide one used by [`log`] and [`log_event`].
pub(crate) fn install(logger: Arc<Logger>) {
    *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(logger);
}

/// The process-wide logger: the one installed last, or a default `cairn` one.
pub fn logger() -> Arc<Logger> {
    if let Some(l) = GLOBAL.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Arc::clone(l);
    }
    static DEFAULT: OnceLock<Arc<Logger>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| Arc::new(Logger::detect("cairn", Vec::new()))))
}

/// Log a plain line through the process-wide logger.
pub fn log(prio: Priority, message: &str) {
    logger().log(prio, message);
}

/// Log an event with a `MESSAGE_ID` and extra fields through the process-wide logger.
pub fn log_event(id: &MessageId, prio: Priority, message: &str, fields: &[(&str, &str)]) {
    logger().event(id, prio, message, fields);
}

#[cfg(test)]
mod tests {
    use super::super::msg;
    use super::*;

    #[test]
    fn journal_detection_compares_device_and_inode() {
        assert!(journal_stream_matches(Some("8:12345"), 8, 12345));
        assert!(journal_stream_matches(Some("8:12345\n"), 8, 12345));
        assert!(!journal_stream_matches(Some("8:12345"), 8, 12346));
        assert!(!journal_stream_matches(Some("9:12345"), 8, 12345));
        assert!(!journal_stream_matches(None, 8, 12345));
        assert!(!journal_stream_matches(Some(""), 0, 0));
        assert!(!journal_stream_matches(Some("8"), 8, 0));
        assert!(!journal_stream_matches(Some("x:y"), 0, 0));
        assert!(!journal_stream_matches(Some("8:-1"), 8, 0));
    }

    #[test]
    fn stderr_lines_have_prefix_and_no_ansi_without_color() {
        assert_eq!(
            format_line("cairn-snapshot", Priority::Warning, "disk is slow", false),
            "cairn-snapshot: warning: disk is slow\n"
        );
        assert_eq!(
            format_line("cairn-snapshot", Priority::Info, "started", false),
            "cairn-snapshot: started\n"
        );
        assert_eq!(
            format_line("cairn", Priority::Err, "boom", false),
            "cairn: error: boom\n"
        );
        let plain = format_line("cairn", Priority::Err, "a\x1b[2Jb", false);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = format_line("cairn", Priority::Err, "boom", true);
        assert!(
            coloured.contains("\x1b[1;31merror:\x1b[0m boom"),
            "{coloured:?}"
        );
    }

    #[test]
    fn journal_entries_carry_context_and_message_id() {
        let mem = Arc::new(Mutex::new(Vec::new()));
        let l = Logger::with_sink(
            "cairn-snapshot",
            vec![
                ("CAIRN_STAGE", "snapshot".into()),
                ("CAIRN_RUN", "abc".into()),
            ],
            Sink::Memory(mem.clone()),
            false,
        );
        l.event(
            &msg::FILE_UNREADABLE,
            Priority::Warning,
            "cannot read /etc/x",
            &[("CAIRN_PATH", "/etc/x"), ("CAIRN_STAGE", "forged")],
        );
        l.log(Priority::Debug, "hidden without CAIRN_DEBUG");
        let entries = mem.lock().unwrap();
        assert_eq!(entries.len(), 1);
        let e: Vec<(&str, &str)> = entries[0]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            e,
            vec![
                ("MESSAGE", "cannot read /etc/x"),
                ("PRIORITY", "4"),
                ("SYSLOG_IDENTIFIER", "cairn-snapshot"),
                ("CAIRN_STAGE", "snapshot"),
                ("CAIRN_RUN", "abc"),
                ("MESSAGE_ID", msg::FILE_UNREADABLE.id),
                ("CAIRN_PATH", "/etc/x"),
            ]
        );
    }
}
