//! What can go wrong with etcd, each naming what and where.

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A setting makes no sense (no endpoint, a TTL under a second, ...).
    #[error("etcd settings: {0}")]
    Settings(String),
    /// No endpoint answered (refused, timed out, name unknown).
    #[error("etcd at {endpoints} is unreachable: {detail}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the transport said.
        detail: String,
    },
    /// etcd refused the user name or password, or the user lacks a permission on the prefix.
    #[error("etcd at {endpoints} refused user {user:?}: {detail}")]
    Auth {
        /// The endpoints.
        endpoints: String,
        /// The user (`None`: no user was configured, and etcd has auth on).
        user: Option<String>,
        /// What etcd said.
        detail: String,
    },
    /// A request failed once connected.
    #[error("etcd {op} on {key}: {detail}")]
    Request {
        /// What was asked (`txn`, `get`, `lease grant`, ...).
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// What etcd said.
        detail: String,
    },
    /// A request did not answer in time.
    #[error("etcd {op} on {key} did not answer within {after_ms} ms")]
    Timeout {
        /// What was asked.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The timeout.
        after_ms: u64,
    },
    /// A value stored under the prefix is not what this program writes.
    #[error("etcd key {key} holds an unreadable value: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why it cannot be read.
        detail: String,
    },
    /// The leader key no longer has this daemon's creation revision: another daemon leads, or
    /// the lease expired. Nothing more may be written or done.
    #[error("fenced: this daemon no longer leads unit {unit} (token {token}): {detail}")]
    Fenced {
        /// The unit of work.
        unit: String,
        /// The token that no longer holds.
        token: i64,
        /// What showed it.
        detail: String,
    },
    /// The etcd thread is gone (the process is stopping).
    #[error("the etcd client's runtime stopped")]
    Stopped,
}

impl EtcdError {
    /// Whether trying again later may succeed (etcd unreachable, slow, or a request failed), as
    /// opposed to settings, a refused login, an unreadable value or a lost leadership.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. } | EtcdError::Request { .. }
        )
    }
}

/// Results of this crate.
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// gRPC status codes (their numbers are fixed by the gRPC protocol).
const DEADLINE_EXCEEDED: i32 = 4;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// Whether an etcd error says "wrong user or password / not allowed".
pub(crate) fn is_auth(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = i32::from(s.code());
            code == UNAUTHENTICATED
                || code == PERMISSION_DENIED
                || s.message().contains("authentication failed")
                || s.message().contains("user name is empty")
                || s.message().contains("invalid auth token")
        }
        _ => false,
    }
}

/// Whether an etcd error says "could not reach it".
pub(crate) fn is_unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            let code = i32::from(s.code());
            code == UNAVAILABLE || code == DEADLINE_EXCEEDED
        }
        _ => false,
    }
}
