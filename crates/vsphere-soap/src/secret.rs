//! Credentials. Passwords come from the environment or a file and never appear in `Debug` or logs.

use std::path::Path;

use crate::Error;

/// A password. `Debug` prints `***`; there is no `Display`. Memory is overwritten on drop (best effort).
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wrap a password held in memory.
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }

    /// Read the password from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        std::env::var(var)
            .map(Password)
            .map_err(|_| Error::Config(format!("environment variable {var} is not set (or not UTF-8)")))
    }

    /// Read the password from a file; one trailing newline is dropped.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let mut s = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("password file {}: {e}", path.display())))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        Ok(Password(s))
    }

    /// The password itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

/// A user name and password for `Login`.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user, e.g. `administrator@vsphere.local`.
    pub username: String,
    /// The password.
    pub password: Password,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: Password) -> Self {
        Self {
            username: username.into(),
            password,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password() {
        let c = Credentials::new("root", Password::new("hunter2"));
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("root"));
    }

    #[test]
    fn from_file_trims_newline() {
        let dir = std::env::temp_dir().join(format!("vsphere-soap-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        assert_eq!(Password::from_file(&dir).unwrap().expose(), "s3cret");
        std::fs::remove_file(&dir).unwrap();
        assert!(Password::from_env("VSPHERE_SOAP_SURELY_UNSET_VAR").is_err());
    }
}
