//! Secrets: read from the environment or a file named in the configuration, never from the
//! configuration itself, and never printed.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A secret read from the environment or a file; never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// Where a secret comes from: an environment variable or a file (never the config file itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding it.
    pub env: Option<String>,
    /// A file holding it (trailing newline ignored).
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// Reads the secret; `key` names the setting in errors.
    pub fn read(&self, key: &str) -> Result<SecretString, ConfigError> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(SecretString)
                .map_err(|_| ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!("environment variable {var} is not set"),
                }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| SecretString(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!("cannot read {}: {e}", path.display()),
                }),
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: "give either env or file, not both".into(),
            }),
            (None, None) => Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: "missing: give env = \"VAR\" or file = \"/path\"".into(),
            }),
        }
    }
}
