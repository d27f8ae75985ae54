//! Where a JSON text's structure is, 64 bytes at a time.
//!
//! The first stage of simdjson's design, reduced to what the `usage` scan
//! needs: for each 64-byte block, one bit per byte for the quotes that open
//! strings and for the brackets outside strings. On x86_64 the comparisons
//! run 16 bytes per SSE2 instruction (part of the baseline, so no runtime
//! detection); elsewhere a byte loop computes the same masks. A walk that
//! stopped at every quote and bracket cost about eleven instructions per byte
//! of a recorded OpenAI answer under callgrind; these masks cost about one,
//! and the walk then visits only the structural bytes.

/// One bit per byte of a block: bit `i` stands for byte `i`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Masks {
    pub quote: u64,
    pub backslash: u64,
    /// `{` and `[`.
    pub open: u64,
    /// `}` and `]`.
    pub close: u64,
}

/// The masks of one block.
#[cfg(target_arch = "x86_64")]
pub(super) fn masks(block: &[u8; 64]) -> Masks {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it
    // and the compiler enables it for every x86_64 target.
    unsafe { masks_sse2(block) }
}

/// The masks of one block, with SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks_sse2(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    };
    let (parts, _) = block.as_chunks::<16>();
    let mut m = Masks::default();
    for (n, part) in parts.iter().enumerate() {
        let v = u128::from_le_bytes(*part);
        // Two 64-bit halves: a safe load (compiled to one unaligned load).
        let x = _mm_set_epi64x((v >> 64) as u64 as i64, v as u64 as i64);
        let bits = |y| u64::from(_mm_movemask_epi8(y) as u16) << (n * 16);
        // `[` and `]` differ from `{` and `}` only in bit 5, which no other
        // byte sets to reach 0x7B or 0x7D.
        let folded = _mm_or_si128(x, _mm_set1_epi8(0x20));
        m.quote |= bits(_mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8)));
        m.backslash |= bits(_mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8)));
        m.open |= bits(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)));
        m.close |= bits(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)));
    }
    m
}

/// The masks of one block, a byte at a time.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn masks(block: &[u8; 64]) -> Masks {
    masks_bytewise(block)
}

/// The masks of one block, a byte at a time: the portable version, and the
/// reference the SSE2 one is tested against.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(super) fn masks_bytewise(block: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            b'{' | b'[' => m.open |= bit,
            b'}' | b']' => m.close |= bit,
            _ => {}
        }
    }
    m
}

/// Each bit set from a set bit of `x` up to (not including) the next one:
/// applied to the quotes, the bytes inside strings, opening quote included.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes escaped by a backslash. `carry` says the previous block ended
/// with a backslash that escapes this block's first byte, and is updated for
/// the next block. Backslashes are rare in answers, so they are walked one
/// by one rather than with simdjson's carry arithmetic.
fn escaped(backslash: u64, carry: &mut bool) -> u64 {
    let mut escaped = u64::from(*carry);
    *carry = false;
    let mut rest = backslash;
    while rest != 0 {
        let i = rest.trailing_zeros();
        rest &= rest - 1;
        if escaped >> i & 1 == 0 {
            // An escaping backslash: the byte after it is taken literally.
            if i == 63 {
                *carry = true;
            } else {
                escaped |= 1 << (i + 1);
            }
        }
    }
    escaped
}

/// A structural byte of the text, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A quote that opens a string, at this index.
    String(usize),
    /// `{` or `[` outside strings.
    Open(usize),
    /// `}` or `]` outside strings.
    Close(usize),
}

/// Walks a JSON text's structural bytes block by block.
pub(super) struct Structure<'a> {
    text: &'a [u8],
    /// Index of the next block.
    next: usize,
    /// Events of the current block not yet taken, and where it starts.
    pending: u64,
    opens: u64,
    base: usize,
    inside: u64,
    escape: bool,
}

