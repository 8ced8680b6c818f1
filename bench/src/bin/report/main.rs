//! Runs every workload over every row in one run and prints the tables of
//! `docs/benchmarks.md`: W1/W2 times and their ratios, W3 memory, W4 races, the overlap
//! check, and the targets of the benchmarks issue with pass/miss.
//!
//! ```text
//! cargo run --release -p codeheap-bench --bin bench-report             # full run (minutes)
//! cargo run --release -p codeheap-bench --bin bench-report -- --smoke  # CI: seconds each
//! cargo run --release -p codeheap-bench --bin bench-report -- --plots docs
//! ```
//!
//! Every row runs in child processes of this binary (`--child ...`), so one row's
//! mappings and state cannot slow another, memory figures are the row's alone, and a crash
//! is a result. W1 and W2 are timed in interleaved rounds: each round runs a batch of every
//! row (each in its own long-lived child, see `rounds.rs`), in a rotating order, so drift in
//! the machine's load hits all rows alike; a row's figure is its median over the rounds,
//! which start once every row has run alone long enough to reach its steady state.
//! W4's cases run in rounds as well, one child process per case (`w4.rs`).

mod args;
mod plot;
mod rounds;
mod w4;

use std::collections::BTreeMap;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use codeheap::{HeapConfig, WxStrategy};
use codeheap_bench::memory::{self, Churn, Sample};
use codeheap_bench::overlap::OverlapCheck;
use codeheap_bench::peers::CodeHeap;
use codeheap_bench::race::{self, Race, Writer};
use codeheap_bench::sizes::Sizes;
use codeheap_bench::workload::{EMIT_BYTES, MakeStepper, Stepper, W1, Workload};

use args::Invocation;
use codeheap_bench::{Row, workload};
use rounds::time_rows;

