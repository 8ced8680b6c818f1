//! The seeds' scenario under every W^X strategy this machine offers, and on the simulated
//! Apple Silicon OS: a background compiler thread (permanently in write mode) emits
//! functions of different sizes onto shared pages while the main thread keeps calling the
//! finished ones. Each strategy runs in a child process, so a crash (the `Protect` race) is
//! reported rather than ending the demo.
//!
//! `cargo run --release --example jit_scenario`

#[path = "../tests/common/scenario.rs"]
mod scenario;

use std::collections::BTreeMap;
use std::process::Command;

use codeheap::{Heap, HeapConfig, Os, SimOs, WxStrategy};

const FUNCTIONS: usize = 256;
const MIN_CALLS: u64 = 100;

/// The setups the demo runs: a label and whether it is simulated.
fn setups() -> Vec<(String, Option<WxStrategy>)> {
    let mut setups: Vec<(String, Option<WxStrategy>)> = Vec::new();
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    for strategy in WxStrategy::ALL {
        if Heap::with_strategy(strategy).is_ok() {
            setups.push((format!("native {strategy}"), Some(strategy)));
        }
    }
    setups.push(("simulated apple map-jit".to_string(), None));
    setups
}

/// Runs the scenario in this process and prints its numbers as one `key=value` line.
fn child(strategy: Option<WxStrategy>) {
    fn report<O: Os>(heap: &Heap<O>) {
        let outcome = scenario::run(heap, FUNCTIONS, MIN_CALLS);
        let s = &outcome.stats;
        let pages: usize = s.buckets.iter().map(|b| b.pages).sum();
        println!(
            "RESULT compiled={} calls={} wrong={} faults={} made={} skipped={} pages={} large={} \
             requested={} allocated={} committed={} reserved={} fills={} flushes={}",
            outcome.compiled,
            outcome.calls,
            outcome.wrong,
            outcome.faults,
            s.protect_calls_made,
            s.protect_calls_skipped,
            pages,
            s.large_blocks,
            s.requested_bytes,
            s.allocated_bytes,
            s.committed_bytes,
            s.reserved_bytes,
            s.fills,
            s.icache_flushes,
        );
    }
    match strategy {
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        Some(strategy) => report(&Heap::with_strategy(strategy).expect("checked available")),
        _ => report(&Heap::with_config(SimOs::apple(), HeapConfig::default()).expect("sim")),
    }
}

fn parse(stdout: &str) -> Option<BTreeMap<String, u64>> {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))?;
    line.split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, index] = args.as_slice()
        && flag == "--child"
    {
        let setup = &setups()[index.parse::<usize>().expect("an index")];
        return child(setup.1);
    }

    println!(
        "{FUNCTIONS} functions compiled by a background thread in permanent write mode while the \
         main thread calls each finished one at least {MIN_CALLS} times.\n"
    );
    println!(
        "{:<24} {:>8} {:>9} {:>6} {:<16} {:>6} {:>7} {:>6} {:>10} {:>10} {:>10} {:>6}",
        "setup",
        "compiled",
        "calls ok",
        "wrong",
        "faults",
        "prot",
        "skipped",
        "pages",
        "requested",
        "allocated",
        "committed",
        "fills"
    );
    let exe = std::env::current_exe().expect("the demo knows its path");
    for (index, (label, _)) in setups().iter().enumerate() {
        let output = Command::new(&exe)
            .args(["--child", &index.to_string()])
            .output()
            .expect("the demo can run itself");
        let stdout = String::from_utf8_lossy(&output.stdout);
        match parse(&stdout) {
            Some(r) => println!(
                "{:<24} {:>8} {:>9} {:>6} {:<16} {:>6} {:>7} {:>6} {:>10} {:>10} {:>10} {:>6}",
                label,
                r["compiled"],
                r["calls"],
                r["wrong"],
                r["faults"],
                r["made"],
                r["skipped"],
                r["pages"] + r["large"],
                r["requested"],
                r["allocated"],
                r["committed"],
                r["fills"]
            ),
            None => println!(
                "{label:<24} {:>8} {:>9} {:>6} {:<16}",
                "-",
                "-",
                "-",
                crash(&output.status)
            ),
        }
    }
    println!(
        "\nprot/skipped: protection changes that made a system call / that needed none.\n\
         pages: heap pages holding the functions (small-block pages plus large blocks).\n\
         Protect flips a shared page to read-write while another thread runs code on it: the \
         race the seeds describe. MapJit and DualMap never change a protection."
    );
}

#[cfg(unix)]
fn crash(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) if signal == libc::SIGSEGV => "crashed: SIGSEGV".to_string(),
        Some(signal) if signal == libc::SIGBUS => "crashed: SIGBUS".to_string(),
        Some(signal) => format!("crashed: signal {signal}"),
        None => format!("failed: {status}"),
    }
}

#[cfg(not(unix))]
fn crash(status: &std::process::ExitStatus) -> String {
    format!("failed: {status}")
}
