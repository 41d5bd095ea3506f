//! The coordinators a [`crate::Client`] may use, the one it uses now, and which requests go on
//! to the next one: the rules the crate's documentation lists ("Several coordinators"), and why.
//!
//! - A connect error means nothing was sent, so any request may go on.
//! - After a connection broke or timed out once the request was out, the coordinator may have
//!   acted on it. Only [`Safety::Repeatable`] requests go on: reads, and submissions the
//!   coordinator deduplicates by idempotency key. A second registration, message or lifecycle
//!   order would be a second one, and the client cannot tell whether the first was made.
//! - An HTTP answer is final, 503 included: a coordinator that answers is up, coordinators
//!   share one store so another would say the same, and a 503 accepted nothing, which the
//!   caller's own retry ([`crate::ClientError::is_transient`]) handles without guessing.
//!
//! The coordinator in use changes only when one fails ([`Endpoints::failed`]), never back on
//! success: every request of a client (and its clones) goes to the same coordinator until it
//! fails, which keeps its connections warm and its requests answered by one coordinator, in
//! the order it sent them.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, Url};

use crate::error::ClientError;

/// Whether a request may be sent to another coordinator after the first one may have received
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Sending it twice has the effect of sending it once: sent elsewhere after any failure
    /// without an answer.
    Repeatable,
    /// It might act twice: sent elsewhere only when the connection could not be made.
    Once,
}

impl Safety {
    /// `GET` and `HEAD` are repeatable; every other method acts.
    pub(crate) fn of(method: &Method) -> Safety {
        if *method == Method::GET || *method == Method::HEAD {
            Safety::Repeatable
        } else {
            Safety::Once
        }
    }
}

/// The coordinators of a client, in the order given, and the one in use.
#[derive(Debug)]
pub(crate) struct Endpoints {
    /// Base URLs, without `/api/v1`.
    urls: Vec<Url>,
    /// The same as text, without a trailing `/`.
    bases: Vec<String>,
    /// The index of the one in use.
    current: AtomicUsize,
}

impl Endpoints {
    /// Parses base URLs: each may be a comma-separated list (`--url http://a:7171,http://b:7171`).
    /// Empty entries are skipped, repeated ones kept once; at least one is needed.
    pub(crate) fn parse<S: AsRef<str>>(given: &[S]) -> Result<Endpoints, ClientError> {
        let mut urls: Vec<Url> = Vec::new();
        for item in given {
            for one in item.as_ref().split(',') {
                let one = one.trim();
                if one.is_empty() {
                    continue;
                }
                let url = parse_base(one)?;
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        if urls.is_empty() {
            let text: Vec<&str> = given.iter().map(AsRef::as_ref).collect();
            return Err(ClientError::InvalidUrl {
                url: text.join(","),
                message: "no coordinator URL in it (expected something like \
                          http://127.0.0.1:7171, or several separated by commas)"
                    .into(),
            });
        }
        let bases = urls
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .collect();
        Ok(Endpoints {
            urls,
            bases,
            current: AtomicUsize::new(0),
        })
    }

    /// How many coordinators there are.
    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The index of the coordinator in use.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.len()
    }

    /// Coordinator `i`'s base URL as text, without a trailing `/`.
    pub(crate) fn base(&self, i: usize) -> &str {
        &self.bases[i]
    }

    /// Every base URL, in order.
    pub(crate) fn bases(&self) -> &[String] {
        &self.bases
    }

    /// Whether any coordinator is reached over `https://`.
    pub(crate) fn any_https(&self) -> bool {
        self.urls.iter().any(|u| u.scheme() == "https")
    }

    /// The base the client's requests are written against (the first): [`Endpoints::rebase`]
    /// moves them to another coordinator.
    pub(crate) fn template(&self) -> &Url {
        &self.urls[0]
    }

    /// `url`, written against [`Endpoints::template`], moved to coordinator `i`.
    pub(crate) fn rebase(&self, url: &Url, i: usize) -> Result<Url, ClientError> {
        if i == 0 {
            return Ok(url.clone());
        }
        let text = url.as_str();
        let rest =
            text.strip_prefix(self.bases[0].as_str())
                .ok_or_else(|| ClientError::InvalidUrl {
                    url: text.to_owned(),
                    message: format!("not under the coordinator's base URL {}", self.bases[0]),
                })?;
        let moved = format!("{}{rest}", self.bases[i]);
        Url::parse(&moved).map_err(|e| ClientError::InvalidUrl {
            url: moved.clone(),
            message: e.to_string(),
        })
    }

    /// The order to try the coordinators in for one request: the one in use, then the others
    /// after it in the list, each once.
    pub(crate) fn round(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.len();
        let start = self.current();
        (0..n).map(move |k| (start + k) % n)
    }

    /// Coordinator `i` gave no answer (`why`): if it is the one in use, the next one is from now
    /// on. (When a concurrent request moved on already, this changes nothing: a coordinator is
    /// never skipped twice for one failure.)
    pub(crate) fn failed(&self, i: usize, why: &ClientError) {
        let n = self.len();
        if n < 2 {
            return;
        }
        let next = (i + 1) % n;
        if self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                "no answer from the coordinator at {} ({}); moving to {}",
                self.bases[i],
                why.cause(),
                self.bases[next]
            );
        }
    }
}

