//! The API token. It never appears in `Debug` output, logs or error messages.

use crate::error::ApiError;
use std::path::Path;

/// A bearer token that authorizes state-changing requests. `Debug` prints `Secret(***)`; there is
/// no `Display`. Comparison with a presented token takes the same time wherever they differ, and
/// the memory is overwritten on drop (best effort).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token held in memory. Leading and trailing whitespace is dropped; an empty token is
    /// refused (it would authorize anyone sending `Authorization: Bearer `).
    pub fn new(token: impl Into<String>) -> Result<Self, ApiError> {
        let mut raw: String = token.into();
        let trimmed = raw.trim().to_owned();
        wipe(&mut raw);
        if trimmed.is_empty() {
            return Err(ApiError::Token("the token is empty".into()));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ApiError::Token(
                "the token contains whitespace or control characters".into(),
            ));
        }
        Ok(Secret(trimmed))
    }

    /// Reads the token from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, ApiError> {
        match std::env::var(var) {
            Ok(v) => Secret::new(v),
            Err(_) => Err(ApiError::Token(format!(
                "environment variable {var} is not set (or not UTF-8)"
            ))),
        }
    }

    /// Reads the token from a file (surrounding whitespace, such as a trailing newline, is dropped).
    pub fn from_file(path: &Path) -> Result<Self, ApiError> {
        match std::fs::read_to_string(path) {
            Ok(v) => Secret::new(v),
            Err(e) => Err(ApiError::Token(format!("token file {}: {e}", path.display()))),
        }
    }

    /// The token itself, to put in an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        // Fold over the longer length so that the time does not tell the token's length either.
        let n = a.len().max(b.len());
        let mut diff = u8::from(a.len() != b.len());
        for i in 0..n {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_and_matching_is_exact() {
        let s = Secret::new("s3cr3t-token\n").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(s.matches("s3cr3t-token"));
        assert!(!s.matches("s3cr3t-toke"));
        assert!(!s.matches("s3cr3t-tokenx"));
        assert!(!s.matches(""));
        assert!(Secret::new("  \n").is_err());
        assert!(Secret::new("a b").is_err());
        let err = Secret::from_env("AM_API_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.to_string().contains("AM_API_TEST_SURELY_UNSET_VAR"));
    }
}
