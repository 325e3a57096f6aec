//! Node configuration: `<datadir>/xov.toml` (all optional), then `XOV_*` environment overrides.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const CONFIG_FILE: &str = "xov.toml";
/// Default local API address. Port chosen outside the usual ranges of bitcoind and OpenStack.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9737";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}={value} is not valid: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "api.listen = {0} is not a loopback address; the local API only binds 127.0.0.1 or ::1"
    )]
    NotLoopback(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub api: ApiConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the local HTTP API listens; must be loopback. Port 0 picks a free port (written to `<datadir>/api`).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `xov_node=debug,info`.
    pub level: String,
    /// One JSON object per line instead of human-readable lines.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: ApiConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN.parse().expect("constant address parses"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            json: false,
        }
    }
}

impl Config {
    /// Reads `path` if it exists (a missing file means defaults), then applies overrides from `env`.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        cfg.apply_env(env)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Environment overrides, one variable per setting: `XOV_API_LISTEN`, `XOV_LOG_LEVEL`, `XOV_LOG_JSON`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("XOV_API_LISTEN") {
            self.api.listen =
                v.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        var: "XOV_API_LISTEN",
                        value: v.clone(),
                        message: e.to_string(),
                    })?;
        }
        if let Some(v) = env("XOV_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = env("XOV_LOG_JSON") {
            self.log.json = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(ConfigError::Env {
                        var: "XOV_LOG_JSON",
                        value: v,
                        message: "expected true or false".into(),
                    })
                }
            };
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.api.listen.ip().is_loopback() {
            return Err(ConfigError::NotLoopback(self.api.listen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(map: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert_eq!(Config::load(&path, env(&[])).unwrap(), Config::default());
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:5555\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let cfg = Config::load(&path, env(&[])).unwrap();
        assert_eq!(cfg.api.listen.port(), 5555);
        assert_eq!(cfg.log.level, "debug");
        let cfg = Config::load(
            &path,
            env(&[
                ("XOV_API_LISTEN", "127.0.0.1:6666"),
                ("XOV_LOG_JSON", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.api.listen.port(), 6666);
        assert!(cfg.log.json);
    }

    #[test]
    fn bad_settings_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "[api]\nlisten = \"0.0.0.0:5555\"\n").unwrap();
        let err = Config::load(&path, env(&[])).unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        std::fs::write(&path, "[api]\nlsten = 1\n").unwrap();
        let err = Config::load(&path, env(&[])).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = Config::load(
            &dir.path().join("none.toml"),
            env(&[("XOV_API_LISTEN", "nope")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("XOV_API_LISTEN"), "{err}");
    }
}
