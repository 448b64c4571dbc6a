//! The crate's one error type.

/// What went wrong serving the API or talking to it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listener failed in a way that stops the server.
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
    /// A URL given to the client is not one it can use.
    #[error("bad URL `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The client could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, malformed response).
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        /// The request's URL.
        url: String,
        /// The protocol error.
        #[source]
        source: hyper::Error,
    },
    /// The request was not answered in time.
    #[error("no answer from {url} within {secs}s")]
    Timeout {
        /// The request's URL.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// The daemon answered with an error status.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The error message of the JSON body (or the body itself).
        message: String,
    },
    /// The answer is not the JSON expected.
    #[error("cannot decode the answer of {url}: {source}")]
    Decode {
        /// The request's URL.
        url: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The API token cannot be used (empty, unreadable file, unset variable). Never contains the
    /// token itself.
    #[error("API token: {0}")]
    Token(String),
}

/// `Result` with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
