//! A validating JSON reader over one request body: whitespace, strings
//! (their decoded length, and their text when asked), numbers, literals,
//! and values skipped whole. It accepts exactly what `serde_json` accepts
//! (RFC 8259, nesting up to 128 levels); the tests in `head.rs` hold the
//! two to the same answers.

use std::borrow::Cow;
use std::fmt;

use super::HeadError;

/// Nesting depth at which `serde_json` stops (its recursion limit).
const MAX_DEPTH: u32 = 128;

/// A position in the body being read.
pub(super) struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    pub i: usize,
}

/// A string of the body: its text between the quotes as written, and the
/// length in bytes of that text once its escapes are decoded.
pub(super) struct Str<'a> {
    raw: &'a str,
    pub len: usize,
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded text: borrowed from the body unless it has escapes.
    /// Only for strings read with `checked` (valid surrogate pairs).
    pub fn text(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(decode(self.raw, self.len))
        } else {
            Cow::Borrowed(self.raw)
        }
    }
}

/// A number of the body, as far as a token count needs it.
pub(super) enum Num {
    /// A whole number from 0 to `u64::MAX`, written without fraction or exponent.
    Count(u64),
    /// Any other number (negative, fractional, exponent, too large).
    Other,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    /// An error at the current position, in `serde_json`'s words.
    pub fn error(&self, what: impl fmt::Display) -> HeadError {
        let before = &self.b[..self.i.min(self.b.len())];
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        let column = before.len()
            - before
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |p| p + 1);
        HeadError::new(format!("{what} at line {line} column {}", column + 1))
    }

    /// Skips whitespace; the next byte, if any.
    #[inline]
    pub fn ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// Takes `c` if it is the next byte (after whitespace).
    #[inline]
    pub fn eat(&mut self, c: u8) -> bool {
        if self.ws() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Takes the `:` after an object key.
    pub fn colon(&mut self) -> Result<(), HeadError> {
        match self.ws() {
            Some(b':') => {
                self.i += 1;
                self.ws();
                Ok(())
            }
            None => Err(self.error("EOF while parsing an object")),
            Some(_) => Err(self.error("expected `:`")),
        }
    }

    /// After a member or element: `true` when another follows (a `,` was
    /// taken), `false` at the closing `close` (taken).
    pub fn more(&mut self, close: u8) -> Result<bool, HeadError> {
        let (what, expected) = if close == b'}' {
            ("an object", "expected `,` or `}`")
        } else {
            ("a list", "expected `,` or `]`")
        };
        match self.ws() {
            Some(b',') => {
                self.i += 1;
                match self.ws() {
                    Some(c) if c == close => Err(self.error("trailing comma")),
                    _ => Ok(true),
                }
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            None => Err(self.error(format_args!("EOF while parsing {what}"))),
            Some(_) => Err(self.error(expected)),
        }
    }

    /// The key that starts an object member (after `{` or `,`), with its colon taken.
    pub fn key(&mut self) -> Result<Str<'a>, HeadError> {
        match self.ws() {
            Some(b'"') => {
                let key = self.string(true)?;
                self.colon()?;
                Ok(key)
            }
            None => Err(self.error("EOF while parsing an object")),
            Some(_) => Err(self.error("key must be a string")),
        }
    }

    /// Opens an object or list at the next byte: `Ok(false)` when it is
    /// empty (and already closed).
    pub fn open(&mut self, close: u8) -> Result<bool, HeadError> {
        self.i += 1;
        if self.eat(close) {
            return Ok(false);
        }
        Ok(true)
    }

    /// The string that starts at the current `"`. `checked`: surrogate
    /// escapes must pair up, as `serde_json` requires of a string it
    /// returns (it does not check strings it skips).
    pub fn string(&mut self, checked: bool) -> Result<Str<'a>, HeadError> {
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        let mut len = 0usize;
        let mut run = start;
        let mut escaped = false;
        loop {
            i = special(b, i);
            match b.get(i) {
                None => {
                    self.i = b.len();
                    return Err(self.error("EOF while parsing a string"));
                }
                Some(b'"') => {
                    len += i - run;
                    self.i = i + 1;
                    return Ok(Str {
                        raw: &self.text[start..i],
                        len,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    len += i - run;
                    escaped = true;
                    self.i = i;
                    let (taken, bytes) = self.escape(checked)?;
                    i += taken;
                    len += bytes;
                    run = i;
                }
                Some(_) => {
                    self.i = i;
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
            }
        }
    }

    /// The escape at the current `\`: how many bytes it takes and how many
    /// its decoded text has.
    fn escape(&mut self, checked: bool) -> Result<(usize, usize), HeadError> {
        let b = self.b;
        let i = self.i;
        match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok((2, 1)),
            Some(b'u') => {
                let Some(first) = hex4(b, i + 2) else {
                    self.i = (i + 6).min(b.len());
                    return Err(self.error("invalid escape"));
                };
                match first {
                    0xD800..=0xDBFF if checked => {
                        let low = (b.get(i + 6..i + 8) == Some(b"\\u"))
                            .then(|| hex4(b, i + 8))
                            .flatten();
                        match low {
                            Some(0xDC00..=0xDFFF) => Ok((12, 4)),
                            _ => {
                                self.i = (i + 6).min(b.len());
                                Err(self.error("lone leading surrogate in hex escape"))
                            }
                        }
                    }
                    0xDC00..=0xDFFF if checked => {
                        self.i = i + 6;
                        Err(self.error("lone leading surrogate in hex escape"))
                    }
                    cp => Ok((6, utf8_len(cp))),
                }
            }
            None => {
                self.i = b.len();
                Err(self.error("EOF while parsing a string"))
            }
            Some(_) => {
                self.i = i + 1;
                Err(self.error("invalid escape"))
            }
        }
    }

    /// Skips the value at the current position (after whitespace), checking
    /// its syntax. `depth` is the nesting of the value's container.
    pub fn skip(&mut self, depth: u32) -> Result<(), HeadError> {
        match self.ws() {
            Some(b'"') => self.string(false).map(drop),
            Some(c @ (b'{' | b'[')) => {
                if depth + 1 >= MAX_DEPTH {
                    return Err(self.error("recursion limit exceeded"));
                }
                let close = if c == b'{' { b'}' } else { b']' };
                if !self.open(close)? {
                    return Ok(());
                }
                loop {
                    if c == b'{' {
                        self.key_unchecked()?;
                    }
                    self.skip(depth + 1)?;
                    if !self.more(close)? {
                        return Ok(());
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            None => Err(self.error("EOF while parsing a value")),
            Some(_) => Err(self.error("expected value")),
        }
    }

    /// A key of a skipped object (its surrogates unchecked, as `serde_json`
    /// leaves them when it skips).
    fn key_unchecked(&mut self) -> Result<(), HeadError> {
        match self.ws() {
            Some(b'"') => {
                self.string(false)?;
                self.colon()
            }
            None => Err(self.error("EOF while parsing an object")),
            Some(_) => Err(self.error("key must be a string")),
        }
    }

    /// `true`, `false` or `null`, spelled out whole.
    pub fn literal(&mut self, word: &[u8]) -> Result<(), HeadError> {
        let end = self.i + word.len();
        if self.b.get(self.i..end) == Some(word) {
            self.i = end;
            return Ok(());
        }
        // Where `serde_json` would stop: the first byte that differs.
        let same = self.b[self.i..]
            .iter()
            .zip(word)
            .take_while(|(a, b)| a == b)
            .count();
        self.i += same;
        if self.i >= self.b.len() {
            Err(self.error("EOF while parsing a value"))
        } else {
            Err(self.error("expected ident"))
        }
    }

    /// A JSON number at the current position.
    pub fn number(&mut self) -> Result<Num, HeadError> {
        let b = self.b;
        let mut i = self.i;
        let negative = b[i] == b'-';
        if negative {
            i += 1;
        }
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i),
            None => {
                self.i = i;
                return Err(self.error("EOF while parsing a value"));
            }
            Some(_) => {
                self.i = i;
                return Err(self.error("invalid number"));
            }
        }
        let int_end = i;
        let mut whole = true;
        if b.get(i) == Some(&b'.') {
            whole = false;
            i += 1;
            let end = digits(i);
            if end == i {
                self.i = i;
                return Err(self.error(if i >= b.len() {
                    "EOF while parsing a value"
                } else {
                    "invalid number"
                }));
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            whole = false;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                self.i = i;
                return Err(self.error(if i >= b.len() {
                    "EOF while parsing a value"
                } else {
                    "invalid number"
                }));
            }
            i = end;
        }
        // A leading zero followed by a digit ("01") is not a number.
        if b[int_start] == b'0'
            && int_end == int_start + 1
            && b.get(i).is_some_and(u8::is_ascii_digit)
        {
            self.i = i;
            return Err(self.error("invalid number"));
        }
        self.i = i;
        if negative || !whole {
            return Ok(Num::Other);
        }
        Ok(self.text[int_start..int_end]
            .parse::<u64>()
            .map_or(Num::Other, Num::Count))
    }
}

/// The index of the first `"`, `\` or control character at or after `i`
/// (or the end): eight bytes at a time, as string bodies are most of a
/// request.
#[inline]
fn special(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTE: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASH: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // Bytes equal to zero, or below `n`: exact up to the first one found,
    // which is all that is used.
    let zero = |w: u64| w.wrapping_sub(LO) & !w & HI;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = zero(w ^ QUOTE) | zero(w ^ BACKSLASH) | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// The value of four hex digits at `i`.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | v)
    })
}

/// Bytes of a code point in UTF-8 (a lone surrogate counts as three, as
/// it would be written if a provider kept it).
fn utf8_len(cp: u32) -> usize {
    match cp {
        0..0x80 => 1,
        0x80..0x800 => 2,
        _ => 3,
    }
}

/// The text of a checked string's raw body, its escapes decoded.
fn decode(raw: &str, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let b = raw.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&raw[run..i]);
        let c = match b[i + 1] {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = hex4(b, i + 2).unwrap_or(0xFFFD);
                if (0xD800..=0xDBFF).contains(&first) {
                    let low = hex4(b, i + 8).unwrap_or(0xDC00);
                    i += 6;
                    char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00))
                        .unwrap_or('\u{FFFD}')
                } else {
                    char::from_u32(first).unwrap_or('\u{FFFD}')
                }
            }
            other => other as char,
        };
        out.push(c);
        i += if b[i + 1] == b'u' { 6 } else { 2 };
        run = i;
    }
    out.push_str(&raw[run..]);
    out
}
