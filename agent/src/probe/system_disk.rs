//! `system.disk`: space and inodes used on the filesystems holding the configured paths
//! (PostgreSQL's data directory and its `pg_wal` by default), from `statvfs`, one row per
//! filesystem.

use std::path::{Path, PathBuf};

use vigie_proto::Facts;
use vigie_proto::v1::{Filesystem, SystemDiskFacts};

use super::ProbeId;
use super::system_cpu::round1;
use crate::config::SystemConfig;
use crate::procfs::{self, FsUsage};
use crate::result::{ProbeResult, Status, human_bytes};

type ReadUsage = dyn Fn(&Path) -> std::io::Result<FsUsage> + Send;

/// Reads the usage of the filesystem holding a path: `statvfs` but in tests.
pub struct FsUsageReader(Box<ReadUsage>);

impl FsUsageReader {
    pub fn new(read: impl Fn(&Path) -> std::io::Result<FsUsage> + Send + 'static) -> Self {
        FsUsageReader(Box::new(read))
    }
}

impl Default for FsUsageReader {
    fn default() -> Self {
        FsUsageReader::new(procfs::fs_usage)
    }
}

impl std::fmt::Debug for FsUsageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsUsageReader")
    }
}

/// The filesystems to watch, by a path on each: the configured ones or, by default, PostgreSQL's
/// data directory once the snapshot names it (`/` until then) and, best effort, its `pg_wal`
/// (an agent that is not `postgres` may not search the data directory: then it is left out).
#[derive(Debug, Clone, Default)]
pub struct DiskPaths {
    pub paths: Vec<PathBuf>,
    /// Watched when readable, left out otherwise.
    pub best_effort: Vec<PathBuf>,
    /// From the configuration (never replaced).
    pub configured: bool,
    /// Set from the data directory.
    pub from_data_directory: bool,
}

impl DiskPaths {
    pub fn configured(paths: Vec<PathBuf>) -> Self {
        DiskPaths {
            configured: !paths.is_empty(),
            paths,
            ..Default::default()
        }
    }

    /// The defaults for a data directory, unless paths were configured or already set from it.
    pub fn follow_data_directory(&mut self, dir: &str) {
        if self.configured || self.from_data_directory {
            return;
        }
        let dir = PathBuf::from(dir);
        *self = DiskPaths {
            best_effort: vec![dir.join("pg_wal")],
            paths: vec![dir],
            configured: false,
            from_data_directory: true,
        };
    }
}

pub fn probe(cfg: &SystemConfig, watched: &DiskPaths, read: &FsUsageReader) -> ProbeResult {
    let id = ProbeId::SystemDisk;
    let mut status = Status::Ok;
    let mut parts = Vec::new();
    let mut facts = Vec::new();
    let mut devices = Vec::new();
    let paths = watched
        .paths
        .iter()
        .map(|p| (p, false))
        .chain(watched.best_effort.iter().map(|p| (p, true)));
    for (path, best_effort) in paths {
        match (read.0)(path) {
            // One filesystem, one row (the data directory's `pg_wal` is usually on it).
            Ok(u) if devices.contains(&u.device) => {}
            Err(_) if best_effort => {}
            Ok(u) => {
                devices.push(u.device);
                let worst = u.used_percent.max(u.inodes_used_percent);
                let s = if worst >= cfg.disk_critical_percent {
                    Status::Critical
                } else if worst >= cfg.disk_warning_percent {
                    Status::Warning
                } else {
                    Status::Ok
                };
                status = status.worst(s);
                parts.push(format!(
                    "{}: {:.1}% used, {} free",
                    path.display(),
                    u.used_percent,
                    human_bytes(u.available_bytes)
                ));
                facts.push(Filesystem {
                    path: path.display().to_string(),
                    used_percent: Some(round1(u.used_percent)),
                    inodes_used_percent: Some(round1(u.inodes_used_percent)),
                    total_bytes: Some(u.total_bytes),
                    available_bytes: Some(u.available_bytes),
                    error: None,
                });
            }
            Err(e) => {
                status = status.worst(Status::Unknown);
                parts.push(format!("{}: {e}", path.display()));
                facts.push(Filesystem {
                    path: path.display().to_string(),
                    error: Some(e.to_string()),
                    ..Default::default()
                });
            }
        }
    }
    ProbeResult::new(id, status, parts.join("; "))
        .with(Facts::SystemDisk(SystemDiskFacts { filesystems: facts }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_measured_and_a_missing_path_is_unknown() {
        let cfg = SystemConfig::default();
        let statvfs = FsUsageReader::default();
        let at = |p: &str| DiskPaths::configured(vec![PathBuf::from(p)]);
        let r = probe(&cfg, &at("/"), &statvfs);
        assert!(r.message.starts_with("/: "), "{}", r.message);
        let r = probe(&cfg, &at("/nonexistent/vigie"), &statvfs);
        assert_eq!(r.status, Status::Unknown);
        // A best-effort path that cannot be read is left out.
        let mut watched = at("/");
        watched
            .best_effort
            .push(PathBuf::from("/nonexistent/vigie"));
        assert_eq!(probe(&cfg, &watched, &statvfs).status, Status::Ok);
    }

    #[test]
    fn paths_on_one_filesystem_are_one_row_and_a_separate_one_its_own() {
        let cfg = SystemConfig::default();
        let read = FsUsageReader::new(|p: &Path| {
            Ok(FsUsage {
                device: if p.ends_with("walfs") { 2 } else { 1 },
                total_bytes: 100 << 20,
                available_bytes: 60 << 20,
                used_percent: 40.0,
                inodes_used_percent: 1.0,
            })
        });
        let mut watched = DiskPaths::default();
        watched.follow_data_directory("/data");
        watched.paths.push(PathBuf::from("/walfs"));
        assert_eq!(
            watched.best_effort,
            [PathBuf::from("/data/pg_wal")],
            "{watched:?}"
        );
        let r = probe(&cfg, &watched, &read);
        let rows: Vec<String> = match r.facts {
            Some(Facts::SystemDisk(d)) => d.filesystems.into_iter().map(|f| f.path).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rows, ["/data", "/walfs"]);
    }

    #[test]
    fn the_default_follows_the_data_directory_once_named_and_configured_paths_stay() {
        let mut watched = DiskPaths::configured(Vec::new());
        watched.paths.push(PathBuf::from("/"));
        watched.follow_data_directory("/var/lib/postgresql/15/main");
        assert_eq!(
            watched.paths,
            [PathBuf::from("/var/lib/postgresql/15/main")]
        );
        let mut configured = DiskPaths::configured(vec![PathBuf::from("/srv")]);
        configured.follow_data_directory("/var/lib/postgresql/15/main");
        assert_eq!(configured.paths, [PathBuf::from("/srv")]);
        assert!(configured.best_effort.is_empty());
    }
}
