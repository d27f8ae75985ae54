//! PII detection: candidates found by regular expressions compiled once,
//! then each confirmed by a validator, so that numbers which merely look
//! like PII (order numbers, Unix timestamps, dates, versions, UUIDs, prices,
//! IP addresses read as phones, part numbers) are not reported.
//!
//! Offsets are byte offsets into the text given, so a caller can mask the
//! original text in place.

use std::net::Ipv6Addr;

use regex::Regex;

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Ssn,
    CreditCard,
    Ipv4,
    Ipv6,
    Iban,
    /// A kind from configuration: the index of its pattern.
    Custom(u8),
}

impl PiiKind {
    /// Every kind, in the order findings of equal extent prefer.
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::CreditCard,
        PiiKind::Iban,
        PiiKind::Ssn,
        PiiKind::Ipv6,
        PiiKind::Ipv4,
        PiiKind::Phone,
    ];

    /// The configuration name (`email`, `phone`, `ssn`, `credit_card`, …).
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Ssn => "ssn",
            PiiKind::CreditCard => "credit_card",
            PiiKind::Ipv4 => "ipv4",
            PiiKind::Ipv6 => "ipv6",
            PiiKind::Iban => "iban",
            PiiKind::Custom(_) => "custom",
        }
    }

    /// The kind a configuration name stands for.
    pub fn from_name(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One value found: its kind and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// One detector: a pattern, and for built-in kinds a validator.
#[derive(Debug)]
struct Detector {
    kind: PiiKind,
    name: String,
    placeholder: String,
    regex: Regex,
    /// A byte the text must contain for the pattern to match at all.
    needs: Needs,
}

#[derive(Debug, Clone, Copy)]
enum Needs {
    Digit,
    At,
    Nothing,
}

/// The detectors of the configured kinds.
#[derive(Debug)]
pub struct PiiDetector {
    detectors: Vec<Detector>,
    placeholder_format: String,
}

/// The values one request's reversible masking replaced, by placeholder.
#[derive(Debug, Default, Clone)]
pub struct Vault {
    entries: Vec<(String, String)>,
}

impl Vault {
    /// Whether nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `text` with every placeholder of this vault replaced by its value.
    pub fn restore(&self, text: &str) -> String {
        let mut out = text.to_owned();
        // Longest first, so `[EMAIL_12]` is not read as `[EMAIL_1]` + `2]`.
        let mut entries: Vec<&(String, String)> = self.entries.iter().collect();
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (p, v) in entries {
            if out.contains(p.as_str()) {
                out = out.replace(p.as_str(), v);
            }
        }
        out
    }
}

/// The default placeholder format: `[EMAIL]`, `[CREDIT_CARD]`…
pub const DEFAULT_PLACEHOLDER: &str = "[{TYPE}]";

/// Words that, just before an SSN-shaped number, say it is something else.
const NOT_SSN_CONTEXT: [&str; 10] = [
    "part", "sku", "order", "model", "serial", "item", "invoice", "ref", "#", "no.",
];

impl PiiDetector {
    /// Detectors for the built-in `kinds`, with the default placeholder.
    pub fn new(kinds: &[PiiKind]) -> PiiDetector {
        PiiDetector::with(kinds, &[], DEFAULT_PLACEHOLDER)
    }

    /// Detectors for built-in `kinds` and `custom` (name, compiled pattern)
    /// kinds; `placeholder` is the masked form, `{TYPE}` standing for the
    /// kind's name in capitals.
    pub fn with(kinds: &[PiiKind], custom: &[(String, Regex)], placeholder: &str) -> PiiDetector {
        let fill = |name: &str| placeholder.replace("{TYPE}", &name.to_ascii_uppercase());
        let mut detectors: Vec<Detector> = PiiKind::ALL
            .into_iter()
            .filter(|k| kinds.contains(k))
            .filter_map(|k| {
                Regex::new(pattern(k)).ok().map(|regex| Detector {
                    kind: k,
                    name: k.name().to_owned(),
                    placeholder: fill(k.name()),
                    regex,
                    needs: match k {
                        PiiKind::Email => Needs::At,
                        _ => Needs::Digit,
                    },
                })
            })
            .collect();
        for (i, (name, regex)) in custom.iter().enumerate().take(usize::from(u8::MAX)) {
            detectors.push(Detector {
                kind: PiiKind::Custom(i as u8),
                name: name.clone(),
                placeholder: fill(name),
                regex: regex.clone(),
                needs: Needs::Nothing,
            });
        }
        PiiDetector {
            detectors,
            placeholder_format: placeholder.to_owned(),
        }
    }

    /// Every built-in kind.
    pub fn all() -> PiiDetector {
        PiiDetector::new(&PiiKind::ALL)
    }

    /// The configuration name of a kind this detector finds.
    pub fn name(&self, kind: PiiKind) -> &str {
        self.detectors
            .iter()
            .find(|d| d.kind == kind)
            .map_or(kind.name(), |d| d.name.as_str())
    }

    /// What a value of `kind` is masked with.
    pub fn placeholder(&self, kind: PiiKind) -> &str {
        self.detectors
            .iter()
            .find(|d| d.kind == kind)
            .map_or("[PII]", |d| d.placeholder.as_str())
    }

    /// Whether any kind is a custom pattern.
    pub fn has_custom(&self) -> bool {
        self.detectors
            .iter()
            .any(|d| matches!(d.kind, PiiKind::Custom(_)))
    }

    /// Whether no kind is configured.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// Confirmed values in `text`, by position in `text`, without overlaps
    /// (where two overlap, the longer wins). The text is read normalised
    /// (full-width digits, zero-width characters inside a value, homoglyph
    /// letters), and each finding covers the original bytes.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let view = crate::normalize::for_pii(text);
        let t: &str = &view.text;
        let windows = Windows::of(t);
        let mut found = Vec::new();
        for d in &self.detectors {
            let ranges: &[(usize, usize, usize)] = match d.needs {
                Needs::Digit if d.kind == PiiKind::Iban => &windows.iban,
                Needs::Digit if d.kind == PiiKind::Ipv6 => &windows.colons,
                Needs::Digit => &windows.digits,
                Needs::At => &windows.at,
                Needs::Nothing => &windows.whole,
            };
            let fewest = min_digits(d.kind);
            for &(from, to, digits) in ranges {
                if digits < fewest {
                    continue;
                }
                let hay = &t[..to];
                let mut at = from;
                while let Some(m) = d.regex.find_at(hay, at) {
                    at = if m.end() > m.start() {
                        m.end()
                    } else {
                        m.end() + 1
                    };
                    let (start, end) = match d.kind {
                        PiiKind::Custom(_) => (m.start(), m.end()),
                        _ => trim_match(t, m.start(), m.end()),
                    };
                    if start < end
                        && (matches!(d.kind, PiiKind::Custom(_)) || valid(d.kind, t, start, end))
                    {
                        let r = view.original_range(start..end);
                        found.push(Finding {
                            kind: d.kind,
                            start: r.start,
                            end: r.end,
                        });
                    }
                    if at > hay.len() || !hay.is_char_boundary(at.min(hay.len())) {
                        break;
                    }
                }
            }
        }
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end - f.start)));
        let mut out: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            if out.last().is_none_or(|last| f.start >= last.end) {
                out.push(f);
            }
        }
        out
    }

    /// `text` with every finding replaced by its placeholder, and the findings.
    pub fn mask(&self, text: &str) -> (String, Vec<Finding>) {
        let found = self.find(text);
        if found.is_empty() {
            return (text.to_owned(), found);
        }
        (self.masked(text, &found), found)
    }

    /// `text` with the given findings replaced by numbered placeholders
    /// (`[EMAIL_1]`), the same value always by the same one, recorded in
    /// `vault` so that an answer can get the values back.
    pub fn masked_reversibly(&self, text: &str, found: &[Finding], vault: &mut Vault) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            let value = &text[f.start..f.end];
            match vault.entries.iter().find(|(_, v)| v == value) {
                Some((p, _)) => out.push_str(p),
                None => {
                    let n = vault.entries.len() + 1;
                    let name = format!("{}_{n}", self.name(f.kind).to_ascii_uppercase());
                    let p = self.placeholder_format.replace("{TYPE}", &name);
                    out.push_str(&p);
                    vault.entries.push((p, value.to_owned()));
                }
            }
            at = f.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// `text` with the given findings (of this detector, in order) replaced.
    pub fn masked(&self, text: &str, found: &[Finding]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            out.push_str(self.placeholder(f.kind));
            at = f.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// The parts of a text where each kind of detector can match, found in one
/// pass over the bytes, so that the regular expressions read a few short
/// windows instead of the whole text seven times (a 2 KB prompt with
/// numbers: 23 µs down to a few).
struct Windows {
    /// Runs of digits joined by up to two separators (cards, SSNs, phones,
    /// IPv4), with a leading `+` or `(`; four digits or more.
    digits: Vec<(usize, usize, usize)>,
    /// Words around an `@`.
    at: Vec<(usize, usize, usize)>,
    /// Words with two colons or more.
    colons: Vec<(usize, usize, usize)>,
    /// From two capitals and two digits, as far as an IBAN can reach.
    iban: Vec<(usize, usize, usize)>,
    whole: Vec<(usize, usize, usize)>,
}

/// Fewest digits a value of `kind` has (windows with fewer are skipped).
fn min_digits(kind: PiiKind) -> usize {
    match kind {
        PiiKind::CreditCard => 13,
        PiiKind::Ssn => 9,
        PiiKind::Phone => 7,
        PiiKind::Ipv4 => 4,
        _ => 0,
    }
}

/// A whitespace-separated word around byte `i`, widened to char boundaries.
fn word_around(t: &str, i: usize) -> (usize, usize) {
    let b = t.as_bytes();
    let stop = |c: u8| {
        c.is_ascii_whitespace()
            || matches!(c, b'<' | b'>' | b'"' | b'\'' | b',' | b';' | b'(' | b')')
    };
    let start = b[..i].iter().rposition(|&c| stop(c)).map_or(0, |p| p + 1);
    let end = b[i..]
        .iter()
        .position(|&c| stop(c))
        .map_or(b.len(), |p| i + p);
    (start, end)
}

impl Windows {
    fn of(t: &str) -> Windows {
        let b = t.as_bytes();
        let n = b.len();
        let mut w = Windows {
            digits: Vec::new(),
            at: Vec::new(),
            colons: Vec::new(),
            iban: Vec::new(),
            whole: vec![(0, n, usize::MAX)],
        };
        let mut i = 0;
        while i < n {
            let c = b[i];
            if c == b'@' {
                let (s, e) = word_around(t, i);
                if w.at.last().is_none_or(|l| l.0 != s) {
                    w.at.push((s, e, usize::MAX));
                }
            } else if c == b':' {
                let (s, e) = word_around(t, i);
                if w.colons.last().is_none_or(|l| l.0 != s) && t[s..e].matches(':').count() >= 2 {
                    w.colons.push((s, e, usize::MAX));
                }
            } else if c.is_ascii_uppercase()
                && i + 3 < n
                && b[i + 1].is_ascii_uppercase()
                && b[i + 2].is_ascii_digit()
                && b[i + 3].is_ascii_digit()
            {
                w.iban
                    .push((i, floor_boundary(t, (i + 48).min(n)), usize::MAX));
            } else if c.is_ascii_digit() {
                let start = if i > 0 && matches!(b[i - 1], b'+' | b'(') {
                    i - 1
                } else {
                    i
                };
                let mut end = i;
                let mut count = 0;
                loop {
                    while end < n && b[end].is_ascii_digit() {
                        end += 1;
                        count += 1;
                    }
                    let mut k = end;
                    while k < n
                        && k - end < 3
                        && matches!(b[k], b' ' | b'-' | b'.' | b'(' | b')' | b'/')
                    {
                        k += 1;
                    }
                    if k > end && k < n && b[k].is_ascii_digit() {
                        end = k;
                    } else {
                        break;
                    }
                }
                // A closing parenthesis or separator right after belongs to the window.
                let stop = (end + 1).min(n);
                if count >= 4 {
                    w.digits.push((start, floor_boundary(t, stop), count));
                }
                i = end;
                continue;
            }
            i += 1;
        }
        w
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn pattern(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
        // A run of digits with single spaces or dashes between groups.
        PiiKind::CreditCard => r"\d(?:[ -]?\d){12,18}",
        PiiKind::Ssn => r"\d{3}[- ]\d{2}[- ]\d{4}",
        PiiKind::Iban => r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}",
        PiiKind::Ipv4 => r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
        PiiKind::Ipv6 => r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
        // International with +, or grouped national numbers: separators required,
        // so bare digit runs (order numbers, timestamps) never match.
        PiiKind::Phone => {
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}\d|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}|\b\d{2,4}(?:[ .-]\d{2,4}){2,4}\b"
        }
        PiiKind::Custom(_) => "$^",
    }
}

