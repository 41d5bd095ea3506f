//! [`ClientError`]: why a call to the coordinator failed, in one line a person can act on.

use std::error::Error as _;

use flotilla_core::api::ErrorBody;

/// Why a call to the coordinator failed.
///
/// Its `Display` is always a single line that says what went wrong and, where it can, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error status (`{"error": {"code", "message"}}`).
    #[error("{message} ({status} {code})")]
    Api {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The API's error code, e.g. `not_found`; `http_<status>` when the body had none.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The request did not get an answer: connection refused, reset, timed out…
    #[error("{message}")]
    Http {
        /// The coordinator's base URL; when none of several answered, every one tried,
        /// separated by `, `.
        url: String,
        /// What happened, with a hint.
        message: String,
        /// What went wrong, as the transport said it (e.g. `Connection refused (os error
        /// 111)`), without the URL or a hint.
        cause: String,
        /// Whether the connection itself could not be made (nothing listening, DNS, …).
        connect: bool,
        /// Whether the request timed out.
        timeout: bool,
    },
    /// The coordinator answered something this client could not read.
    #[error("unexpected answer from the coordinator at {url}: {message}")]
    Decode {
        /// The URL requested.
        url: String,
        /// What could not be read.
        message: String,
    },
    /// The coordinator reported a failure on an agent's message socket
    /// ([`crate::MessageSocket`]); it closes the socket after one.
    #[error("the message socket failed: {message}")]
    Socket {
        /// What the coordinator said.
        message: String,
    },
    /// The certificates to trust ([`crate::ClientOptions::ca_cert`]) cannot be used.
    #[error("cannot use the CA certificate file {path:?}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The base URL given to [`crate::Client::new`] is not usable.
    #[error("invalid coordinator URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is not usable.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API error code of an [`ClientError::Api`] error (`not_found`, `conflict`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the coordinator answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the coordinator answered 409 (the request does not fit the current state).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Whether a request sent with [`crate::Client::request`] got no response in time (504
    /// `request_timeout`; the request stays sent, and its recipient may still answer later).
    pub fn is_request_timeout(&self) -> bool {
        self.status() == Some(504) && self.code() == Some("request_timeout")
    }

    /// Whether the same request may succeed later: no answer at all, a timeout, 408, 429 or a
    /// 5xx status (503 `unavailable` means nothing was accepted).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Http { .. } => true,
            ClientError::Api { status, .. } => {
                matches!(*status, 408 | 429) || (500..600).contains(status)
            }
            ClientError::Decode { .. }
            | ClientError::InvalidUrl { .. }
            | ClientError::Tls { .. }
            | ClientError::Socket { .. } => false,
        }
    }

    /// Builds the error for an answer with an error status from its body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> ClientError {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return ClientError::Api {
                status,
                code: parsed.error.code,
                message: one_line(&parsed.error.message),
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = one_line(text.trim());
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let message = if text.is_empty() {
            format!("the coordinator answered {status} {reason}")
        } else {
            format!(
                "the coordinator answered {status} {reason}: {}",
                truncate(&text, 200)
            )
        };
        ClientError::Api {
            status,
            code: format!("http_{status}"),
            message,
        }
    }

    /// Builds the error for a request that got no answer.
    pub(crate) fn from_reqwest(base: &str, err: &reqwest::Error) -> ClientError {
        ClientError::no_answer(base, &root_cause(err), err.is_connect(), err.is_timeout())
    }

    /// Builds the error for a request that got no answer, from what went wrong (`cause`):
    /// whether the connection could not be made, or the answer did not come in time.
    pub(crate) fn no_answer(base: &str, cause: &str, connect: bool, timeout: bool) -> ClientError {
        let message = if is_untrusted_certificate(cause) {
            format!(
                "the coordinator at {base} presented a certificate this client does not trust \
                 ({cause}); if it is self-signed or from a private CA, pass --ca-cert FILE or set \
                 FLOTILLA_CA_CERT"
            )
        } else if is_not_tls(cause) {
            format!(
                "the coordinator at {base} does not answer in TLS ({cause}); if it serves plain \
                 HTTP, use an http:// URL"
            )
        } else if connect {
            format!(
                "cannot reach the coordinator at {base}: {cause} — is `flotilla serve` running? \
                 (set --url or FLOTILLA_URL if it listens elsewhere)"
            )
        } else if timeout {
            format!("the coordinator at {base} did not answer in time: {cause}")
        } else {
            format!("request to the coordinator at {base} failed: {cause}")
        };
        ClientError::Http {
            url: base.to_owned(),
            message: one_line(&message),
            cause: one_line(cause),
            connect,
            timeout,
        }
    }

    /// Builds the error for a connection that broke or fell silent, said in `message`.
    pub(crate) fn lost(base: &str, message: &str, timeout: bool) -> ClientError {
        ClientError::Http {
            url: base.to_owned(),
            message: one_line(message),
            cause: one_line(message),
            connect: false,
            timeout,
        }
    }

    /// What went wrong, briefly: the transport's words for an error without an answer, the
    /// whole message otherwise.
    pub(crate) fn cause(&self) -> String {
        match self {
            ClientError::Http { cause, .. } => cause.clone(),
            other => other.to_string(),
        }
    }

    /// The error of a request that none of several coordinators answered (`tried`: what each
    /// said, in the order tried). One error is returned as it is.
    pub(crate) fn none_answered(mut tried: Vec<ClientError>) -> ClientError {
        if tried.len() == 1 {
            return tried.remove(0);
        }
        let mut urls = Vec::new();
        let mut each = Vec::new();
        let (mut connect, mut timeout) = (true, false);
        let (mut untrusted, mut not_tls) = (false, false);
        for e in &tried {
            if let ClientError::Http {
                url,
                cause,
                connect: c,
                timeout: t,
                ..
            } = e
            {
                urls.push(url.as_str());
                each.push(format!("{url}: {cause}"));
                connect &= *c;
                timeout |= *t;
                untrusted |= is_untrusted_certificate(cause);
                not_tls |= is_not_tls(cause);
            }
        }
        let hint = if untrusted {
            "if a coordinator's certificate is self-signed or from a private CA, pass --ca-cert              FILE or set FLOTILLA_CA_CERT"
        } else if not_tls {
            "if a coordinator serves plain HTTP, give it an http:// URL"
        } else {
            "is `flotilla serve` running at one of them? (set --url or FLOTILLA_URL to the \
             coordinators' URLs, separated by commas)"
        };
        let message = format!(
            "none of the {} coordinators answered ({}) — {hint}",
            each.len(),
            each.join("; ")
        );
        ClientError::Http {
            url: urls.join(", "),
            message: one_line(&message),
            cause: one_line(&each.join("; ")),
            connect,
            timeout,
        }
    }

    /// This error, noting that the request was not sent to another coordinator because the
    /// one that failed may have received it (when there was another to send it to).
    pub(crate) fn not_sent_elsewhere(self, others: bool) -> ClientError {
        match self {
            ClientError::Http {
                url,
                message,
                cause,
                connect,
                timeout,
            } if others => ClientError::Http {
                message: format!(
                    "{message} (not sent to another coordinator: this one may have received \
                     it; check before repeating it)"
                ),
                url,
                cause,
                connect,
                timeout,
            },
            other => other,
        }
    }
}