/// One base URL: `http(s)://host[:port][/prefix]`, a trailing `/` or `/api/v1` ignored.
fn parse_base(given: &str) -> Result<Url, ClientError> {
    let invalid = |message: String| ClientError::InvalidUrl {
        url: given.to_owned(),
        message,
    };
    let trimmed = given.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
    let base = Url::parse(trimmed).map_err(|e| {
        invalid(format!(
            "{e} (expected something like http://127.0.0.1:7171)"
        ))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".into()));
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err(invalid("it has no host".into()));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment".into()));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(list: &str) -> Endpoints {
        Endpoints::parse(&[list]).unwrap()
    }

    #[test]
    fn a_list_is_split_trimmed_and_deduplicated() {
        let e = endpoints(" http://a:1/ , http://b:2/api/v1,,http://a:1,");
        assert_eq!(e.bases(), ["http://a:1", "http://b:2"]);
        let e = Endpoints::parse(&["http://a:1", "https://b:2,http://c:3"]).unwrap();
        assert_eq!(e.bases(), ["http://a:1", "https://b:2", "http://c:3"]);
        assert!(e.any_https());
        for empty in ["", " , ,"] {
            let err = Endpoints::parse(&[empty]).unwrap_err().to_string();
            assert!(err.contains("no coordinator URL"), "{err}");
        }
        let err = Endpoints::parse(&["http://a:1,ftp://b"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"ftp://b\"") && err.contains("http or https"),
            "{err}"
        );
    }

    #[test]
    fn requests_move_to_another_base_with_their_path_and_query() {
        let e = endpoints("http://a:1/prefix,https://b:2");
        let mut url = e.template().clone();
        url.path_segments_mut()
            .unwrap()
            .pop_if_empty()
            .extend(["api", "v1", "swarms", "a b"]);
        url.query_pairs_mut().append_pair("wait", "30");
        assert_eq!(
            e.rebase(&url, 0).unwrap().as_str(),
            "http://a:1/prefix/api/v1/swarms/a%20b?wait=30"
        );
        assert_eq!(
            e.rebase(&url, 1).unwrap().as_str(),
            "https://b:2/api/v1/swarms/a%20b?wait=30"
        );
    }

    #[test]
    fn a_failure_moves_on_once_and_rounds_start_at_the_one_in_use() {
        let e = endpoints("http://a:1,http://b:2,http://c:3");
        let why = ClientError::no_answer("http://a:1", "Connection refused", true, false);
        assert_eq!(e.round().collect::<Vec<_>>(), [0, 1, 2]);
        e.failed(0, &why);
        assert_eq!(e.current(), 1);
        // A second request that also found `a` down does not skip `b`.
        e.failed(0, &why);
        assert_eq!(e.current(), 1);
        assert_eq!(e.round().collect::<Vec<_>>(), [1, 2, 0]);
        e.failed(1, &why);
        e.failed(2, &why);
        assert_eq!(e.current(), 0);
        let one = endpoints("http://a:1");
        one.failed(0, &why);
        assert_eq!(one.round().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn only_reads_are_repeatable_by_method() {
        assert_eq!(Safety::of(&Method::GET), Safety::Repeatable);
        assert_eq!(Safety::of(&Method::HEAD), Safety::Repeatable);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(Safety::of(&m), Safety::Once, "{m}");
        }
    }
}
