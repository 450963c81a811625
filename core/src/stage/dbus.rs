//! The `org.cairn.Pipeline1.StageFinished` D-Bus signal each stage emits when it ends.
//!
//! The signal lets the heartbeat react at once instead of polling status files; the status
//! file stays the source of truth, so the signal is strictly best effort. It goes to the
//! system bus (zbus's blocking API, which honours `$DBUS_SYSTEM_BUS_ADDRESS`) from a
//! helper thread that the caller waits for at most [`SIGNAL_TIMEOUT`]: a missing or wedged
//! bus costs at most that long and never fails the stage. `CAIRN_NO_DBUS=1` skips it.

use std::sync::mpsc;
use std::time::Duration;

use super::status::StatusFile;

/// Interface of the signal.
pub const INTERFACE: &str = "org.cairn.Pipeline1";
/// Object path the signal is emitted from.
pub const OBJECT_PATH: &str = "/org/cairn/Pipeline";
/// Signal name; arguments `(stage s, result s, run_id s, summary_json s)`.
pub const SIGNAL: &str = "StageFinished";
/// How long a stage waits for the bus before giving up on the signal.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the signal was not sent (reported, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No bus to talk to, or it refused us.
    #[error("cannot connect to the D-Bus bus: {0}")]
    Connect(#[source] zbus::Error),
    /// Connected but the signal could not be sent.
    #[error("cannot emit the D-Bus signal: {0}")]
    Emit(#[source] zbus::Error),
    /// The bus did not answer in time.
    #[error("the D-Bus bus did not answer within {0:?}")]
    TimedOut(Duration),
    /// The helper thread could not be started.
    #[error("cannot start the D-Bus thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Emit `StageFinished` for `status` on the system bus, waiting at most [`SIGNAL_TIMEOUT`].
pub fn emit_stage_finished(status: &StatusFile) -> Result<(), SignalError> {
    emit_stage_finished_at(None, status, SIGNAL_TIMEOUT)
}

/// Emit `StageFinished` on the bus at `address` (a D-Bus address such as
/// `unix:path=/run/dbus/system_bus_socket`), or the system bus when `None`, waiting at
/// most `timeout`. On timeout the helper thread is left to finish on its own.
pub fn emit_stage_finished_at(
    address: Option<&str>,
    status: &StatusFile,
    timeout: Duration,
) -> Result<(), SignalError> {
    let address = address.map(str::to_owned);
    let body = (
        status.stage.clone(),
        status.result.as_str().to_owned(),
        status.run_id.clone(),
        status.to_json(),
    );
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cairn-dbus".into())
        .spawn(move || {
            let _ = tx.send(send_signal(address.as_deref(), &body));
        })
        .map_err(SignalError::Thread)?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(SignalError::TimedOut(timeout)),
    }
}

fn send_signal(
    address: Option<&str>,
    body: &(String, String, String, String),
) -> Result<(), SignalError> {
    let conn = match address {
        None => zbus::blocking::Connection::system(),
        Some(a) => zbus::blocking::connection::Builder::address(a).and_then(|b| b.build()),
    }
    .map_err(SignalError::Connect)?;
    conn.emit_signal(None::<&str>, OBJECT_PATH, INTERFACE, SIGNAL, body)
        .map_err(SignalError::Emit)?;
    // Closing flushes and says goodbye; the signal is already written either way.
    let _ = conn.close();
    Ok(())
}
