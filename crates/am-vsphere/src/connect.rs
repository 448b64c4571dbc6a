//! Connecting to vCenter, with errors that say which of the usual problems it is.

use std::time::Duration;

use vsphere_soap::{
    Client, Credentials, Error, FaultKind, Password, TlsMode, TransportErrorKind, UserSession,
};

/// How to reach and log in to vCenter.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    /// The SDK URL (`https://vc.example/sdk`; a bare host name gets `https://` and `/sdk`).
    pub url: String,
    /// The user to log in as.
    pub user: String,
    /// Its password.
    pub password: Password,
    /// How the server certificate is checked.
    pub tls: TlsMode,
    /// Timeout of ordinary calls.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Responses larger than this are refused.
    pub max_response_bytes: usize,
}

impl ConnectSettings {
    /// Settings with the default timeouts (60 s per call, 10 s to connect).
    pub fn new(url: &str, user: &str, password: Password, tls: TlsMode) -> Self {
        ConnectSettings {
            url: url.to_owned(),
            user: user.to_owned(),
            password,
            tls,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: vsphere_soap::DEFAULT_MAX_BODY,
        }
    }
}

/// Why the connection failed, naming the URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No answer: wrong address, vCenter down, a firewall.
    #[error("vCenter at {url} is unreachable: {detail}")]
    Unreachable {
        /// The SDK URL.
        url: String,
        /// What the transport said.
        detail: String,
    },
    /// The TLS handshake or the certificate check failed (wrong CA file or thumbprint, a
    /// self-signed certificate without either).
    #[error("TLS with vCenter at {url} failed: {detail} (check vcenter.ca_file or vcenter.thumbprint)")]
    Tls {
        /// The SDK URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// vCenter refused the user name or password.
    #[error("vCenter at {url} refused the login of `{user}`: {detail}")]
    Login {
        /// The SDK URL.
        url: String,
        /// The user.
        user: String,
        /// vCenter's message.
        detail: String,
    },
    /// Anything else (not a vCenter, a bad URL, ...).
    #[error("vCenter at {url}: {detail}")]
    Other {
        /// The SDK URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
}

/// Connects and logs in; returns the client and the session (whose `user_name` is the name
/// vCenter writes in events for this user's actions, e.g. `VSPHERE.LOCAL\svc-am`).
pub async fn connect(s: &ConnectSettings) -> Result<(Client, UserSession), ConnectError> {
    let builder = Client::builder(&s.url)
        .tls(s.tls.clone())
        .credentials(Credentials::new(s.user.clone(), s.password.clone()))
        .timeout(s.timeout)
        .connect_timeout(s.connect_timeout)
        .max_response_bytes(s.max_response_bytes);
    let url = builder.url().to_owned();
    let client = builder.connect().await.map_err(|e| classify(&url, &s.user, &e))?;
    let session = client
        .current_session()
        .await
        .map_err(|e| classify(&url, &s.user, &e))?
        .ok_or_else(|| ConnectError::Login {
            url: url.clone(),
            user: s.user.clone(),
            detail: "logged in, but vCenter reports no session".into(),
        })?;
    Ok((client, session))
}

/// Which kind of connection problem `e` is.
pub fn classify(url: &str, user: &str, e: &Error) -> ConnectError {
    let detail = e.to_string();
    let url = url.to_owned();
    match e {
        Error::Transport { source, .. } => match source.kind {
            TransportErrorKind::Tls => ConnectError::Tls { url, detail },
            _ => ConnectError::Unreachable { url, detail },
        },
        Error::Config(msg)
            if ["TLS", "CA file", "trust store", "thumbprint", "certificate"]
                .iter()
                .any(|w| msg.contains(w)) =>
        {
            ConnectError::Tls { url, detail }
        }
        Error::Http {
            status: 502..=504, ..
        } => ConnectError::Unreachable { url, detail },
        _ if matches!(
            e.vim_fault().map(|f| &f.kind),
            Some(FaultKind::InvalidLogin | FaultKind::NoPermission { .. } | FaultKind::NotAuthenticated)
        ) =>
        {
            ConnectError::Login {
                url,
                user: user.to_owned(),
                detail,
            }
        }
        _ => ConnectError::Other { url, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsphere_soap::{SoapFault, TransportError, Value, VimFault};

    #[test]
    fn errors_are_classified_and_name_the_url() {
        let url = "https://vc.example/sdk";
        let tls = Error::Transport {
            method: "RetrieveServiceContent".into(),
            source: TransportError::new(TransportErrorKind::Tls, "invalid peer certificate"),
        };
        let e = classify(url, "am", &tls);
        assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains(url), "{e}");
        let refused = Error::Transport {
            method: "RetrieveServiceContent".into(),
            source: TransportError::new(TransportErrorKind::Connect, "connection refused"),
        };
        assert!(matches!(
            classify(url, "am", &refused),
            ConnectError::Unreachable { .. }
        ));
        let login = Error::Fault {
            method: "Login".into(),
            fault: Box::new(SoapFault {
                code: "ServerFaultCode".into(),
                message: "Cannot complete login due to an incorrect user name or password.".into(),
                vim: Some(VimFault::from_value(
                    "InvalidLogin",
                    Value::Text(String::new()),
                    String::new(),
                    String::new(),
                )),
            }),
        };
        let e = classify(url, "am", &login);
        assert!(
            matches!(e, ConnectError::Login { ref user, .. } if user == "am"),
            "{e:?}"
        );
        let ca = Error::Config("CA file /nope: No such file".into());
        assert!(matches!(classify(url, "am", &ca), ConnectError::Tls { .. }));
    }
}
