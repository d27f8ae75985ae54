//! Guarding a streamed answer: text is held back just long enough that a
//! value split across chunks (`4111 11` + `11 1111 1111 1111`) is seen whole
//! before any of it is released, then released masked.
//!
//! The last [`HOLD_BACK`] bytes of each choice's text are held, moved back
//! to the start of the word they cut, and back again to the start of any
//! value found across the cut. Every PII value the detectors know is
//! shorter than the window (an IBAN with spaces is at most 42 bytes), so a
//! value that is still arriving is always in the held part. Content rules
//! read the held text with the last [`CONTEXT`] bytes released before it.

use std::sync::Arc;

use crate::Guardrails;

/// Bytes of answer text held back from the client.
pub const HOLD_BACK: usize = 64;

/// Released text kept as context for content rules.
const CONTEXT: usize = 512;

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
}

impl StreamGuard {
    pub(crate) fn new(guardrails: Arc<Guardrails>) -> StreamGuard {
        StreamGuard {
            guardrails,
            choices: Vec::new(),
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
        let c = self.choice(index);
        c.held.push_str(delta);
        if c.held.len() <= HOLD_BACK {
            return Release::Text(String::new());
        }
        let mut cut = floor_boundary(&c.held, c.held.len() - HOLD_BACK);
        // Back to the start of the word the cut falls in.
        let word_start = c.held[..cut]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        if cut - word_start <= LONGEST_WORD {
            cut = word_start;
        }
        release(&g, c, cut, false)
    }

    /// Ends choice `index`: releases everything it still holds.
    pub fn finish(&mut self, index: u32) -> Release {
        let g = self.guardrails.clone();
        let c = self.choice(index);
        let all = c.held.len();
        release(&g, c, all, true)
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
    if let Some(check) = g.answer_content() {
        let mut window = String::with_capacity(c.context.len() + c.held.len());
        window.push_str(&c.context);
        window.push_str(&c.held);
        if let Some((category, _, _)) = crate::content_hits(check, &window)
            .into_iter()
            .find(|(_, a, _)| *a == loom_config::schema::ContentAction::Block)
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

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
