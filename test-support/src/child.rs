//! Running a test of this binary in a child process, so a crash is a result to assert on.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells a child which role to play.
pub const ROLE: &str = "CODEHEAP_CHILD_ROLE";

/// A command running this test binary, under the cross runner if tests run under one
/// (qemu-user does not run foreign binaries a guest execs by itself).
fn this_binary() -> Command {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let runner_var = if cfg!(target_arch = "aarch64") {
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
    } else {
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER"
    };
    match std::env::var(runner_var)
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut command = Command::new(words.next().expect("non-empty"));
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    }
}

/// Runs test `name` of this binary in a child with `ROLE=role`; kills it after `limit`.
/// Returns its exit status, or `None` if it had to be killed.
pub fn run(name: &str, role: &str, limit: Duration) -> Option<ExitStatus> {
    let mut child = this_binary()
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test binary can be spawned");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The role this process plays, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}
