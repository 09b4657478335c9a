//! Every configuration file the project ships parses and validates, so none of them rots.

use std::collections::HashMap;
use std::path::PathBuf;

fn shipped_agent_configs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["deploy/lab", "deploy/examples"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("deploy dir") {
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
    // The password files they name exist only on a running lab or a real host.
    let env = HashMap::from([(
        "VIGIE_AGENT__POSTGRES__PASSWORD".to_string(),
        "unused".to_string(),
    )]);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let env = if text.contains("[postgres]") {
            env.clone()
        } else {
            HashMap::new()
        };
        let cfg =
            vigie_agent::config::load(&f, env).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!vigie_agent::config::components(&cfg).is_empty());
    }
}
