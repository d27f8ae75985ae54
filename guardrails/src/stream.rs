//! Guarding a streamed answer: text is held back just long enough that a
//! value split across chunks (`4111 11` + `11 1111 1111 1111`) is seen whole
//! before any of it is released, then released masked.
//!
//! Held is only what may still grow into a value: an unfinished last word
//! (an e-mail address may be arriving) and any run of digit or IBAN groups
//! that nothing but separators follows yet. Everything before is released,
//! masked, at once, so the delay is usually one word. With custom PII
//! patterns, whose values can look like anything, the last [`HOLD_BACK`]
//! bytes are held as well. Content rules read the held text with the last
//! [`CONTEXT`] bytes released before it.

use std::sync::Arc;

use crate::Guardrails;
use crate::pii::Vault;

/// Bytes of answer text held back when custom PII patterns are configured
/// (built-in kinds need only the open tail, see [`open_tail`]).
pub const HOLD_BACK: usize = 64;

/// Released text kept as context for content rules: a rule spans one
/// sentence, rarely more than 120 bytes.
const CONTEXT: usize = 160;

/// A word longer than this is cut anyway (a long URL or base64 blob).
const LONGEST_WORD: usize = 256;

/// What may be sent to the client now.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Text to send (may be empty: everything is held for now).
    Text(String),
    /// The answer has content of a blocked category: stop it here with
    /// `finish_reason: content_filter`.
    Filtered { category: &'static str },
}

#[derive(Debug, Default)]
struct Choice {
    index: u32,
    held: String,
    /// The tail of what was released, for content rules.
    context: String,
}

/// The guard of one streamed answer.
#[derive(Debug)]
pub struct StreamGuard {
    guardrails: Arc<Guardrails>,
    choices: Vec<Choice>,
    /// Values to put back (reversible masking).
    vault: Option<Vault>,
}

impl StreamGuard {
    pub(crate) fn new(guardrails: Arc<Guardrails>, vault: Option<Vault>) -> StreamGuard {
        StreamGuard {
            guardrails,
            choices: Vec::new(),
            vault,
        }
    }

