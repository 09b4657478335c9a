//! Collector scale against an earlier commit: reads what two runs of `vigie-bench collector-scale`
//! left, the JSON of `--out` or, from a driver older than `--out`, the Markdown it printed, and
//! sets them side by side: CPU per batch of the collector and of the bare tonic server, the
//! collector's multiple of the bare server, the largest fleet sustained.
//! `bench/collector-scale.sh --baseline REV` runs both builds, each with its own driver, then this.

use std::path::Path;

use serde_json::Value;

use crate::report::{Table, publish_at};

/// One fleet size of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    pub agents: usize,
    pub sustained: bool,
    /// Server CPU per acknowledged batch, µs.
    pub collector_us: f64,
    pub bare_us: f64,
}

impl StepFigures {
    /// The collector's CPU per batch as a multiple of the bare tonic server's.
    fn multiple(&self) -> f64 {
        self.collector_us / self.bare_us.max(1e-9)
    }
}

/// One run of the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub commit: String,
    pub window_s: Option<f64>,
    /// In the order tried (growing; the run stops after the first size not sustained).
    pub steps: Vec<StepFigures>,
}

impl Run {
    /// Reads a run's JSON (`--out`) or its printed Markdown section, whichever `path` holds.
    pub fn read(path: &Path) -> Result<Run, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let run = if text.trim_start().starts_with('{') {
            Run::from_json(&text)
        } else {
            Run::from_markdown(&text)
        };
        run.map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn from_json(text: &str) -> Result<Run, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let number = |v: &Value, what: &str| v.as_f64().ok_or(format!("no number `{what}`"));
        let steps = doc["steps"]
            .as_array()
            .ok_or("no `steps`")?
            .iter()
            .map(|s| {
                Ok(StepFigures {
                    agents: s["agents"].as_u64().ok_or("a step without `agents`")? as usize,
                    sustained: s["sustained"].as_bool().ok_or("no `sustained`")?,
                    collector_us: number(
                        &s["collector"]["cpu_per_batch_us"],
                        "collector.cpu_per_batch_us",
                    )?,
                    bare_us: number(&s["bare"]["cpu_per_batch_us"], "bare.cpu_per_batch_us")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Run {
            commit: doc["commit"].as_str().unwrap_or("?").to_string(),
            window_s: doc["window_s"].as_f64(),
            steps,
        })
    }

    /// The section `publish` printed: the stamp (`… at commit `X` with …`), the table (columns
    /// `agents`, `sustained`, `CPU / batch collector vs bare` as `218 µs vs 62 µs (× 3.5)`) and
    /// `Window 45 s per step.`
    fn from_markdown(text: &str) -> Result<Run, String> {
        let commit = text
            .split_once("at commit `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map_or("?", |(c, _)| c)
            .to_string();
        let window_s = text
            .split_once("Window ")
            .and_then(|(_, rest)| rest.split_once(" s per step"))
            .and_then(|(w, _)| w.parse().ok());
        let cells = |line: &str| -> Vec<String> {
            let line = line.trim();
            let inner = line.strip_prefix('|').unwrap_or(line);
            let inner = inner.strip_suffix('|').unwrap_or(inner);
            inner.split('|').map(|c| c.trim().to_string()).collect()
        };
        let mut lines = text.lines().skip_while(|l| !l.starts_with("| agents |"));
        let header = cells(lines.next().ok_or("no table with an `agents` column")?);
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or(format!("no column `{name}`"))
        };
        let (agents, sustained, cpu) = (
            column("agents")?,
            column("sustained")?,
            column("CPU / batch collector vs bare")?,
        );
        let steps = lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|line| {
                let row = cells(line);
                let cell = |i: usize| row.get(i).map_or("", String::as_str);
                let (collector_us, bare_us) = parse_cpu(cell(cpu)).ok_or(format!(
                    "CPU per batch not as `N µs vs M µs`: {}",
                    cell(cpu)
                ))?;
                Ok(StepFigures {
                    agents: cell(agents)
                        .parse()
                        .map_err(|_| format!("agents not a number: {}", cell(agents)))?,
                    sustained: cell(sustained) == "yes",
                    collector_us,
                    bare_us,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if steps.is_empty() {
            return Err("the table has no rows".into());
        }
        Ok(Run {
            commit,
            window_s,
            steps,
        })
    }

    fn step(&self, agents: usize) -> Option<&StepFigures> {
        self.steps.iter().find(|s| s.agents == agents)
    }

    fn largest(&self) -> Option<usize> {
        self.steps
            .iter()
            .filter(|s| s.sustained)
            .map(|s| s.agents)
            .max()
    }

    /// Sustained every size it tried: its limit lies above the largest.
    fn unbounded(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.sustained)
    }

    fn largest_cell(&self) -> String {
        match (self.largest(), self.unbounded()) {
            (Some(n), true) => format!("≥ {n} (every size tried)"),
            (Some(n), false) => n.to_string(),
            (None, _) => "none".into(),
        }
    }
}

/// `218 µs vs 62 µs (× 3.5)` → (218, 62).
fn parse_cpu(cell: &str) -> Option<(f64, f64)> {
    let (c, rest) = cell.split_once(" vs ")?;
    let us = |s: &str| s.trim().split_once(" µs")?.0.parse::<f64>().ok();
    Some((us(c)?, us(rest)?))
}

fn cpu_cell(s: &StepFigures) -> String {
    format!(
        "{:.0} µs vs {:.0} µs (× {:.1})",
        s.collector_us,
        s.bare_us,
        s.multiple()
    )
}

fn times(x: f64) -> String {
    format!("× {x:.2}")
}

/// Largest fleet sustained, after / before; a bound when a run sustained every size it tried.
fn sustained_ratio(before: &Run, after: &Run) -> String {
    let (Some(b), Some(a)) = (before.largest(), after.largest()) else {
        return "-".into();
    };
    let r = times(a as f64 / b as f64);
    match (before.unbounded(), after.unbounded()) {
        (false, false) => r,
        (false, true) => format!("≥ {r}"),
        (true, false) => format!("≤ {r}"),
        (true, true) => "- (both sustained every size tried)".into(),
    }
}

/// The fleet size CPU per batch is compared at: the largest both sustained, else the smallest
/// both tried.
fn common_size(before: &Run, after: &Run) -> Option<usize> {
    let both = |n: &usize| after.step(*n).is_some();
    let tried: Vec<&StepFigures> = before.steps.iter().filter(|s| both(&s.agents)).collect();
    tried
        .iter()
        .filter(|s| s.sustained && after.step(s.agents).is_some_and(|a| a.sustained))
        .map(|s| s.agents)
        .max()
        .or_else(|| tried.iter().map(|s| s.agents).min())
}

/// The comparison, Markdown.
pub fn render(before: &Run, after: &Run) -> String {
    let (b, a) = (
        format!("before `{}`", before.commit),
        format!("after `{}`", after.commit),
    );
    let mut summary = Table::new(&[
        "build",
        "largest fleet sustained",
        "collector CPU / batch",
        "bare tonic CPU / batch",
        "collector ÷ bare",
    ]);
    let size = common_size(before, after);
    let at = |run: &Run| size.and_then(|n| run.step(n)).cloned();
    let us = |s: &Option<StepFigures>, f: fn(&StepFigures) -> f64| {
        s.as_ref().map_or("-".into(), |s| format!("{:.0} µs", f(s)))
    };
    let (sb, sa) = (at(before), at(after));
    for (label, run, s) in [(&b, before, &sb), (&a, after, &sa)] {
        summary.row(&[
            label.clone(),
            run.largest_cell(),
            us(s, |s| s.collector_us),
            us(s, |s| s.bare_us),
            s.as_ref()
                .map_or("-".into(), |s| format!("× {:.1}", s.multiple())),
        ]);
    }
    let ratio = |f: fn(&StepFigures) -> f64| match (&sb, &sa) {
        (Some(b), Some(a)) => times(f(a) / f(b).max(1e-9)),
        _ => "-".into(),
    };
    summary.row(&[
        "after / before".into(),
        sustained_ratio(before, after),
        ratio(|s| s.collector_us),
        ratio(|s| s.bare_us),
        ratio(StepFigures::multiple),
    ]);

    let mut sizes: Vec<usize> = before
        .steps
        .iter()
        .chain(&after.steps)
        .map(|s| s.agents)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (bs, bc, as_, ac) = (
        format!("{b}: sustained"),
        format!("{b}: CPU / batch collector vs bare"),
        format!("{a}: sustained"),
        format!("{a}: CPU / batch collector vs bare"),
    );
    let mut per_size = Table::new(&[
        "agents",
        &bs,
        &bc,
        &as_,
        &ac,
        "collector ÷ bare, after / before",
    ]);
    let yes = |s: Option<&StepFigures>| {
        s.map_or("-", |s| if s.sustained { "yes" } else { "**no**" })
            .to_string()
    };
    for n in sizes {
        let (x, y) = (before.step(n), after.step(n));
        per_size.row(&[
            n.to_string(),
            yes(x),
            x.map_or("-".into(), cpu_cell),
            yes(y),
            y.map_or("-".into(), cpu_cell),
            match (x, y) {
                (Some(x), Some(y)) => times(y.multiple() / x.multiple().max(1e-9)),
                _ => "-".into(),
            },
        ]);
    }
    let window = match (before.window_s, after.window_s) {
        (Some(x), Some(y)) if x == y => format!("Window {x:.0} s per step in both."),
        (x, y) => format!(
            "**Windows differ**: {} s before, {} s after.",
            x.map_or("?".into(), |x| format!("{x:.0}")),
            y.map_or("?".into(), |y| format!("{y:.0}"))
        ),
    };
    format!(
        "{}\n\n{}\n\nCPU / batch {}. Both builds ran on this machine in one script run, one after the \
         other, each driven by its own commit's `vigie-bench collector-scale` (its own wire format, \
         fixture and bare tonic server) at the same fleet sizes. CPU per batch is a server's CPU \
         over the window divided by the batches it acknowledged; the collector's multiple of the \
         bare server run beside it cancels most of what the machine's load did to either run. \
         A run stops at the first size it does not sustain, so a run that sustained every size \
         only gives a lower bound. {window}",
        summary.render(),
        per_size.render(),
        match size {
            Some(n) => format!("at {n} agents, the largest fleet both sustained"),
            None => "not comparable: no fleet size in common".into(),
        },
    )
}

/// Prints the comparison and writes it as section `collector-baseline` of bench/README.md,
/// stamped with the after run's commit.
pub fn run(before: &Path, after: &Path, command: &str) -> Result<(), String> {
    let (before, after) = (Run::read(before)?, Run::read(after)?);
    publish_at(
        "collector-baseline",
        "Collector scale against an earlier commit",
        command,
        &after.commit,
        &render(&before, &after),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `bench/collector-scale.sh` printed at 533db42 (two rows of the README's run).
    const MARKDOWN: &str = "
### Collector scale

Measured 2026-11-26 04:42 UTC on 2 × Intel(R) Xeon(R) Processor, 24 GiB, Linux 6.18.44-fc-v669, Debian GNU/Linux 12 (bookworm) at commit `f62c718+dirty` with `bench/collector-scale.sh`.

| agents | sustained | batches sent / acked (backlog) | refresh delay p50 / p99 / max | collector CPU (% of a core) | bare tonic CPU | CPU / batch collector vs bare | collector RSS (per agent) | bare RSS | API cluster p50 / p99 | API list p50 / p99 | load generator CPU |
|---|---|---|---|---|---|---|---|---|---|---|---|
| 6000 | yes | 274956 / 274949 (66) | 398 ms / 721 ms / 896 ms (399 samples, 0 timeouts) | 99 % | 19 % | 162 µs vs 31 µs (× 5.2) | 673 MiB (113.5 KiB) | 247 MiB | 4 ms / 193 ms | 8 ms / 157 ms | 30 % |
| 7000 | **no** | 386411 / 162906 (226822) | 2460 ms / 9720 ms / 9720 ms (39 samples, 26 timeouts) | 124 % | 21 % | 343 µs vs 30 µs (× 11.5) | 1812 MiB (263.8 KiB) | 287 MiB | 16 ms / 436 ms | 59 ms / 717 ms | 31 % |

Largest fleet sustained: **6000** agents at one batch per second (…). Window 45 s per step. The load generator runs on the same 2 cores: its CPU is taken from the servers'.
";

    fn step(agents: usize, sustained: bool, collector_us: f64, bare_us: f64) -> StepFigures {
        StepFigures {
            agents,
            sustained,
            collector_us,
            bare_us,
        }
    }

    fn run(steps: Vec<StepFigures>) -> Run {
        Run {
            commit: "c".into(),
            window_s: Some(45.0),
            steps,
        }
    }

    #[test]
    fn an_older_drivers_printed_section_is_read_from_its_table() {
        let r = Run::from_markdown(MARKDOWN).expect("the printed section is read");
        assert_eq!(r.commit, "f62c718+dirty");
        assert_eq!(r.window_s, Some(45.0));
        assert_eq!(
            r.steps,
            vec![
                step(6000, true, 162.0, 31.0),
                step(7000, false, 343.0, 30.0)
            ]
        );
        assert_eq!(r.largest(), Some(6000));
        assert!(!r.unbounded());
    }

    #[test]
    fn a_section_without_the_cpu_column_is_an_error_naming_it() {
        let text = MARKDOWN.replace("CPU / batch collector vs bare", "CPU per batch");
        let e = Run::from_markdown(&text).expect_err("no CPU column");
        assert!(e.contains("CPU / batch collector vs bare"), "{e}");
        assert!(Run::from_markdown("no table here").is_err());
    }

    #[test]
    fn the_json_of_out_is_read() {
        let text = r#"{"commit": "abc", "window_s": 5.0, "steps": [
            {"agents": 40, "sustained": true, "collector": {"cpu_per_batch_us": 210.5},
             "bare": {"cpu_per_batch_us": 60.0}}]}"#;
        let r = Run::from_json(text).expect("the JSON is read");
        assert_eq!(r.commit, "abc");
        assert_eq!(r.window_s, Some(5.0));
        assert_eq!(r.steps, vec![step(40, true, 210.5, 60.0)]);
        assert!(Run::from_json(r#"{"steps": [{"agents": 40}]}"#).is_err());
    }

    #[test]
    fn the_sustained_ratio_is_a_bound_when_a_run_sustained_every_size_it_tried() {
        let limited = |n| {
            run(vec![
                step(n, true, 1.0, 1.0),
                step(n + 1000, false, 1.0, 1.0),
            ])
        };
        let all = |n| run(vec![step(n, true, 1.0, 1.0)]);
        let none = run(vec![step(1000, false, 1.0, 1.0)]);
        for (before, after, want) in [
            (limited(6000), limited(7500), "× 1.25"),
            (limited(6000), all(7500), "≥ × 1.25"),
            (all(7500), limited(6000), "≤ × 0.80"),
            (all(1000), all(1000), "- (both sustained every size tried)"),
            (none.clone(), limited(1000), "-"),
            (limited(1000), none, "-"),
        ] {
            assert_eq!(
                sustained_ratio(&before, &after),
                want,
                "{before:?} → {after:?}"
            );
        }
    }

    #[test]
    fn cpu_is_compared_at_the_largest_size_both_sustained_else_the_smallest_both_tried() {
        let before = run(vec![
            step(1000, true, 200.0, 50.0),
            step(2500, true, 170.0, 40.0),
            step(5000, false, 300.0, 30.0),
        ]);
        let after = run(vec![
            step(1000, true, 150.0, 50.0),
            step(2500, true, 120.0, 40.0),
            step(5000, true, 110.0, 30.0),
        ]);
        assert_eq!(common_size(&before, &after), Some(2500));
        let failing = run(vec![step(1000, false, 900.0, 50.0)]);
        assert_eq!(common_size(&failing, &after), Some(1000));
        assert_eq!(
            common_size(&run(vec![step(40, true, 1.0, 1.0)]), &after),
            None
        );
    }

    #[test]
    fn the_comparison_shows_both_builds_and_the_after_over_before_ratios() {
        let before = run(vec![
            step(1000, true, 200.0, 50.0),
            step(2500, false, 400.0, 40.0),
        ]);
        let after = run(vec![
            step(1000, true, 100.0, 50.0),
            step(2500, true, 80.0, 40.0),
            step(5000, false, 300.0, 30.0),
        ]);
        let text = render(&before, &after);
        assert!(
            text.contains("| before `c` | 1000 | 200 µs | 50 µs | × 4.0 |"),
            "{text}"
        );
        assert!(
            text.contains("| after / before | × 2.50 | × 0.50 | × 1.00 | × 0.50 |"),
            "{text}"
        );
        assert!(
            text.contains("| 5000 | - | - | **no** | 300 µs vs 30 µs (× 10.0) | - |"),
            "{text}"
        );
        assert!(text.contains("at 1000 agents"), "{text}");
    }
}
