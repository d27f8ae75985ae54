//! Scrubs the configuration's credentials from text Loom sends to a client
//! or writes to a log when that text came from outside: a provider whose
//! error body repeats the `Authorization`, `x-api-key` or `api-key` it was
//! sent (some do, and so do proxies in front of them), a connection error
//! that names a URL with a key in it.
//!
//! The patterns are matched by one Aho-Corasick automaton built per
//! configuration; only error paths run it, never a successful answer.
//! It is held process-wide (like the log subscriber) because provider
//! errors become client errors in many places, each of which would
//! otherwise need the configuration passed down: one funnel,
//! `ApiError::from(loom_providers::Error)`, scrubs them all.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwap;
use bytes::Bytes;

/// What a secret is replaced with.
pub const MARK: &str = "[REDACTED]";

/// Credentials shorter than this are not scrubbed: a short value (`sk`,
/// `test`) is too likely to be ordinary text, and too weak to be a real
/// key worth hiding.
const MIN_LEN: usize = 6;

/// The credentials to scrub and their automaton.
#[derive(Default)]
pub struct Redactor {
    /// This configuration's secrets.
    own: Vec<String>,
    /// `own` and the previous configuration's, matched together so that an
    /// answer to a request started before a reload is scrubbed too.
    matcher: Option<AhoCorasick>,
}

static CURRENT: LazyLock<ArcSwap<Redactor>> =
    LazyLock::new(|| ArcSwap::from_pointee(Redactor::default()));

impl Redactor {
    fn new(own: Vec<String>, previous: &[String]) -> Redactor {
        let mut all: Vec<&str> = own
            .iter()
            .chain(previous)
            .map(String::as_str)
            .filter(|s| s.len() >= MIN_LEN)
            .collect();
        all.sort_unstable();
        all.dedup();
        let matcher = (!all.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&all)
                    .ok()
            })
            .flatten();
        Redactor { own, matcher }
    }

    fn str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => {
                Cow::Owned(m.replace_all(text, &vec![MARK; m.patterns_len()]))
            }
            _ => Cow::Borrowed(text),
        }
    }

    fn bytes(&self, body: &Bytes) -> Bytes {
        match &self.matcher {
            Some(m) if m.is_match(body.as_ref()) => {
                Bytes::from(m.replace_all_bytes(body, &vec![MARK.as_bytes(); m.patterns_len()]))
            }
            _ => body.clone(),
        }
    }
}

/// Makes `config`'s credentials (and the previous configuration's) the ones
/// scrubbed from now on. Called when a configuration starts serving.
pub fn install(config: &loom_config::Config) {
    let own: Vec<String> = config.secrets().into_iter().map(str::to_owned).collect();
    let previous = CURRENT.load();
    CURRENT.store(Arc::new(Redactor::new(own, &previous.own)));
}

/// `text` with every configured credential replaced by [`MARK`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    // `load` borrows the guard only for the call; the result does not keep it.
    match CURRENT.load().str(text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// `body` with every configured credential replaced by [`MARK`].
pub fn scrub_bytes(body: &Bytes) -> Bytes {
    CURRENT.load().bytes(body)
}

/// The log's writer: standard error with every configured credential
/// scrubbed from each line, whatever wrote it (a dependency's error message
/// that quotes a URL with a password, say). The formatter hands over one
/// whole event per write; a line without a credential is written as it is.
pub struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let current = CURRENT.load();
        match &current.matcher {
            Some(m) if m.is_match(buf) => {
                let clean = m.replace_all_bytes(buf, &vec![MARK.as_bytes(); m.patterns_len()]);
                std::io::stderr().write_all(&clean)?;
            }
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A provider error with every credential scrubbed from the text it
/// carries (its message, its body, the detail of a transport failure).
pub fn provider_error(e: loom_providers::Error) -> loom_providers::Error {
    use loom_providers::Error as E;
    let s = |t: String| match scrub(&t) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => o,
    };
    match e {
        E::Status {
            provider,
            status,
            message,
            body,
            content_type,
            retry_after,
        } => E::Status {
            provider,
            status,
            message: s(message),
            body: scrub_bytes(&body),
            content_type,
            retry_after,
        },
        E::Connect { provider, detail } => E::Connect {
            provider,
            detail: s(detail),
        },
        E::Stream { provider, detail } => E::Stream {
            provider,
            detail: s(detail),
        },
        E::InvalidResponse { provider, detail } => E::InvalidResponse {
            provider,
            detail: s(detail),
        },
        E::Unavailable(m) => E::Unavailable(s(m)),
        E::Unsupported(m) => E::Unsupported(s(m)),
        other @ (E::UnknownModel { .. } | E::Timeout { .. }) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_wherever_they_appear() {
        let r = Redactor::new(
            vec!["sk-live-abcdef".into(), "sk-live-abcdef-longer".into()],
            &["old-key-123456".into(), "tiny".into()],
        );
        assert_eq!(
            r.str("bad key: Bearer sk-live-abcdef-longer; also sk-live-abcdef and old-key-123456, tiny"),
            "bad key: Bearer [REDACTED]; also [REDACTED] and [REDACTED], tiny"
        );
        assert!(matches!(r.str("nothing here"), Cow::Borrowed(_)));
        let body = Bytes::from_static(br#"{"error":{"message":"key sk-live-abcdef"}}"#);
        assert_eq!(
            r.bytes(&body),
            Bytes::from_static(br#"{"error":{"message":"key [REDACTED]"}}"#)
        );
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        let r = Redactor::default();
        assert_eq!(r.str("sk-anything"), "sk-anything");
    }
}