    fn choice(&mut self, index: u32) -> &mut Choice {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(Choice {
                    index,
                    ..Choice::default()
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }

    /// Adds text of choice `index`; returns what may be released.
    pub fn push(&mut self, index: u32, delta: &str) -> Release {
        let g = self.guardrails.clone();
        let custom = g.answer_pii().is_some_and(|p| p.detector.has_custom());
        let c = self.choice(index);
        c.held.push_str(delta);
        let mut cut = open_tail(&c.held);
        if custom {
            // A custom pattern's values can look like anything: keep the
            // fixed window, from the start of the word it cuts.
            let window = floor_boundary(&c.held, c.held.len().saturating_sub(HOLD_BACK));
            let word_start = c.held[..window]
                .rfind(char::is_whitespace)
                .map_or(0, |i| i + 1);
            cut = cut.min(if window - word_start <= LONGEST_WORD {
                word_start
            } else {
                window
            });
        }
        if c.held.len() - cut > LONGEST_WORD {
            // A run that never ends (a long blob): release all but the window.
            cut = floor_boundary(&c.held, c.held.len() - HOLD_BACK);
        }
        if cut == 0 {
            return Release::Text(String::new());
        }
        let out = release(&g, c, cut, false);
        self.restored(out)
    }

    /// Bytes of choice `index` held back right now.
    pub fn held(&self, index: u32) -> usize {
        self.choices
            .iter()
            .find(|c| c.index == index)
            .map_or(0, |c| c.held.len())
    }

    /// Ends choice `index`: releases everything it still holds.
    pub fn finish(&mut self, index: u32) -> Release {
        let g = self.guardrails.clone();
        let c = self.choice(index);
        let all = c.held.len();
        let out = release(&g, c, all, true);
        self.restored(out)
    }

    fn restored(&self, r: Release) -> Release {
        match (r, &self.vault) {
            (Release::Text(t), Some(v)) if !t.is_empty() => Release::Text(v.restore(&t)),
            (r, _) => r,
        }
    }

    /// Ends every choice; (index, release) for each that held text.
    pub fn finish_all(&mut self) -> Vec<(u32, Release)> {
        let indexes: Vec<u32> = self
            .choices
            .iter()
            .filter(|c| !c.held.is_empty())
            .map(|c| c.index)
            .collect();
        indexes.into_iter().map(|i| (i, self.finish(i))).collect()
    }
}

/// Releases `held[..cut]` (moved back before any value that crosses it),
/// masked, after the content check.
fn release(g: &Guardrails, c: &mut Choice, mut cut: usize, last: bool) -> Release {
    // A rule can only complete where a word ends: skip the content check
    // while a word is still arriving.
    let word_ended = last || c.held.ends_with(|ch: char| !ch.is_alphanumeric());
    if let Some(check) = g.answer_content().filter(|_| word_ended) {
        let mut window = String::with_capacity(c.context.len() + c.held.len());
        window.push_str(&c.context);
        window.push_str(&c.held);
        if let Some((category, _, _)) = crate::answer_content_hits(check, &window)
            .into_iter()
            .find(|(_, a, _)| *a == loom_config::settings::ContentAction::Block)
        {
            g.observer.blocked("content_filter");
            c.held.clear();
            return Release::Filtered {
                category: category.name(),
            };
        }
    }
    let mut out = match g.answer_pii() {
        Some(check) => {
            let found = check.detector.find(&c.held);
            if !last && let Some(crossing) = found.iter().find(|f| f.start < cut && f.end > cut) {
                cut = crossing.start;
            }
            let done: Vec<_> = found.into_iter().filter(|f| f.end <= cut).collect();
            if done.is_empty() || !check.masks_answers() {
                if !done.is_empty() {
                    g.count_pii(&check.detector, &done);
                }
                c.held[..cut].to_owned()
            } else {
                g.count_pii(&check.detector, &done);
                check.detector.masked(&c.held[..cut], &done)
            }
        }
        None => c.held[..cut].to_owned(),
    };
    c.held.drain(..cut);
    c.context.push_str(&out);
    if c.context.len() > CONTEXT {
        let from = floor_boundary(&c.context, c.context.len() - CONTEXT);
        c.context.drain(..from);
    }
    out.shrink_to_fit();
    Release::Text(out)
}

/// Where the part of `held` that may still grow into a PII value begins:
/// the last word when it is unfinished (an e-mail address may be arriving),
/// and before it any run of digit groups (`4111 1111 11`, `+44 20`,
/// `(415) 555`) or IBAN groups (`GB82 WEST 12`) that nothing but separators
/// follows yet. Plain finished words are released at once, so the delay a
/// client sees is usually one word, not a fixed window.
fn open_tail(held: &str) -> usize {
    let b = held.as_bytes();
    let groupish = |c: u8| c.is_ascii_digit() || c.is_ascii_uppercase() || c == b'+';
    let sep = |c: u8| matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/' | b':');
    let mut cut = b.len();
    if b.last().is_some_and(|c| !c.is_ascii_whitespace()) {
        let start = b
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .map_or(0, |i| i + 1);
        let word = &b[start..];
        cut = start;
        // A word that cannot be part of a number or IBAN run ends the tail.
        if !word.iter().all(|&c| groupish(c) || sep(c)) {
            // An opening parenthesis or plus belongs to the number after it.
            if cut > 0 && cut < b.len() && matches!(b[cut - 1], b'(' | b'+') {
                cut -= 1;
            }
            return cut;
        }
    }
    // Walk back over groups joined by at most two separators.
    loop {
        let mut k = cut;
        let mut seps = 0;
        while k > 0 && seps < 2 && sep(b[k - 1]) {
            k -= 1;
            seps += 1;
        }
        let end = k;
        while k > 0 && groupish(b[k - 1]) && end - k < 8 {
            k -= 1;
        }
        let group = &b[k..end];
        let numeric = group.iter().any(u8::is_ascii_digit);
        let capitals =
            !group.is_empty() && group.len() <= 4 && group.iter().all(u8::is_ascii_uppercase);
        // Only a whole group counts (not the tail of a longer word).
        let whole = k == 0 || !b[k - 1].is_ascii_alphanumeric();
        if group.is_empty() || !(numeric || capitals) || !whole {
            // An opening parenthesis or plus belongs to the number after it.
            if cut > 0 && cut < b.len() && matches!(b[cut - 1], b'(' | b'+') {
                cut -= 1;
            }
            return cut;
        }
        cut = k;
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::open_tail;

    #[test]
    fn only_what_may_still_become_pii_is_held() {
        fn tail(s: &str) -> &str {
            &s[open_tail(s)..]
        }
        assert_eq!(tail("the card on file is 4111 "), "4111 ");
        assert_eq!(tail("the card on file is 4111 1111 11"), "4111 1111 11");
        assert_eq!(tail("call +44 20 79"), "+44 20 79");
        assert_eq!(tail("call (415) 555-"), "(415) 555-");
        // A short capitals word before it is held too (it could be a group).
        assert_eq!(tail("pay to GB82 WEST 12"), "GB82 WEST 12");
        assert_eq!(tail("write to jane.do"), "jane.do");
        assert_eq!(tail("write to jane.doe@exa"), "jane.doe@exa");
        assert_eq!(tail("all plain words "), "");
        assert_eq!(tail("4111 1111 1111 1111 and the"), "the");
        assert_eq!(tail("version 2 "), "2 ");
    }
}
