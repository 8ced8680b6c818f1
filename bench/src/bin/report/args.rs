//! The report's command line. Anything it does not know is refused with the usage: a
//! misspelt flag must not start a run of several minutes.

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invocation {
    /// Every table; `smoke` for the short run CI makes; the PNGs redrawn into `plots`.
    Report { smoke: bool, plots: Option<String> },
    /// One child process's work: the arguments after `--child` (see `child` in `main.rs`).
    Child(Vec<String>),
    /// `--help`.
    Help,
}

/// Printed for `--help` and after a refused command line.
pub(crate) const USAGE: &str = "\
usage: bench-report [--smoke] [--plots [DIR]]
       bench-report --child WORK ARGS...

  (no flag)      every workload over every row, all tables (several minutes)
  --smoke        every workload for a moment each, no time checks (CI)
  --plots [DIR]  also redraw the PNGs into DIR (default: docs)
  --child ...    one row's work in this process; see docs/benchmarks.md for the
                 forms (run, w3, w4, keep, overlap, serve)
  -h, --help     this text";

/// Reads the arguments after the program's name.
pub(crate) fn parse(args: &[String]) -> Result<Invocation, String> {
    if let Some(first) = args.first()
        && first == "--child"
    {
        return match &args[1..] {
            [] => Err("`--child` needs the work to do".into()),
            rest => Ok(Invocation::Child(rest.to_vec())),
        };
    }
    let (mut smoke, mut plots) = (false, None);
    let mut args = args.iter().peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "--smoke" => smoke = true,
            "--plots" => {
                let dir = args.next_if(|next| !next.starts_with('-'));
                plots = Some(dir.map_or_else(|| "docs".to_string(), String::clone));
            }
            "--child" => return Err("`--child` must come first".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Invocation::Report { smoke, plots })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Invocation, String> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn report(smoke: bool, plots: Option<&str>) -> Result<Invocation, String> {
        Ok(Invocation::Report {
            smoke,
            plots: plots.map(str::to_string),
        })
    }

    #[test]
    fn flags_choose_the_run() {
        assert_eq!(parsed(&[]), report(false, None));
        assert_eq!(parsed(&["--smoke"]), report(true, None));
        assert_eq!(parsed(&["--plots"]), report(false, Some("docs")));
        assert_eq!(parsed(&["--plots", "out"]), report(false, Some("out")));
        assert_eq!(
            parsed(&["--plots", "out", "--smoke"]),
            report(true, Some("out"))
        );
    }

    #[test]
    fn a_flag_after_plots_is_not_taken_for_its_directory() {
        assert_eq!(parsed(&["--plots", "--smoke"]), report(true, Some("docs")));
    }

    #[test]
    fn help_wins_over_everything_else() {
        assert_eq!(parsed(&["--help"]), Ok(Invocation::Help));
        assert_eq!(parsed(&["--smoke", "-h"]), Ok(Invocation::Help));
    }

    #[test]
    fn child_takes_the_rest_verbatim() {
        assert_eq!(
            parsed(&["--child", "run", "bump", "w2", "100"]),
            Ok(Invocation::Child(
                ["run", "bump", "w2", "100"].map(String::from).to_vec()
            ))
        );
    }

    #[test]
    fn what_is_not_known_is_refused() {
        for args in [
            &["--smok"][..],
            &["smoke"],
            &["--smoke", "--help-me"],
            &["--child"],
            &["--smoke", "--child", "run"],
        ] {
            assert!(parsed(args).is_err(), "{args:?} accepted");
        }
    }
}