/// Drops separators a pattern may have taken at either end.
fn trim_match(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    let b = text.as_bytes();
    while start < end && matches!(b[start], b' ' | b'-' | b'.') {
        start += 1;
    }
    while end > start && matches!(b[end - 1], b' ' | b'-' | b'.') {
        end -= 1;
    }
    (start, end)
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The characters right before and after the match, for boundary checks.
fn around(text: &str, start: usize, end: usize) -> (Option<char>, Option<char>) {
    (
        text[..start].chars().next_back(),
        text[end..].chars().next(),
    )
}

fn valid(kind: PiiKind, text: &str, start: usize, end: usize) -> bool {
    let s = &text[start..end];
    let (before, after) = around(text, start, end);
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    match kind {
        PiiKind::Email => !word(after),
        PiiKind::CreditCard => {
            // Not part of a longer number, UUID or version string.
            let next = text[end..].chars().nth(1);
            let continues =
                matches!(after, Some('.' | '-')) && next.is_some_and(|c| c.is_ascii_alphanumeric());
            if word(before) || word(after) || continues {
                return false;
            }
            let d = digits(s);
            (13..=19).contains(&d.len()) && luhn(&d) && card_prefix(&d)
        }
        PiiKind::Ssn => {
            if word(before) || word(after) || matches!(before, Some('-' | '.')) {
                return false;
            }
            let d = digits(s);
            let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
            let group = d[3] * 10 + d[4];
            let serial = d[5..].iter().fold(0u32, |n, x| n * 10 + u32::from(*x));
            let ranges = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
            ranges && !not_ssn_context(&text[..start])
        }
        PiiKind::Iban => {
            if word(before) || word(after) {
                return false;
            }
            let compact: String = s.chars().filter(|c| *c != ' ').collect();
            (15..=34).contains(&compact.len()) && iban_checksum(&compact)
        }
        PiiKind::Ipv4 => {
            // Not a longer dotted version (1.2.3.4.5) or a number's part.
            if word(before)
                || word(after)
                || before == Some('.')
                || (after == Some('.')
                    && text[end..]
                        .chars()
                        .nth(1)
                        .is_some_and(|c| c.is_ascii_digit()))
            {
                return false;
            }
            s.split('.').all(|p| {
                p.parse::<u16>().is_ok_and(|n| n <= 255) && (p.len() == 1 || !p.starts_with('0'))
            })
        }
        PiiKind::Ipv6 => {
            if word(before) || word(after) || s.matches(':').count() < 2 {
                return false;
            }
            // Times (12:30:45) parse as nothing; require hex letters or a `::`.
            (s.contains("::") || s.bytes().any(|b| b.is_ascii_alphabetic()))
                && s.parse::<Ipv6Addr>().is_ok()
        }
        PiiKind::Phone => phone(s, before, after),
        PiiKind::Custom(_) => true,
    }
}

/// Whether the words before an SSN-shaped number name it as something else
/// (`part 123-45-6789`, `Part number: …`, `SKU #…`).
fn not_ssn_context(lead: &str) -> bool {
    let tail = &lead[lead.len().saturating_sub(24)..];
    let mut lead = tail.to_ascii_lowercase();
    loop {
        let trimmed = lead.trim_end().trim_end_matches([':', '#']).trim_end();
        let trimmed = ["number", "no.", "no", "num", "nr"]
            .iter()
            .find_map(|w| {
                trimmed
                    .strip_suffix(w)
                    .filter(|r| r.is_empty() || r.ends_with([' ', '.']))
            })
            .unwrap_or(trimmed);
        if trimmed.len() == lead.len() {
            break;
        }
        lead = trimmed.to_owned();
    }
    NOT_SSN_CONTEXT.iter().any(|w| {
        lead.ends_with(w)
            && lead[..lead.len() - w.len()].ends_with(|c: char| !c.is_ascii_alphanumeric())
            || lead == *w
    }) || lead.ends_with('#')
}

fn phone(s: &str, before: Option<char>, after: Option<char>) -> bool {
    if before
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '$' || c == '€' || c == '£')
        || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '%')
    {
        return false;
    }
    let d = digits(s);
    if !(7..=15).contains(&d.len()) {
        return false;
    }
    if s.starts_with('+') {
        return true;
    }
    // Dates (2024-01-15, 15.01.2024), dotted versions and IP addresses are not phones.
    let groups: Vec<&str> = s
        .split([' ', '-', '.', '(', ')'])
        .filter(|g| !g.is_empty())
        .collect();
    if s.contains('.') && groups.len() >= 3 && groups.iter().all(|g| g.len() <= 3) {
        return false;
    }
    let looks_like_date = groups.len() == 3
        && ((groups[0].len() == 4 && groups[1].len() <= 2 && groups[2].len() <= 2)
            || (groups[0].len() <= 2 && groups[1].len() <= 2 && groups[2].len() == 4));
    if looks_like_date {
        return false;
    }
    // Thousands grouping (`153 680 890`, `1 234 567`) is a number.
    if groups.len() >= 3
        && groups[0].len() <= 3
        && groups[1..].iter().all(|g| g.len() == 3)
        && !s.contains(['(', ')'])
    {
        return false;
    }
    // The SSN shape (3-2-4) is left to the SSN detector and its validation.
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens == [3, 2, 4] {
        return false;
    }
    // A national number: the NANP shape, or groups of 2–4 adding up to 9–12 digits.
    let nanp =
        groups.len() == 3 && groups[0].len() == 3 && groups[1].len() == 3 && groups[2].len() == 4;
    nanp || (groups.len() >= 3 && (9..=12).contains(&d.len()))
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Issuer prefixes and lengths: Visa, Mastercard (51–55, 2221–2720), Amex,
/// Discover, JCB, Diners, UnionPay, Maestro.
fn card_prefix(d: &[u8]) -> bool {
    let n = |k: usize| d[..k].iter().fold(0u32, |a, x| a * 10 + u32::from(*x));
    let len = d.len();
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => {
            (51..=55).contains(&n(2)) && len == 16
                || (n(2) == 50 || (56..=59).contains(&n(2))) && (12..=19).contains(&len)
        }
        2 => (2221..=2720).contains(&n(4)) && len == 16,
        3 => {
            matches!(n(2), 34 | 37) && len == 15
                || (3528..=3589).contains(&n(4)) && (16..=19).contains(&len)
                || ((300..=305).contains(&n(3)) || matches!(n(2), 36 | 38))
                    && (14..=19).contains(&len)
        }
        6 => {
            (n(4) == 6011 || n(2) == 65 || (644..=649).contains(&n(3))) && (16..=19).contains(&len)
                || n(2) == 62 && (16..=19).contains(&len)
                || matches!(n(2), 63 | 67) && (12..=19).contains(&len)
        }
        _ => false,
    }
}

