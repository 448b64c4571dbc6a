//! Why the store failed. Every error names the journal file it is about.

use am_core::JournalError;
use std::path::PathBuf;

/// Why the journal could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created (missing directory, no permission, a directory,
    /// locked by another process past the busy timeout, ...).
    #[error("cannot open journal {path}: {source}")]
    Open {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists but is not an Availability Manager journal: not an SQLite database, or
    /// another application's database.
    #[error("{path} is not an Availability Manager journal: {detail}")]
    NotAJournal {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        detail: String,
    },
    /// The journal was written by a newer version of the program, with a schema this one does
    /// not know.
    #[error(
        "journal {path} has schema version {found}; this program knows versions up to {supported}: \
         upgrade the program or move the file away"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version (`PRAGMA user_version`).
        found: i64,
        /// The newest version this program knows.
        supported: i64,
    },
    /// A statement failed (disk full, I/O error, a constraint such as an intent id journaled
    /// twice). A failed append stored nothing.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored record could not be encoded or decoded as JSON (a damaged row, or a row written
    /// by another version with record kinds this one does not know).
    #[error("journal {path}: bad record JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A number does not fit SQLite's signed 64-bit integers. A batch holding one stored nothing.
    #[error("journal {path}: {what} {value} does not fit a signed 64-bit integer")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// Which number (`action id`, `time`).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The file's size could not be read.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<StoreError> for JournalError {
    fn from(e: StoreError) -> Self {
        JournalError::Storage(e.to_string())
    }
}

/// An error not yet tied to a path; [`Fail::at`] names the file.
#[derive(Debug)]
pub(crate) enum Fail {
    /// SQLite.
    Sql(rusqlite::Error),
    /// serde_json.
    Json(serde_json::Error),
    /// A u64 that does not fit an i64.
    Range(&'static str, u64),
}

impl Fail {
    /// The error for the journal at `path`.
    pub(crate) fn at(self, path: &std::path::Path) -> StoreError {
        let path = path.to_path_buf();
        match self {
            Fail::Sql(source) => StoreError::Sqlite { path, source },
            Fail::Json(source) => StoreError::Json { path, source },
            Fail::Range(what, value) => StoreError::OutOfRange { path, what, value },
        }
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<serde_json::Error> for Fail {
    fn from(e: serde_json::Error) -> Self {
        Fail::Json(e)
    }
}