/// Whether a connection failed because the server's certificate is not trusted.
fn is_untrusted_certificate(cause: &str) -> bool {
    cause.contains("invalid peer certificate")
        || cause.contains("UnknownIssuer")
        || cause.contains("certificate verify failed")
}

/// Whether a TLS connection failed because the other side does not speak TLS.
fn is_not_tls(cause: &str) -> bool {
    cause.contains("corrupt message") || cause.contains("InvalidContentType")
}

/// The innermost, most specific message of an error chain (e.g. `Connection refused (os error
/// 111)` rather than `error sending request for url …`).
fn root_cause(err: &reqwest::Error) -> String {
    let mut last = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() {
            last = text;
        }
        source = s.source();
    }
    last
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_error_body() {
        let e = ClientError::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"no swarm named \"x\""}}"#,
        );
        assert_eq!(
            e,
            ClientError::Api {
                status: 404,
                code: "not_found".into(),
                message: "no swarm named \"x\"".into()
            }
        );
        assert_eq!(e.to_string(), "no swarm named \"x\" (404 not_found)");
        assert!(e.is_not_found());
        assert!(!e.is_transient());
    }

    #[test]
    fn none_answering_names_each_with_the_hint_that_fits() {
        let refused = ClientError::no_answer("http://a:1", "Connection refused", true, false);
        let untrusted = ClientError::no_answer(
            "https://b:2",
            "invalid peer certificate: UnknownIssuer",
            true,
            false,
        );
        assert_eq!(
            ClientError::none_answered(vec![refused.clone()]),
            refused,
            "one URL: its own error"
        );
        let e = ClientError::none_answered(vec![refused.clone(), untrusted]);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "none of the 2 coordinators answered (http://a:1: Connection refused; \
                 https://b:2: invalid peer certificate: UnknownIssuer) — "
            ),
            "{text}"
        );
        assert!(text.contains("--ca-cert"), "{text}");
        assert!(
            matches!(&e, ClientError::Http { url, connect: true, .. } if url == "http://a:1, https://b:2")
        );
        let kept = refused.clone().not_sent_elsewhere(false);
        assert_eq!(kept, refused, "nowhere else to send it: nothing to say");
        let noted = refused.not_sent_elsewhere(true).to_string();
        assert!(noted.ends_with("check before repeating it)"), "{noted}");
    }

    #[test]
    fn falls_back_on_a_body_that_is_not_an_error_body() {
        let e = ClientError::from_response(502, b"<html>\n bad gateway\n</html>");
        assert_eq!(e.code(), Some("http_502"));
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("502 Bad Gateway"), "{text}");
        let empty = ClientError::from_response(503, b"");
        assert_eq!(
            empty.to_string(),
            "the coordinator answered 503 Service Unavailable (503 http_503)"
        );
    }
}
