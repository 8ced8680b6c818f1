//! W1 and W2 timing: interleaved rounds over rows that each live in a process of their own.
//!
//! Each row's allocator runs in a child of this binary (`--child serve ROW WORKLOAD`) that
//! keeps its live set between batches and runs a batch whenever the report asks. Rows in
//! one process disturbed each other: the report's mixed W1 for the first codeheap heap made
//! read 1.1 to 1.2 µs with the others beside it and 0.4 µs alone, while other rows moved
//! less (the address space, and the kernel's work on it, is shared by every row's mappings).
//! Rounds still rotate over the rows, so load changes on a shared machine hit every row
//! alike; a row's figure is its median.

use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use codeheap_bench::Row;
use codeheap_bench::workload::{MakeStepper, Workload};

use crate::{Plan, death};

/// The child's side: builds the row's stepper, then runs a batch of as many steps as each
/// line of standard input asks, answering `TOOK NANOS`, or `PANIC MESSAGE` and exiting (a
/// panicked allocator's state is broken: the process goes without running its
/// destructors).
pub(crate) fn serve(row: Row, workload: Workload) {
    let mut stepper = row.visit(MakeStepper::new(workload)).expect("available");
    // Panics from here on are answered, not printed.
    std::panic::set_hook(Box::new(|_| {}));
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let steps: u64 = line.expect("stdin").trim().parse().expect("a step count");
        match catch_unwind(AssertUnwindSafe(|| stepper.run(steps))) {
            Ok(took) => writeln!(out, "TOOK {}", took.as_nanos()).expect("stdout"),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                writeln!(out, "PANIC {message}").expect("stdout");
                out.flush().expect("stdout");
                std::process::exit(0);
            }
        }
        out.flush().expect("stdout");
    }
}

/// A row's serving child, as the report drives it.
struct Server {
    /// `None` once it has been waited for.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Steps run so far.
    done: u64,
    /// Why it stopped answering, once it has.
    failed: Option<String>,
}

impl Server {
    fn start(row: Row, workload: Workload) -> Server {
        let exe = std::env::current_exe().expect("the report knows its path");
        let mut child = Command::new(exe)
            .env("RUST_BACKTRACE", "0")
            .args(["--child", "serve", &row.key(), &workload.key()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the report can run itself");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Server {
            child: Some(child),
            stdin,
            stdout,
            done: 0,
            failed: None,
        }
    }

    /// Nanoseconds a batch of `steps` took, or `None` once the row has failed.
    fn run(&mut self, steps: u64) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        let stdin = self.stdin.as_mut().expect("open until the end");
        let mut answer = String::new();
        // A write or read that fails means the child is gone: its exit says why.
        let _ = writeln!(stdin, "{steps}")
            .and_then(|()| stdin.flush())
            .and_then(|()| self.stdout.read_line(&mut answer));
        let within = self.done + steps;
        if let Some(nanos) = answer.trim().strip_prefix("TOOK ") {
            self.done = within;
            return Some(nanos.parse().expect("nanoseconds"));
        }
        self.failed = Some(match answer.trim().strip_prefix("PANIC ") {
            Some(message) => format!("panicked within {within} steps: {message}"),
            None => {
                self.stdin = None;
                let output = (self.child.take().expect("not waited for yet"))
                    .wait_with_output()
                    .expect("the child can be waited for");
                let stderr = String::from_utf8_lossy(&output.stderr);
                format!(
                    "{} within {within} steps",
                    death(output.status, "", &stderr)
                )
            }
        });
        None
    }

    /// Runs batches, each twice as long as the one before until one takes 10 ms, until they
    /// have taken `time` together: the live set and the allocator reach their steady state
    /// before anything is timed. (Codeheap's mixed W1 takes about 450,000 steps to settle,
    /// from about 400 to 290 ns per step: 1,000 live blocks' worth of pages committed,
    /// filled and kept.)
    fn warm_up(&mut self, time: Duration) {
        let (mut spent, mut steps) = (Duration::ZERO, 1000);
        while spent < time {
            let Some(nanos) = self.run(steps) else {
                return;
            };
            let took = Duration::from_nanos(nanos);
            spent += took;
            if took < Duration::from_millis(10) {
                steps *= 2;
            }
        }
    }

    /// Closes the child's input, which ends it, and waits for it.
    fn finish(mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// Median nanoseconds per step of each row, timed in interleaved rounds; a row whose
/// allocator panics or crashes is dropped from later rounds and reported with the step it
/// reached.
pub(crate) fn time_rows(rows: &[Row], workload: Workload, plan: Plan) -> Vec<Result<f64, String>> {
    let mut servers: Vec<Server> = rows
        .iter()
        .map(|&row| Server::start(row, workload))
        .collect();
    // Warm up, then calibrate: steps per batch so that a batch takes about `plan.batch`.
    let steps: Vec<u64> = servers
        .iter_mut()
        .map(|server| {
            server.warm_up(plan.warm_up);
            server.run(1000).map_or(0, |nanos| {
                let once = (nanos as f64 / 1000.0).max(1.0);
                ((plan.batch.as_nanos() as f64 / once) as u64).clamp(100, 50_000_000)
            })
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(plan.rounds); rows.len()];
    for round in 0..plan.rounds {
        for k in 0..rows.len() {
            let i = (round + k) % rows.len();
            if let Some(nanos) = servers[i].run(steps[i]) {
                samples[i].push(nanos as f64 / steps[i] as f64);
            }
        }
    }
    servers
        .into_iter()
        .zip(samples)
        .map(|(mut server, samples)| {
            let failed = server.failed.take();
            server.finish();
            match failed {
                Some(why) => Err(why),
                None => Ok(median(samples)),
            }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