/// ISO 13616: move the first four characters to the end, letters to
/// numbers, and the remainder mod 97 must be 1.
fn iban_checksum(iban: &str) -> bool {
    let rearranged = iban[4..].chars().chain(iban[..4].chars());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, &str)> {
        PiiDetector::all()
            .find(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn finds_each_kind() {
        use PiiKind::*;
        let cases = [
            (
                "mail jane.doe+tag@example.co.uk today",
                Email,
                "jane.doe+tag@example.co.uk",
            ),
            (
                "card 4111 1111 1111 1111 exp",
                CreditCard,
                "4111 1111 1111 1111",
            ),
            (
                "card 5555-5555-5555-4444.",
                CreditCard,
                "5555-5555-5555-4444",
            ),
            // Mastercard's 2-series range must match.
            (
                "pay with 2223003122003222 now",
                CreditCard,
                "2223003122003222",
            ),
            ("amex 378282246310005", CreditCard, "378282246310005"),
            ("my ssn is 123-45-6789", Ssn, "123-45-6789"),
            (
                "IBAN GB82 WEST 1234 5698 7654 32 please",
                Iban,
                "GB82 WEST 1234 5698 7654 32",
            ),
            ("from 192.168.1.20 at", Ipv4, "192.168.1.20"),
            (
                "host 2001:db8::8a2e:370:7334 up",
                Ipv6,
                "2001:db8::8a2e:370:7334",
            ),
            ("call +1 415-555-2671 now", Phone, "+1 415-555-2671"),
            ("call (415) 555-2671", Phone, "(415) 555-2671"),
            ("ring +44 20 7946 0958", Phone, "+44 20 7946 0958"),
            ("E.164 +14155552671 ok", Phone, "+14155552671"),
        ];
        for (text, kind, value) in cases {
            assert_eq!(kinds(text), vec![(kind, value)], "{text}");
        }
    }

    #[test]
    fn look_alikes_are_not_pii() {
        for text in [
            "order 123456789012 shipped",
            "created at 1700000000 (unix)",
            "meeting on 2024-01-15 or 15.01.2024",
            "upgrade to version 1.2.3.4.5",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "it costs $1,234.56 or 1 234.56",
            "card 4111 1111 1111 1112 fails Luhn",
            "invalid ssn 000-12-3456 and 666-12-3456 and 912-34-5678",
            "part 123-45-6789 in stock",
            "SKU: 123-45-6789",
            "time 12:30:45",
            "score 99.5%",
            "IBAN GB82 WEST 1234 5698 7654 33 has a bad checksum",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    #[test]
    fn an_ip_address_is_not_read_as_a_phone() {
        assert_eq!(
            kinds("server 10.200.30.40"),
            vec![(PiiKind::Ipv4, "10.200.30.40")]
        );
    }

    #[test]
    fn masking_replaces_values_with_typed_placeholders() {
        let d = PiiDetector::new(&[PiiKind::Email, PiiKind::CreditCard]);
        let (masked, found) = d.mask("a@b.io paid with 4111111111111111, ssn 123-45-6789");
        assert_eq!(masked, "[EMAIL] paid with [CREDIT_CARD], ssn 123-45-6789");
        assert_eq!(found.len(), 2);
        assert_eq!(PiiKind::from_name("credit_card"), Some(PiiKind::CreditCard));
    }
}