/// How long everything runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    smoke: bool,
    /// Interleaved rounds of W1/W2.
    rounds: usize,
    /// Target time of one batch of one row.
    batch: Duration,
    /// Time each row runs its workload before its batches are timed.
    warm_up: Duration,
    w3_live: usize,
    w3_steps: u64,
    w4: Duration,
    /// Interleaved rounds of the W4 cases.
    w4_rounds: usize,
    overlap_steps: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            smoke: false,
            rounds: 21,
            batch: Duration::from_millis(25),
            warm_up: Duration::from_millis(300),
            w3_live: memory::LIVE,
            w3_steps: memory::STEPS,
            w4: Duration::from_secs(2),
            w4_rounds: 3,
            overlap_steps: 200_000,
        }
    }

    fn smoke() -> Plan {
        Plan {
            smoke: true,
            rounds: 5,
            batch: Duration::from_millis(5),
            warm_up: Duration::from_millis(5),
            w3_live: 2_000,
            w3_steps: 20_000,
            w4: Duration::from_millis(250),
            w4_rounds: 1,
            overlap_steps: 10_000,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&args) {
        Ok(Invocation::Report { smoke, plots }) => {
            let plan = if smoke { Plan::smoke() } else { Plan::full() };
            report(plan, plots.as_deref());
        }
        Ok(Invocation::Child(work)) => child(&work),
        Ok(Invocation::Help) => println!("{}", args::USAGE),
        Err(refused) => {
            eprintln!("bench-report: {refused}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    }
}

// ---- child processes ------------------------------------------------------------------

/// `--child w3 ROW LIVE STEPS EVERY` |
/// `--child w4 ROW MILLIS emits|sleeps|spins [CALLS_PER_PICK]` |
/// `--child serve ROW WORKLOAD` (batches for the W1/W2 rounds, see `rounds.rs`) |
/// `--child overlap ROW STEPS` | `--child run ROW w1|w2|w1:BYTES|w2:BYTES STEPS [LIVE]`
/// (one workload alone, mixed sizes or one fixed size, over 1,000 live blocks or `LIVE`,
/// to profile it: `valgrind --tool=callgrind bench-report --child run codeheap-dual-map w1
/// 20000`) |
/// `--child keep PAGES STEPS [LIVE]` (the mixed W1 alone on a dual-map heap that keeps up
/// to `PAGES` free pages committed, over 1,000 live blocks or `LIVE`: what the kept-page
/// cap trades, and how much the page allocator decommits)
fn child(args: &[String]) {
    let number = |i: usize| args[i].parse::<u64>().expect("a number");
    if args[0] == "keep" {
        let live = args.get(3).map_or(workload::LIVE, |_| number(3) as usize);
        return keep_pages(number(1) as usize, number(2), live);
    }
    let row = Row::from_key(&args[1]).expect("a row key");
    match args[0].as_str() {
        "w3" => {
            let churn = Churn {
                live: number(2) as usize,
                steps: number(3),
                every: number(4),
                report: |sample: Sample| println!("SAMPLE {}", sample.line()),
            };
            row.visit(churn).expect("available");
        }
        "w4" => {
            let race = Race {
                duration: Duration::from_millis(number(2)),
                writer: Writer::from_key(&args[3]).expect("emits, sleeps or spins"),
                calls_per_pick: args
                    .get(4)
                    .map_or(race::CALLS_PER_PICK, |_| number(4) as u32),
            };
            let result = row.visit(race).expect("available");
            println!("RESULT {}", result.line());
        }
        "overlap" => {
            let check = OverlapCheck {
                live: workload::LIVE,
                steps: number(2),
                progress_every: 1000,
            };
            let found = row.visit(check).expect("available");
            let first = found
                .first_overlap
                .map(|(a, s, b, t)| format!("{a:#x}+{s} over {b:#x}+{t}"))
                .unwrap_or_else(|| "-".into());
            let panicked = found
                .panicked_at
                .map_or("-".to_string(), |step| step.to_string());
            println!(
                "RESULT allocs={} overlaps={} corrupted={} panicked={} first={}",
                found.allocs, found.overlaps, found.corrupted, panicked, first
            );
        }
        "run" => {
            let workload = Workload::from_key(&args[2]).expect("w1, w2, w1:BYTES or w2:BYTES");
            let live = args.get(4).map_or(workload::LIVE, |_| number(4) as usize);
            let mut stepper = (row.visit(MakeStepper { workload, live })).expect("available");
            let took = stepper.run(number(3));
            println!(
                "RESULT ns_per_step={:.1}",
                took.as_secs_f64() * 1e9 / number(3) as f64
            );
        }
        "serve" => {
            let workload = Workload::from_key(&args[2]).expect("w1, w2, w1:BYTES or w2:BYTES");
            rounds::serve(row, workload);
        }
        other => panic!("unknown child workload {other}"),
    }
}

/// The mixed W1 over `live` blocks on a dual-map heap keeping up to `pages` free pages:
/// `steps` steps timed after `steps / 5` of warm-up, with the pages decommitted per step
/// and the bytes committed at the end.
fn keep_pages(pages: usize, steps: u64, live: usize) {
    let mut config = HeapConfig::with_strategy(WxStrategy::DualMap);
    config.pages.max_free_pages = pages;
    let heap = CodeHeap::with_config(config).expect("dual mapping on this machine");
    let mut w1 = W1::new(heap, live, Sizes::Mix);
    w1.run(steps / 5);
    let before = w1.peer().heap().page_allocator().stats();
    let took = w1.run(steps);
    let after = w1.peer().heap().page_allocator().stats();
    println!(
        "RESULT ns_per_step={:.1} decommitted_pages_per_step={:.4} committed_bytes={}",
        took.as_secs_f64() * 1e9 / steps as f64,
        (after.decommitted_pages - before.decommitted_pages) as f64 / steps as f64,
        after.committed_bytes
    );
}

/// Runs this binary as a child; its stdout, or how it died.
fn run_child(args: &[String]) -> Result<String, String> {
    let exe = std::env::current_exe().expect("the report knows its path");
    let output = Command::new(exe)
        .env("RUST_BACKTRACE", "0")
        .arg("--child")
        .args(args)
        .output()
        .expect("the report can run itself");
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(death(output.status, &stdout, &stderr))
}

/// How a child died: its signal or its panic message, and the last progress it printed.
pub(crate) fn death(status: ExitStatus, stdout: &str, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let progress = stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("PROGRESS "))
        .map_or(String::new(), |p| format!(" (last progress: step {p})"));
    let died = match status.signal() {
        Some(libc::SIGSEGV) => "crashed: SIGSEGV".into(),
        Some(libc::SIGBUS) => "crashed: SIGBUS".into(),
        Some(libc::SIGTRAP) => "crashed: SIGTRAP".into(),
        Some(signal) => format!("crashed: signal {signal}"),
        None => {
            // The panic message is the line after "thread '…' panicked at …:".
            let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked at"));
            let message = lines.nth(1).unwrap_or("no message");
            format!("panicked: {message}")
        }
    };
    format!("{died}{progress}")
}

fn result_line(stdout: &str) -> Option<&str> {
    stdout.lines().find_map(|line| line.strip_prefix("RESULT "))
}

// ---- W1 / W2 ----------------------------------------------------------------------------

/// The rows of the size sweeps: the ones whose curves tell something apart.
fn sweep_rows(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .copied()
        .filter(|row| {
            matches!(
                row,
                Row::Codeheap(WxStrategy::DualMap | WxStrategy::Protect)
                    | Row::JitAllocator
                    | Row::JitAllocatorLocked
                    | Row::Memmap2
                    | Row::Bump
            )
        })
        .collect()
}

/// Sizes of the sweeps.
const SWEEP_SIZES: [usize; 6] = [64, 256, 1024, 4096, 16_384, 65_536];

// ---- the report -------------------------------------------------------------------------

/// Figures gathered for the targets table.
#[derive(Debug, Default)]
struct Figures {
    w1: BTreeMap<String, f64>,
    w2: BTreeMap<String, f64>,
    w3: BTreeMap<String, Sample>,
    /// W3 after the allocator gave back what it keeps with no live block (codeheap rows).
    w3_trimmed: BTreeMap<String, Sample>,
    w4: w4::W4Figures,
}

fn report(plan: Plan, plots: Option<&str>) {
    let rows = Row::available();
    let missing: Vec<String> = Row::ALL
        .iter()
        .filter(|row| !rows.contains(row))
        .map(|row| row.name())
        .collect();
    println!(
        "# codeheap benchmarks{}\n",
        if plan.smoke { " (smoke)" } else { "" }
    );
    println!("{}", machine());
    if !missing.is_empty() {
        println!("Rows this machine cannot run: {}.\n", missing.join(", "));
    }
    let mut figures = Figures::default();

    // W1, W2.
    let w1 = time_rows(&rows, Workload::W1(Sizes::Mix), plan);
    let w2 = time_rows(&rows, Workload::W2(EMIT_BYTES), plan);
    let floor = |values: &[Result<f64, String>]| {
        let i = rows.iter().position(|r| *r == Row::Bump).expect("bump");
        *values[i].as_ref().expect("the floor runs")
    };
    let (w1_floor, w2_floor) = (floor(&w1), floor(&w2));
    println!(
        "## W1 (alloc + free, 1,000 live, mixed sizes) and W2 (emit 256 B, call, free oldest \
         of 1,000)\n\nMedian of {} interleaved rounds, after {} ms of each row alone; ratios \
         against the bump floor of the same run.\n",
        plan.rounds,
        plan.warm_up.as_millis()
    );
    println!("| row | W1 ns/step | W1 × floor | W2 ns/emit | W2 × floor |");
    println!("|---|---:|---:|---:|---:|");
    let cells = |value: &Result<f64, String>, floor: f64| match value {
        Ok(ns) => format!("{ns:.1} | {:.2}", ns / floor),
        Err(why) => format!("{why} | -"),
    };
    for (i, row) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} |",
            row.name(),
            cells(&w1[i], w1_floor),
            cells(&w2[i], w2_floor)
        );
        if let Ok(ns) = w1[i] {
            figures.w1.insert(row.key(), ns);
        }
        if let Ok(ns) = w2[i] {
            figures.w2.insert(row.key(), ns);
        }
    }
    println!();

    // Size sweeps (not in smoke runs).
    let mut sweeps = Vec::new();
    if !plan.smoke {
        let sweep = sweep_rows(&rows);
        for (title, make) in [
            (
                "W1 at fixed sizes (ns/step)",
                Workload::W1 as fn(Sizes) -> Workload,
            ),
            ("W2 at fixed sizes (ns/emit)", |s| match s {
                Sizes::Fixed(bytes) => Workload::W2(bytes),
                Sizes::Mix => Workload::W2(EMIT_BYTES),
            }),
        ] {
            let sweep_plan = Plan {
                rounds: 7,
                batch: Duration::from_millis(10),
                warm_up: plan.warm_up / 3,
                ..plan
            };
            let by_size: Vec<Vec<f64>> = SWEEP_SIZES
                .iter()
                .map(|&size| {
                    time_rows(&sweep, make(Sizes::Fixed(size)), sweep_plan)
                        .into_iter()
                        .map(|ns| ns.unwrap_or(f64::NAN))
                        .collect()
                })
                .collect();
            println!("## {title}\n");
            print!("| row |");
            SWEEP_SIZES.iter().for_each(|s| print!(" {s} B |"));
            println!();
            print!("|---|");
            SWEEP_SIZES.iter().for_each(|_| print!("---:|"));
            println!();
            for (r, row) in sweep.iter().enumerate() {
                print!("| {} |", row.name());
                by_size.iter().for_each(|v| print!(" {:.0} |", v[r]));
                println!();
            }
            println!();
            sweeps.push((title, sweep.clone(), by_size));
        }
    }

    // W3.
    let every = (plan.w3_steps / 20).max(1);
    println!(
        "## W3 (memory after {} W1 steps over {} live blocks, each block written once)\n",
        plan.w3_steps, plan.w3_live
    );
    println!(
        "committed: growth of executable mappings; own: what the allocator reports; PSS: \
         growth of the process's proportional set size. All over the bytes the live blocks \
         asked for. After trim: the same once the allocator has given back what it keeps \
         with no live block in it (codeheap's `trim()`, what an engine calls when idle).\n"
    );
    println!(
        "| row | live bytes | allocated (rounded) | committed | committed / live | own \
         committed | PSS growth | PSS / live | after trim: committed / live | PSS / live |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut w3_series = Vec::new();
    for row in &rows {
        if *row == Row::Bump {
            println!(
                "| {} | - | - | - | never frees | - | - | - | - | - |",
                row.name()
            );
            continue;
        }
        let args = [
            "w3".to_string(),
            row.key(),
            plan.w3_live.to_string(),
            plan.w3_steps.to_string(),
            every.to_string(),
        ];
        match run_child(&args) {
            Ok(stdout) => {
                let (trimmed, samples): (Vec<Sample>, Vec<Sample>) = stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix("SAMPLE "))
                    .filter_map(Sample::parse)
                    .partition(|sample| sample.trimmed);
                let last = *samples.last().expect("a sample");
                let after = |ratio: fn(&Sample) -> f64| {
                    trimmed
                        .first()
                        .map_or("-".to_string(), |s| format!("{:.3}", ratio(s)))
                };
                println!(
                    "| {} | {} | {} | {} | {:.3} | {} | {} | {:.3} | {} | {} |",
                    row.name(),
                    last.live_bytes,
                    last.own_allocated
                        .map_or("-".to_string(), |b| b.to_string()),
                    last.executable_bytes,
                    last.committed_ratio(),
                    last.own_committed
                        .map_or("-".to_string(), |b| b.to_string()),
                    last.pss_bytes,
                    last.pss_ratio(),
                    after(Sample::committed_ratio),
                    after(Sample::pss_ratio)
                );
                figures.w3.insert(row.key(), last);
                if let Some(&trimmed) = trimmed.first() {
                    figures.w3_trimmed.insert(row.key(), trimmed);
                }
                w3_series.push((row.name(), samples));
            }
            Err(how) => println!("| {} | {how} | | | | | | | | |", row.name()),
        }
    }
    println!();

    w4::main_table(&rows, &plan, &mut figures.w4);
    w4::by_pick_rate(&rows, &plan, &mut figures.w4);

    // Overlap check.
    println!(
        "## Overlap check ({} mixed-size churn steps over {} live blocks, each block filled with \
         its own pattern and checked when freed)\n",
        plan.overlap_steps,
        workload::LIVE
    );
    println!("| row | blocks | overlapping | corrupted | panicked at step | first overlap |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in &rows {
        let args = [
            "overlap".to_string(),
            row.key(),
            plan.overlap_steps.to_string(),
        ];
        match run_child(&args) {
            Ok(stdout) => {
                let line = result_line(&stdout).unwrap_or("");
                let field = |key: &str| {
                    line.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                        .unwrap_or("?")
                        .to_string()
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    row.name(),
                    field("allocs"),
                    field("overlaps"),
                    field("corrupted"),
                    field("panicked"),
                    line.split_once("first=").map_or("-", |(_, f)| f)
                );
            }
            Err(how) => println!("| {} | {how} | | | | |", row.name()),
        }
    }
    println!();

    targets(&figures);

    if let Some(dir) = plots {
        std::fs::create_dir_all(dir).expect("the plot directory can be made");
        for (title, sweep, by_size) in &sweeps {
            let file = if title.starts_with("W1") {
                "w1-sizes.png"
            } else {
                "w2-sizes.png"
            };
            let names: Vec<String> = sweep.iter().map(|r| r.name()).collect();
            plot::sizes(
                &format!("{dir}/{file}"),
                title,
                &names,
                &SWEEP_SIZES,
                by_size,
            )
            .expect("plot");
        }
        if !w3_series.is_empty() {
            plot::memory_over_time(&format!("{dir}/w3-over-time.png"), &w3_series).expect("plot");
        }
        println!("Plots written to {dir}/.");
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("Machine: {cores} cores, {cpu}, Linux {kernel}.\n")
}