impl<'a> Structure<'a> {
    /// The walk of `text` from `start`, which must not be inside a string.
    pub(super) fn new(text: &'a [u8], start: usize) -> Structure<'a> {
        Structure {
            text,
            next: start,
            pending: 0,
            opens: 0,
            base: 0,
            inside: 0,
            escape: false,
        }
    }

    /// Whether the text ends inside a string (once every event is taken).
    pub(super) fn in_string(&self) -> bool {
        self.inside != 0
    }

    /// Loads the next block; false at the end of the text.
    #[inline(never)]
    fn load(&mut self) -> bool {
        let Some(rest) = self.text.get(self.next..).filter(|r| !r.is_empty()) else {
            return false;
        };
        let m = match rest.first_chunk::<64>() {
            Some(block) => masks(block),
            None => {
                // The tail, padded with spaces (no structure).
                let mut block = [b' '; 64];
                block[..rest.len()].copy_from_slice(rest);
                masks(&block)
            }
        };
        let literal = !escaped(m.backslash, &mut self.escape);
        let quotes = m.quote & literal;
        let inside = prefix_xor(quotes) ^ self.inside;
        self.inside = ((inside as i64) >> 63) as u64;
        self.opens = quotes & inside;
        self.pending = self.opens | ((m.open | m.close) & literal & !inside);
        self.base = self.next;
        self.next += 64;
        true
    }
}

impl Iterator for Structure<'_> {
    type Item = Event;

    #[inline(always)]
    fn next(&mut self) -> Option<Event> {
        while self.pending == 0 {
            if !self.load() {
                return None;
            }
        }
        let bit = self.pending.trailing_zeros();
        self.pending &= self.pending - 1;
        let at = self.base + bit as usize;
        Some(if self.opens >> bit & 1 == 1 {
            Event::String(at)
        } else if matches!(self.text[at], b'{' | b'[') {
            Event::Open(at)
        } else {
            Event::Close(at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of a text, found a byte at a time. A backslash escapes the
    /// next byte wherever it is (outside strings JSON has none).
    fn naive(text: &[u8]) -> (Vec<Event>, bool) {
        let mut out = Vec::new();
        let (mut inside, mut escape) = (false, false);
        for (i, &b) in text.iter().enumerate() {
            if escape {
                escape = false;
                continue;
            }
            match (inside, b) {
                (_, b'\\') => escape = true,
                (true, b'"') => inside = false,
                (true, _) => {}
                (false, b'"') => {
                    inside = true;
                    out.push(Event::String(i));
                }
                (false, b'{' | b'[') => out.push(Event::Open(i)),
                (false, b'}' | b']') => out.push(Event::Close(i)),
                (false, _) => {}
            }
        }
        (out, inside)
    }

    #[test]
    fn sse2_and_bytewise_masks_agree() {
        // Every byte value at every position, among neighbours one bit away
        // from the structural bytes.
        for background in [b' ', b';', b'[', b'"', 0x5C, 0x7B, 0xDB, 0xFD, 0xA2, 0x00] {
            for at in 0..64 {
                for value in 0..=255u8 {
                    let mut block = [background; 64];
                    block[at] = value;
                    assert_eq!(masks(&block), masks_bytewise(&block), "{value} at {at}");
                }
            }
        }
    }

    #[test]
    fn escapes_cross_blocks_and_pair_up() {
        let mut carry = false;
        assert_eq!(escaped(0b0110, &mut carry), 0b0100);
        assert_eq!(escaped(0b0111, &mut carry), 0b1010);
        assert_eq!(escaped(1 << 63, &mut carry), 0);
        assert!(carry);
        // The carried escape takes the first byte, itself a backslash.
        assert_eq!(escaped(0b11, &mut carry), 0b101);
        assert!(!carry);
    }

    #[test]
    fn finds_what_a_byte_walk_finds() {
        let texts: [&[u8]; 6] = [
            include_bytes!("../../../tests/e2e/fixtures/openai_chat.json"),
            br#"{"a":"x\"y","b":["\\",{"c":"\\\""}],"d":"}"}"#,
            br#"{"unterminated": "abc"#,
            b"",
            b"{}",
            br#"[{"k":"v"}] "tail""#,
        ];
        for text in texts {
            let (events, inside) = naive(text);
            let mut s = Structure::new(text, 0);
            assert_eq!(s.by_ref().collect::<Vec<_>>(), events);
            assert_eq!(s.in_string(), inside);
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_byte_walk_anywhere(
            text in proptest::collection::vec(
                proptest::sample::select(b"\"\\{}[]a :,".to_vec()),
                0..300,
            ),
        ) {
            let (events, inside) = naive(&text);
            let mut s = Structure::new(&text, 0);
            proptest::prop_assert_eq!(s.by_ref().collect::<Vec<_>>(), events);
            proptest::prop_assert_eq!(s.in_string(), inside);
        }
    }
}
