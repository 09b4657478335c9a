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

pub fn probe(cfg: &SystemConfig, paths: &[PathBuf], read: &FsUsageReader) -> ProbeResult {
    let id = ProbeId::SystemDisk;
    let mut status = Status::Ok;
    let mut parts = Vec::new();
    let mut facts = Vec::new();
    let mut devices = Vec::new();
    for path in paths {
        match (read.0)(path) {
            // One filesystem, one row (the data directory's `pg_wal` is usually on it).
            Ok(u) if devices.contains(&u.device) => {}
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
        let r = probe(&cfg, &[PathBuf::from("/")], &statvfs);
        assert!(r.message.starts_with("/: "), "{}", r.message);
        let r = probe(&cfg, &[PathBuf::from("/nonexistent/vigie")], &statvfs);
        assert_eq!(r.status, Status::Unknown);
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
        let paths = ["/data", "/data/pg_wal", "/walfs"].map(PathBuf::from);
        let r = probe(&cfg, &paths, &read);
        let rows: Vec<String> = match r.facts {
            Some(Facts::SystemDisk(d)) => d.filesystems.into_iter().map(|f| f.path).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rows, ["/data", "/walfs"]);
    }
}
