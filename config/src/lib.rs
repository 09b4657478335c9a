//! The configuration loader of both binaries: a TOML file with `PREFIX__SECTION__KEY` environment
//! overrides (the `config` crate), typed into the binary's strict structs. Every error names the
//! key at fault by its full path (`postgres.lag_warning`, `haproxy.applications[0].rw`), as
//! `serde_path_to_error` tracks it.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;

/// Invalid configuration: the field at fault and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The key's full path; `--config` when the file cannot be read, `(file)` when it is not
    /// TOML or no single key is at fault.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The file with the environment over it, not yet typed.
#[derive(Debug)]
pub struct Source(config::Config);

impl Source {
    /// Reads `path`, then the variables of `env` that start with `prefix` (the process
    /// environment in production; tests pass their own map): `PREFIX__A__B` sets `a.b`.
    pub fn read(
        path: &Path,
        prefix: &str,
        env: HashMap<String, String>,
    ) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        Source::from_toml(&text, prefix, env)
    }

    /// The configuration from TOML `text` with the environment `env` over it (no file).
    pub fn from_toml(
        text: &str,
        prefix: &str,
        env: HashMap<String, String>,
    ) -> Result<Source, ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(prefix)
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env.into_iter().collect())),
            )
            .build()
            .map(Source)
            .map_err(|e| ConfigError::new("(file)", e.to_string()))
    }

    /// Whether the file or the environment sets `key` (`a.b`): for defaults that follow other
    /// fields.
    pub fn is_set(&self, key: &str) -> bool {
        self.0.get::<config::Value>(key).is_ok()
    }

    /// Types the configuration.
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(self.0).map_err(|e| {
            let (missing, message) = cause(e.inner());
            let at = (e.path().iter().next().is_some()).then(|| e.path().to_string());
            let field = match (at, missing) {
                (Some(at), Some(name)) => format!("{at}.{name}"),
                (None, Some(name)) => name.to_string(),
                (Some(at), None) => at,
                (None, None) => "(file)".to_string(),
            };
            ConfigError::new(field, message)
        })
    }
}

/// A boolean written as one: `true`/`false` in TOML, or exactly `"true"`/`"false"` (what an
/// environment override can only be: text). Anything else (`"yes"`, `"off"`, `1`) is refused
/// rather than guessed: for fields like `plaintext`, a guess is a security decision.
pub fn strict_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Strict;
    impl serde::de::Visitor<'_> for Strict {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            match v {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
            }
        }
    }
    d.deserialize_any(Strict)
}

