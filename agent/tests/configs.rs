//! Every configuration file the project ships parses and validates, so none of them rots. The
//! files they name (password, certificates) exist only on a real host: they are pointed at
//! stand-ins made here.

use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped_agent_configs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/lab", "deploy/examples"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("deploy dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("agent-") && name.ends_with(".toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_agent_config_is_valid() {
    let files = shipped_agent_configs();
    assert!(files.len() >= 6, "{files:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let stand_in = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "stand-in").expect("write");
        p.display().to_string()
    };
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let mut env = HashMap::new();
        if text.contains("[postgres]") {
            env.insert(
                "VIGIE_AGENT__POSTGRES__PASSWORD".to_string(),
                "unused".to_string(),
            );
        }
        if text.contains("ca = ") {
            for key in ["CA", "CERT", "KEY"] {
                env.insert(format!("VIGIE_AGENT__COLLECTOR__{key}"), stand_in(key));
            }
        }
        let cfg =
            vigie_agent::config::load(&f, env).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!vigie_agent::config::components(&cfg).is_empty());
        assert!(cfg.collector.is_some(), "{} streams nowhere", f.display());
    }
}
