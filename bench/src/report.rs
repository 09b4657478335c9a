//! Tables and the doc: each benchmark prints its Markdown table and replaces its own section of
//! `bench/README.md` (between `<!-- name:begin -->` and `<!-- name:end -->`), stamped with the
//! machine, the commit and the command that produced it.

use std::path::{Path, PathBuf};

/// A Markdown table.
#[derive(Debug, Default)]
pub struct Table {
    lines: Vec<String>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        let mut t = Table::default();
        t.lines.push(format!("| {} |", header.join(" | ")));
        t.lines.push(format!("|{}", "---|".repeat(header.len())));
        t
    }

    pub fn row(&mut self, cells: &[String]) {
        self.lines.push(format!("| {} |", cells.join(" | ")));
    }

    pub fn render(&self) -> String {
        self.lines.join("\n")
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// "2 × AMD EPYC … , 24 GiB, Linux 6.1, Debian 12" from /proc and uname.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    format!(
        "{cores} × {model}, {mem_gib:.0} GiB, Linux {}, {os}",
        run("uname", &["-r"])
    )
}

/// The commit measured, marked `+dirty` when the work tree has changes.
pub fn commit() -> String {
    let head = run("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{head}+dirty") } else { head }
}

/// Prints `body` and writes it as section `name` of bench/README.md.
pub fn publish(name: &str, title: &str, command: &str, body: &str) {
    publish_at(name, title, command, &commit(), body);
}

/// `publish`, stamped with `commit` instead of the work tree's (for figures read from a run that
/// came before this process, which may have rewritten the doc since).
pub fn publish_at(name: &str, title: &str, command: &str, commit: &str, body: &str) {
    let stamp = format!(
        "Measured {} on {} at commit `{commit}` with `{command}`.",
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine(),
    );
    let section = format!("### {title}\n\n{stamp}\n\n{body}\n");
    println!("\n{section}");
    let path = repo_root().join("bench/README.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let new = match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{begin}\n{section}{}", &doc[..b], &doc[e..])
        }
        _ => format!("{doc}\n{begin}\n{section}{end}\n"),
    };
    match std::fs::write(&path, new) {
        Ok(()) => eprintln!("bench: wrote section `{name}` of {}", path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
    }
}

/// Median and maximum of a sample (None when empty).
pub fn median_max(values: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Some((median, v[v.len() - 1]))
}

/// The `q` quantile (0..=1) of a sample, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_max_and_quantiles() {
        assert_eq!(median_max(&[3.0, 1.0, 2.0]), Some((2.0, 3.0)));
        assert_eq!(median_max(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 4.0)));
        assert_eq!(median_max(&[]), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
    }

    #[test]
    fn table_renders_markdown() {
        let mut t = Table::new(&["a", "b"]);
        t.row(&["1".into(), "2".into()]);
        assert_eq!(t.render(), "| a | b |\n|---|---|\n| 1 | 2 |");
    }
}