/// One line of the targets table.
fn verdict(target: &str, measured: String, pass: Option<bool>) {
    let outcome = match pass {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    };
    println!("| {target} | {measured} | {outcome} |");
}

fn targets(f: &Figures) {
    let dual = Row::Codeheap(WxStrategy::DualMap).key();
    let protect = Row::Codeheap(WxStrategy::Protect).key();
    let bump = Row::Bump.key();
    let jit = Row::JitAllocator.key();
    println!("## Targets (ratios from this run)\n");
    println!("| target | measured | outcome |");
    println!("|---|---|---|");
    let get = |map: &BTreeMap<String, f64>, key: &str| map.get(key).copied();
    if let (Some(d), Some(b)) = (get(&f.w1, &dual), get(&f.w1, &bump)) {
        verdict(
            "W1 codeheap dual-map ≤ 3× bump floor",
            format!("{:.2}×", d / b),
            Some(d / b <= 3.0),
        );
    }
    if let (Some(d), Some(j)) = (get(&f.w1, &dual), get(&f.w1, &jit)) {
        verdict(
            "W1 far ahead of jit-allocator (jit-allocator / codeheap, want ≥ 2×)",
            format!("{:.2}×", j / d),
            Some(j / d >= 2.0),
        );
    }
    if let (Some(d), Some(b)) = (get(&f.w2, &dual), get(&f.w2, &bump)) {
        verdict(
            "W2 codeheap dual-map ≤ 1.3× bump floor",
            format!("{:.2}×", d / b),
            Some(d / b <= 1.3),
        );
    }
    let per_fn = [Row::Memmap2, Row::Region, Row::Dynasmrt]
        .iter()
        .filter_map(|r| get(&f.w2, &r.key()))
        .fold(f64::INFINITY, f64::min);
    if let Some(d) = get(&f.w2, &dual)
        && per_fn.is_finite()
    {
        verdict(
            "W2 ≥ 100× faster than one mapping per function (fastest of the three)",
            format!("{:.1}×", per_fn / d),
            Some(per_fn / d >= 100.0),
        );
    }
    if let (Some(d), Some(p)) = (get(&f.w2, &dual), get(&f.w2, &protect)) {
        verdict(
            "W2 ≥ 100× faster than codeheap protect",
            format!("{:.1}×", p / d),
            Some(p / d >= 100.0),
        );
    }
    for (row, name) in [
        (dual.clone(), "codeheap dual-map"),
        (
            Row::CodeheapChunks.key(),
            "codeheap dual-map, chunk classes (option)",
        ),
    ] {
        if let Some(s) = f.w3.get(&row) {
            verdict(
                &format!("W3 {name} committed / live ≤ 1.15"),
                format!("{:.3}", s.committed_ratio()),
                Some(s.committed_ratio() <= 1.15),
            );
            verdict(
                &format!("W3 {name} PSS / live ≤ 1.15"),
                format!("{:.3}", s.pss_ratio()),
                Some(s.pss_ratio() <= 1.15),
            );
        }
        if let Some(s) = f.w3_trimmed.get(&row) {
            verdict(
                &format!("(W3 {name} after `trim()`: committed / live, PSS / live)"),
                format!("{:.3}, {:.3}", s.committed_ratio(), s.pss_ratio()),
                None,
            );
        }
    }
    if let Some([busy, idle, spin]) = f.w4.main.get(&dual) {
        match busy {
            Ok(b) => verdict(
                "W4 zero faults under dual-map",
                format!("0 faults, {} wrong", b.wrong),
                Some(b.wrong == 0),
            ),
            Err(how) => verdict("W4 zero faults under dual-map", how.clone(), Some(false)),
        }
        if let (Ok(b), Some([Ok(j), ..])) = (busy, f.w4.main.get(&jit)) {
            let ratio = b.emits_per_second() / j.emits_per_second();
            verdict(
                "W4 emits/s ≥ 2× jit-allocator's",
                format!("{ratio:.2}×"),
                Some(ratio >= 2.0),
            );
        }
        if let (Ok(b), Ok(i)) = (busy, idle) {
            let ratio = b.calls_per_second() / i.calls_per_second();
            verdict(
                "W4 executor calls/s with the writer within 10 % of without",
                format!("{ratio:.2}"),
                Some(ratio >= 0.9),
            );
        }
        if let (Ok(b), Ok(s)) = (busy, spin) {
            let ratio = b.calls_per_second() / s.calls_per_second();
            verdict(
                "(control) the same, against a writer that spins without writing",
                format!("{ratio:.2}"),
                Some(ratio >= 0.9),
            );
        }
    }
    let slowest = w4::SLOWER_PICKS[w4::SLOWER_PICKS.len() - 1];
    if let Some([Ok(b), Ok(i)]) = f.w4.by_pick.get(&(dual.clone(), slowest)) {
        let ratio = b.calls_per_second() / i.calls_per_second();
        verdict(
            &format!(
                "(the same, the executor picking new code every {slowest} calls, not {})",
                race::CALLS_PER_PICK
            ),
            // Three places: this one sits at the target's edge.
            format!("{ratio:.3}"),
            Some(ratio >= 0.9),
        );
    }
    println!();
}
