//! Running a piece of the test inside another process's network namespace — a booted
//! test container's, which has its own loopback and nothing else.
//!
//! Design: `setns(2)` changes the namespace of the calling thread only, so
//! [`run_in`] does it on a fresh thread and returns the closure's value; sockets made
//! there stay in that namespace for their whole life, whatever thread uses them later.
//! [`command`] is the same for a child process: `nsenter --net=/proc/PID/ns/net`, which
//! keeps the test's filesystem view (only the network differs).

use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Run `f` on a new thread that has joined `pid`'s network namespace.
pub fn run_in<T: Send + 'static>(
    pid: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || {
        // SAFETY: a valid namespace file descriptor and a namespace type constant.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
}

/// `program` as a command that runs in `pid`'s network namespace (through `nsenter`).
pub fn command(pid: i32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .arg(program);
    c
}