/// What went wrong, without the `config` crate's own `for key …` (the path says where), and the
/// name of a missing field: serde reports it from the struct, so the path stops one level above.
fn cause(e: &config::ConfigError) -> (Option<&str>, String) {
    match e {
        config::ConfigError::At { error, .. } => cause(error),
        config::ConfigError::Type {
            unexpected,
            expected,
            origin,
            ..
        } => {
            let from = origin
                .as_ref()
                .map(|o| format!(" in {o}"))
                .unwrap_or_default();
            (
                None,
                format!("invalid type: {unexpected}, expected {expected}{from}"),
            )
        }
        // `config` has grown the key into a path (`a.list[0]name`): the name is its last part.
        config::ConfigError::NotFound(key) => (
            key.rsplit(['.', ']']).next(),
            "missing: this key has no default".to_string(),
        ),
        other => (None, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Root {
        name: String,
        #[serde(default)]
        server: Option<Server>,
        #[serde(default)]
        apps: Vec<App>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        port: u16,
        #[serde(default)]
        limits: Limits,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        #[serde(default)]
        connections: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct App {
        name: String,
        rw: SocketAddr,
    }

    fn load_env(toml: &str, env: &[(&str, &str)]) -> Result<Root, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Source::from_toml(toml, "T", env)?.deserialize()
    }

    fn field(toml: &str) -> String {
        load_env(toml, &[]).expect_err(toml).field
    }

    const APPS: &str =
        "name = \"n\"\n[[apps]]\nname = \"a\"\nrw = \"127.0.0.1:5000\"\n[[apps]]\nname = \"b\"\n";

    #[test]
    fn a_valid_file_loads() {
        let root = load_env(
            &format!("{APPS}rw = \"127.0.0.1:5001\"\n[server]\nport = 1\n"),
            &[],
        )
        .expect("valid");
        assert_eq!(root.apps.len(), 2);
    }

    #[test]
    fn wrong_types_name_the_full_path() {
        assert_eq!(
            field("name = \"n\"\n[server]\nport = \"high\"\n"),
            "server.port"
        );
        assert_eq!(
            field("name = \"n\"\n[server]\nport = 1\n[server.limits]\nconnections = \"many\"\n"),
            "server.limits.connections"
        );
        assert_eq!(field(&format!("{APPS}rw = \"nowhere\"\n")), "apps[1].rw");
        assert_eq!(field("name = \"n\"\napps = \"a\"\n"), "apps");
    }

    #[test]
    fn unknown_fields_name_the_full_path() {
        assert_eq!(field("name = \"n\"\nnmae = \"x\"\n"), "nmae");
        assert_eq!(
            field("name = \"n\"\n[server]\nport = 1\nprot = 2\n"),
            "server.prot"
        );
        assert_eq!(
            field("name = \"n\"\n[server]\nport = 1\n[server.limits]\nconns = 2\n"),
            "server.limits.conns"
        );
        assert_eq!(
            field(&format!("{APPS}rw = \"127.0.0.1:5001\"\nrww = \"x\"\n")),
            "apps[1].rww"
        );
        let e = load_env("name = \"n\"\n[server]\nport = 1\nprot = 2\n", &[]).expect_err("invalid");
        assert!(e.message.contains("unknown field `prot`"), "{e}");
    }

    #[test]
    fn missing_fields_name_the_full_path() {
        assert_eq!(field("[server]\nport = 1\n"), "name");
        assert_eq!(field("name = \"n\"\n[server]\n"), "server.port");
        assert_eq!(field(APPS), "apps[1].rw");
    }

    #[test]
    fn the_message_says_what_is_wrong_once() {
        let e = load_env(&format!("{APPS}rw = \"nowhere\"\n"), &[]).expect_err("invalid");
        assert!(!e.message.contains("for key"), "{e}");
        assert!(e.message.contains("socket address"), "{e}");
        let e = load_env("name = \"n\"\n[server]\nport = \"high\"\n", &[]).expect_err("invalid");
        assert!(!e.message.contains("for key"), "{e}");
        assert!(e.message.contains("\"high\""), "{e}");
    }

    #[test]
    fn environment_overrides_are_named_like_the_file() {
        let e = load_env(
            "name = \"n\"\n[server]\nport = 1\n",
            &[("T__SERVER__PORT", "high")],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "server.port", "{e}");
        let root = load_env(
            "name = \"n\"\n[server]\nport = 1\n",
            &[("T__SERVER__PORT", "2")],
        )
        .expect("valid");
        assert_eq!(root.server.expect("server").port, 2);
    }

    #[test]
    fn not_toml_is_the_file() {
        assert_eq!(field("this is not toml"), "(file)");
    }

    #[test]
    fn is_set_sees_the_file_and_the_environment() {
        let source = Source::from_toml(
            "name = \"n\"\n[server]\nport = 1\n",
            "T",
            HashMap::from([(
                "T__SERVER__LIMITS__CONNECTIONS".to_string(),
                "3".to_string(),
            )]),
        )
        .expect("toml");
        assert!(source.is_set("server.port"));
        assert!(source.is_set("server.limits.connections"));
        assert!(!source.is_set("apps"));
    }

    #[test]
    fn an_unreadable_file_is_the_config_flag() {
        let e = Source::read(Path::new("/nonexistent/vigie.toml"), "T", HashMap::new())
            .expect_err("missing");
        assert_eq!(e.field, "--config");
    }
    #[derive(Debug, Deserialize)]
    struct Flag {
        #[serde(default, deserialize_with = "strict_bool")]
        on: bool,
    }

    #[test]
    fn booleans_are_never_guessed_from_text() {
        let flag = |toml: &str, env: &[(&str, &str)]| {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Source::from_toml(toml, "T", env)?
                .deserialize::<Flag>()
                .map(|f| f.on)
        };
        assert!(flag("on = true\n", &[]).expect("a boolean"));
        assert!(!flag("on = false\n", &[]).expect("a boolean"));
        assert!(flag("", &[("T__ON", "true")]).expect("the environment's text"));
        assert!(!flag("on = true\n", &[("T__ON", "false")]).expect("overridden"));
        for bad in ["on = \"yes\"\n", "on = \"off\"\n", "on = 1\n"] {
            let e = flag(bad, &[]).expect_err(bad);
            assert_eq!(e.field, "on", "{bad}: {e}");
        }
        let e = flag("", &[("T__ON", "yes")]).expect_err("yes");
        assert_eq!(e.field, "on", "{e}");
    }
}
