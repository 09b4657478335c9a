//! Processes the benchmarks start: logging warnings only, output discarded, and stopped by the
//! pid we hold (SIGTERM, then reaped).

use std::process::{Child, Command, Stdio};

/// Starts `cmd` (a vigie binary or our own sink); panics with `what` when it cannot start.
pub fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.env("VIGIE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"))
}

/// Sends SIGTERM to the child and reaps it.
pub fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = child.wait();
}
