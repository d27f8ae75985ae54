//! Structural guards: what two prompts must share, beyond a close embedding,
//! for one's answer to serve the other.
//!
//! Sentence embeddings place "convert 5 km to miles" and "convert 5 miles to
//! km", or "is coffee good for you" and "is coffee not good for you", within
//! a hair of each other. Those differences are exactly the ones that change
//! the answer, and they are easy to see in the text: numbers and their
//! units, negations, names, quoted strings, the language or format asked
//! for, and which word sits after "from", "to" or "than". A [`Signature`]
//! collects them; two prompts whose signatures differ never share an
//! answer, whatever their similarity.
//!
//! The signature has two parts. The **fingerprint** (numbers with units,
//! negation count, entities and quoted strings in order, language and
//! format words, the prompt's own language) must be equal: it goes into the
//! cache key of the vector partition, so a search only ever compares
//! prompts that already agree on it. The **roles** (the word after each
//! relational marker) are compared pairwise on the candidates a search
//! returns, because a paraphrase may drop a marker the other prompt has.
//!
//! All of it is one pass over the words with small static tables: about a
//! microsecond for a typical prompt.

use std::fmt::Write as _;

/// What a prompt's answer depends on, beyond its meaning.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// Must be equal for two prompts to share an answer.
    pub fingerprint: String,
    /// The language the prompt is written in, by its commonest words (`?`
    /// when it has none, as in "Explain recursion"): an answer comes back
    /// in the language of the question.
    language: String,
    /// (marker, word) pairs: the word that follows "from", "to", "than"…
    roles: Vec<(String, String)>,
    /// Lowercased content words, to see whether a role's word occurs in
    /// the other prompt at all.
    words: Vec<String>,
    /// Capitalised words opening a sentence that are not known function
    /// words: names, or ordinary words that open an instruction.
    openings: Vec<String>,
}

/// Words that never count as names when capitalised: question words,
/// determiners and the verbs prompts open with.
const NOT_NAMES: &[&str] = &[
    "a",
    "about",
    "act",
    "aren",
    "couldn",
    "didn",
    "doesn",
    "don",
    "hasn",
    "haven",
    "here",
    "isn",
    "shouldn",
    "wasn",
    "won",
    "wouldn",
    "add",
    "after",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "before",
    "begin",
    "best",
    "but",
    "by",
    "calculate",
    "can",
    "check",
    "choose",
    "classify",
    "compare",
    "compose",
    "convert",
    "could",
    "create",
    "define",
    "describe",
    "design",
    "did",
    "do",
    "does",
    "draft",
    "each",
    "edit",
    "either",
    "every",
    "explain",
    "extract",
    "find",
    "fix",
    "for",
    "from",
    "generate",
    "give",
    "go",
    "hello",
    "help",
    "hey",
    "hi",
    "how",
    "i",
    "if",
    "imagine",
    "implement",
    "in",
    "is",
    "it",
    "its",
    "let",
    "list",
    "make",
    "may",
    "me",
    "might",
    "must",
    "my",
    "name",
    "no",
    "not",
    "now",
    "of",
    "ok",
    "okay",
    "on",
    "once",
    "or",
    "our",
    "outline",
    "please",
    "provide",
    "quick",
    "quickly",
    "rewrite",
    "say",
    "should",
    "show",
    "so",
    "some",
    "suggest",
    "summarise",
    "summarize",
    "tell",
    "thanks",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "translate",
    "was",
    "we",
    "were",
    "what",
    "what's",
    "whats",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "would",
    "write",
    "yes",
    "you",
    "your",
];

/// Words with no content of their own: left out of the words a role is
/// looked up in.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "by", "can", "could", "did", "do", "does",
    "for", "from", "had", "has", "have", "how", "i", "in", "into", "is", "it", "its", "me", "my",
    "of", "on", "or", "please", "should", "so", "than", "that", "the", "their", "there", "this",
    "to", "versus", "vs", "was", "we", "were", "what", "when", "where", "which", "who", "why",
    "will", "with", "would", "you", "your",
];

/// Negations; "n't" endings count too.
const NEGATIONS: &[&str] = &[
    "cannot", "neither", "never", "no", "nobody", "none", "nor", "not", "nothing", "nowhere",
    "without",
];

/// Markers whose following word has a role that a swap would change.
const MARKERS: &[&str] = &[
    "after", "before", "from", "into", "over", "than", "to", "versus", "vs",
];

/// Units and their canonical names.
const UNITS: &[(&str, &str)] = &[
    ("%", "%"),
    ("percent", "%"),
    ("per cent", "%"),
    ("c", "celsius"),
    ("celsius", "celsius"),
    ("centigrade", "celsius"),
    ("f", "fahrenheit"),
    ("fahrenheit", "fahrenheit"),
    ("kelvin", "kelvin"),
    ("km", "km"),
    ("kms", "km"),
    ("kilometer", "km"),
    ("kilometers", "km"),
    ("kilometre", "km"),
    ("kilometres", "km"),
    ("m", "m"),
    ("meter", "m"),
    ("meters", "m"),
    ("metre", "m"),
    ("metres", "m"),
    ("cm", "cm"),
    ("centimeter", "cm"),
    ("centimeters", "cm"),
    ("centimetre", "cm"),
    ("centimetres", "cm"),
    ("mm", "mm"),
    ("millimeters", "mm"),
    ("millimetres", "mm"),
    ("mi", "mile"),
    ("mile", "mile"),
    ("miles", "mile"),
    ("ft", "foot"),
    ("foot", "foot"),
    ("feet", "foot"),
    ("in", "inch"),
    ("inch", "inch"),
    ("inches", "inch"),
    ("yard", "yard"),
    ("yards", "yard"),
    ("kg", "kg"),
    ("kgs", "kg"),
    ("kilogram", "kg"),
    ("kilograms", "kg"),
    ("g", "g"),
    ("gram", "g"),
    ("grams", "g"),
    ("lb", "lb"),
    ("lbs", "lb"),
    ("pound", "lb"),
    ("pounds", "lb"),
    ("oz", "oz"),
    ("ounce", "oz"),
    ("ounces", "oz"),
    ("l", "l"),
    ("liter", "l"),
    ("liters", "l"),
    ("litre", "l"),
    ("litres", "l"),
    ("ml", "ml"),
    ("gallon", "gallon"),
    ("gallons", "gallon"),
    ("cup", "cup"),
    ("cups", "cup"),
    ("s", "s"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("min", "min"),
    ("mins", "min"),
    ("minute", "min"),
    ("minutes", "min"),
    ("h", "h"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
    ("day", "day"),
    ("days", "day"),
    ("week", "week"),
    ("weeks", "week"),
    ("month", "month"),
    ("months", "month"),
    ("year", "year"),
    ("years", "year"),
    ("usd", "usd"),
    ("dollar", "usd"),
    ("dollars", "usd"),
    ("$", "usd"),
    ("eur", "eur"),
    ("euro", "eur"),
    ("euros", "eur"),
    ("€", "eur"),
    ("gbp", "gbp"),
    ("£", "gbp"),
    ("yen", "jpy"),
    ("jpy", "jpy"),
    ("¥", "jpy"),
    ("kb", "kb"),
    ("mb", "mb"),
    ("gb", "gb"),
    ("tb", "tb"),
    ("mph", "mph"),
    ("kmh", "kmh"),
    ("km/h", "kmh"),
    ("kph", "kmh"),
    ("calorie", "kcal"),
    ("calories", "kcal"),
    ("kcal", "kcal"),
    ("watt", "w"),
    ("watts", "w"),
    ("w", "w"),
    ("kw", "kw"),
    ("kwh", "kwh"),
    ("volt", "v"),
    ("volts", "v"),
];

/// Languages and formats an answer may be asked in; their names in order
/// are part of the fingerprint, whether a unit follows a number or not.
const LANGUAGES_AND_FORMATS: &[&str] = &[
    // Natural languages.
    "arabic",
    "bengali",
    "chinese",
    "czech",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hebrew",
    "hindi",
    "hungarian",
    "indonesian",
    "italian",
    "japanese",
    "korean",
    "latin",
    "mandarin",
    "norwegian",
    "persian",
    "polish",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swahili",
    "swedish",
    "thai",
    "turkish",
    "ukrainian",
    "urdu",
    "vietnamese", // Formats and programming languages.
    "bash",
    "c",
    "c#",
    "c++",
    "csv",
    "go",
    "golang",
    "haskell",
    "html",
    "java",
    "javascript",
    "json",
    "kotlin",
    "latex",
    "markdown",
    "php",
    "powershell",
    "python",
    "ruby",
    "rust",
    "scala",
    "shell",
    "sql",
    "swift",
    "table",
    "toml",
    "typescript",
    "xml",
    "yaml",
];

/// Number words, as digits.
const NUMBER_WORDS: &[(&str, u64)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
    ("hundred", 100),
    ("thousand", 1000),
    ("million", 1_000_000),
    ("billion", 1_000_000_000),
    ("dozen", 12),
    ("half", 0),
    ("twice", 2),
    ("double", 2),
    ("triple", 3),
];

/// Stop words of the languages a prompt may be written in: the most common
/// wins, so a French prompt never shares an answer with an English one.
const PROMPT_LANGUAGES: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "is", "are", "what", "how", "of", "and", "to", "in", "a", "for", "you", "i",
            "do", "does", "can", "with", "why", "which", "my",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "est", "quel", "quelle", "comment", "de", "des", "et", "un", "une",
            "pour", "je", "vous", "du", "que", "qui", "dans", "pourquoi",
        ],
    ),
    (
        "es",
        &[
            "el", "los", "las", "es", "qué", "que", "cómo", "como", "de", "y", "un", "una", "para",
            "por", "yo", "usted", "en", "del", "cuál", "porque",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "das", "ist", "was", "wie", "und", "ein", "eine", "für", "ich", "sie",
            "mit", "warum", "nicht", "zu", "den", "dem", "welche", "kann",
        ],
    ),
    (
        "it",
        &[
            "il", "lo", "gli", "è", "che", "cosa", "come", "di", "e", "un", "una", "per", "io",
            "perché", "della", "del", "sono", "quale", "nel", "con",
        ],
    ),
    (
        "pt",
        &[
            "o", "os", "as", "é", "que", "qual", "como", "de", "e", "um", "uma", "para", "eu",
            "você", "do", "da", "em", "por", "não", "porque",
        ],
    ),
];

fn lookup<T: Copy>(table: &[(&str, T)], word: &str) -> Option<T> {
    table.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
}

/// One token of a prompt.
#[derive(Debug)]
struct Token<'a> {
    text: &'a str,
    /// Starts a sentence (first token, or after `.`, `?`, `!`, `:`, newline).
    sentence_start: bool,
}

/// Words, numbers and single symbols that matter (`%`, `$`, `€`, `£`, `¥`);
/// quoted strings are taken out first.
fn tokens<'a>(text: &'a str, quoted: &mut Vec<String>) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let mut start_next = true;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // A single quote opens a quotation only after a space or at the
        // start (not "don't"), and closes before a non-letter.
        let opens_single = (c == '\'' || c == '‘')
            && text[..i]
                .chars()
                .next_back()
                .is_none_or(|p| p.is_whitespace() || p == '(');
        if c == '"' || c == '“' || c == '`' || c == '«' || opens_single {
            let close = match c {
                '“' => '”',
                '«' => '»',
                '‘' => '’',
                other => other,
            };
            let rest = &text[i + c.len_utf8()..];
            let end = if opens_single {
                rest.match_indices(close)
                    .find(|(j, q)| {
                        rest[j + q.len()..]
                            .chars()
                            .next()
                            .is_none_or(|n| !n.is_alphanumeric())
                    })
                    .map(|(j, _)| j)
            } else {
                rest.find(close)
            };
            if let Some(end) = end {
                quoted.push(rest[..end].trim().to_lowercase());
                let stop = i + c.len_utf8() + end;
                while chars.peek().is_some_and(|(j, _)| *j <= stop) {
                    chars.next();
                }
                start_next = false;
                continue;
            }
        }
        if c.is_alphanumeric() {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                // Inner apostrophes, dots and commas between digits, and
                // `+`/`#`/`/` stuck to a word (C++, C#, km/h) stay in the token.
                let inner = matches!(d, '\'' | '’' | '.' | ',' | '/' | '-')
                    && text[j + d.len_utf8()..]
                        .chars()
                        .next()
                        .is_some_and(char::is_alphanumeric);
                if d.is_alphanumeric() || inner || matches!(d, '+' | '#') {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token {
                text: &text[i..end],
                sentence_start: start_next,
            });
            start_next = false;
        } else if matches!(c, '%' | '$' | '€' | '£' | '¥') {
            out.push(Token {
                text: &text[i..i + c.len_utf8()],
                sentence_start: false,
            });
        } else if matches!(c, '.' | '?' | '!' | ':' | '\n' | ';') {
            start_next = true;
        }
    }
    out
}

/// A token as a number: digits with thousands separators and one decimal
/// point, or a number word.
fn number(token: &str) -> Option<String> {
    let lower = token.to_lowercase();
    if let Some(n) = lookup(NUMBER_WORDS, &lower) {
        return Some(n.to_string());
    }
    let t = lower.trim_end_matches(['.', ',']);
    // Ordinal suffixes: 1st, 2nd, 3rd, 4th.
    let t = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|s| {
            t.strip_suffix(s)
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or(t);
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut digits = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '0'..='9' | '.' => digits.push(c),
            ',' => {}
            _ => return None,
        }
    }
    // 3.50 and 3.5 are the same number.
    if digits.contains('.') {
        digits = digits
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned();
    }
    Some(digits)
}

/// The first letters-and-digits token of a mixed token: `5km` → ("5", "km").
fn split_number_unit(token: &str) -> Option<(&str, &str)> {
    let i = token.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))?;
    if i == 0 {
        return None;
    }
    let (n, u) = token.split_at(i);
    lookup(UNITS, &u.to_lowercase()).map(|_| (n, u))
}

impl Signature {
    /// The signature of a prompt.
    pub fn of(prompt: &str) -> Signature {
        let mut quoted = Vec::new();
        let toks = tokens(prompt, &mut quoted);
        let mut numbers: Vec<String> = Vec::new();
        let mut entities: Vec<String> = Vec::new();
        let mut lexicon: Vec<&'static str> = Vec::new();
        let mut negations = 0u32;
        let mut roles = Vec::new();
        let mut words = Vec::new();
        let mut openings = Vec::new();
        let mut votes = [0u32; PROMPT_LANGUAGES.len()];
        let mut i = 0;
        while i < toks.len() {
            let t = &toks[i];
            let lower = t.text.to_lowercase();
            for (k, (_, stop)) in PROMPT_LANGUAGES.iter().enumerate() {
                if stop.contains(&lower.as_str()) {
                    votes[k] += 1;
                }
            }
            if NEGATIONS.contains(&lower.as_str())
                || lower.ends_with("n't")
                || lower.ends_with("n’t")
            {
                negations += 1;
            }
            // A currency sign before a number is its unit.
            if let Some(unit) = lookup(UNITS, &lower).filter(|_| t.text.len() <= 3)
                && matches!(t.text, "$" | "€" | "£" | "¥")
                && let Some(n) = toks.get(i + 1).and_then(|n| number(n.text))
            {
                numbers.push(format!("{n}{unit}"));
                i += 2;
                continue;
            }
            // "one" is a pronoun as often as a number: a number only before
            // a unit or another number word ("one km", "one hundred").
            let pronoun = lower == "one"
                && !toks.get(i + 1).is_some_and(|n| {
                    let l = n.text.to_lowercase();
                    lookup(UNITS, &l).is_some() || lookup(NUMBER_WORDS, &l).is_some()
                });
            let num = (!pronoun)
                .then(|| number(t.text))
                .flatten()
                .map(|n| (n, None))
                .or_else(|| {
                    split_number_unit(t.text)
                        .and_then(|(n, u)| Some((number(n)?, lookup(UNITS, &u.to_lowercase()))))
                });
            if let Some((n, mut unit)) = num {
                if unit.is_none()
                    && let Some(next) = toks.get(i + 1)
                    && let Some(u) = lookup(UNITS, &next.text.to_lowercase())
                {
                    unit = Some(u);
                    i += 1;
                }
                numbers.push(format!("{n}{}", unit.unwrap_or("")));
                i += 1;
                continue;
            }
            if let Some(&m) = MARKERS.iter().find(|m| **m == lower)
                && let Some(object) = toks[i + 1..]
                    .iter()
                    .map(|o| o.text.to_lowercase())
                    .find(|o| !FUNCTION_WORDS.contains(&o.as_str()))
            {
                roles.push((m.to_owned(), object));
            }
            if let Some(&w) = LANGUAGES_AND_FORMATS.iter().find(|w| **w == lower) {
                // "c" and "go" are also ordinary words and units: only as names.
                let ambiguous = matches!(w, "c" | "go" | "table" | "shell" | "rust" | "swift");
                if !ambiguous || t.text.starts_with(char::is_uppercase) || w == "table" {
                    lexicon.push(w);
                }
            } else if lookup(UNITS, &lower).is_some() && lower.len() > 2 {
                // A unit named without a number ("how many miles…") is part
                // of the question too; one- and two-letter units only after
                // a number (they are ordinary words: "in", "m", "s").
                if let Some(u) = lookup(UNITS, &lower) {
                    lexicon.push(u);
                }
            } else if is_name(t.text, &lower) {
                let name = lower
                    .trim_end_matches("'s")
                    .trim_end_matches("’s")
                    .to_owned();
                if t.sentence_start && !has_inner_capital(t.text) {
                    openings.push(name);
                } else {
                    entities.push(name);
                }
            }
            if !FUNCTION_WORDS.contains(&lower.as_str()) {
                words.push(lower);
            }
            i += 1;
        }
        let language = votes
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| **v)
            .filter(|(_, v)| **v > 0)
            .map_or("?", |(k, _)| PROMPT_LANGUAGES[k].0)
            .to_owned();
        // Names compare as a set: "X and Y" and "Y and X" ask the same; a
        // swap that matters ("from X to Y") is caught by the roles.
        entities.sort_unstable();
        let mut fingerprint = String::with_capacity(64);
        let _ = write!(
            fingerprint,
            "neg={negations};num={};ent={};quote={};lex={}",
            numbers.join(","),
            entities.join(","),
            quoted.join("\u{1f}"),
            lexicon.join(",")
        );
        Signature {
            fingerprint,
            language,
            roles,
            words,
            openings,
        }
    }

    /// Whether `other`'s answer may serve this prompt: equal fingerprints,
    /// and no word that follows a marker in one prompt appears in the other
    /// without that marker before it ("from Paris to Rome" against "to
    /// Paris from Rome").
    pub fn compatible(&self, other: &Signature) -> bool {
        self.fingerprint == other.fingerprint
            && (self.language == other.language || self.language == "?" || other.language == "?")
            && roles_agree(self, other)
            && roles_agree(other, self)
            && openings_agree(self, other)
    }
}

/// Every word that follows a marker in `a` and occurs in `b`, where `b`
/// uses that marker too, follows it in `b` as well.
fn roles_agree(a: &Signature, b: &Signature) -> bool {
    a.roles.iter().all(|(marker, word)| {
        !b.roles.iter().any(|(m, _)| m == marker)
            || !b.words.contains(word)
            || b.roles.iter().any(|(m, w)| m == marker && w == word)
    })
}

/// Opening capitalised words that are not in the other prompt: when both
/// prompts have one, a name was probably swapped ("Paris: what to see" and
/// "Rome: what to see"); when only one has, it is probably an ordinary
/// opening verb ("Share three tips…" and "Give me three tips…").
fn openings_agree(a: &Signature, b: &Signature) -> bool {
    let unmatched = |x: &Signature, y: &Signature| x.openings.iter().any(|o| !y.words.contains(o));
    !(unmatched(a, b) && unmatched(b, a))
}

fn has_inner_capital(text: &str) -> bool {
    text.chars().skip(1).any(char::is_uppercase)
}

/// A capitalised word that is not a known function word (its part before
/// an apostrophe counts: "Don't", "I'm"), or a word with capitals inside
/// (iPhone, GPT, USB-C).
fn is_name(text: &str, lower: &str) -> bool {
    if has_inner_capital(text) {
        return true;
    }
    if !text.starts_with(char::is_uppercase) {
        return false;
    }
    let stem = lower.split(['\'', '’']).next().unwrap_or(lower);
    !(NOT_NAMES.contains(&lower) || NOT_NAMES.contains(&stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        Signature::of(a).compatible(&Signature::of(b))
    }

    #[test]
    fn paraphrases_keep_their_signature() {
        for (a, b) in [
            (
                "What is the capital of France?",
                "Which city is France's capital?",
            ),
            ("Convert 5 km to miles", "How many miles is 5 kilometres?"),
            ("What's 15% of 200?", "Calculate 15 percent of 200"),
            (
                "How do I reverse a list in Python?",
                "Python: how can I reverse a list?",
            ),
            ("Why isn't the sky green?", "Why is the sky not green?"),
            (
                "Give me three tips for sleeping better",
                "Share 3 tips to sleep better",
            ),
            (
                "How long does it take to boil an egg?",
                "how long should i boil an egg",
            ),
        ] {
            assert!(
                same(a, b),
                "{a:?} / {b:?}: {:?} vs {:?}",
                Signature::of(a),
                Signature::of(b)
            );
        }
    }

    #[test]
    fn near_misses_differ() {
        for (a, b) in [
            ("Convert 5 km to miles", "Convert 6 km to miles"),
            ("Convert 5 km to miles", "Convert 5 miles to km"),
            ("Is coffee good for you?", "Is coffee not good for you?"),
            (
                "What is the capital of France?",
                "What is the capital of Spain?",
            ),
            (
                "Translate 'good morning' into French",
                "Translate 'good morning' into German",
            ),
            (
                "Flights from Paris to Berlin",
                "Flights from Berlin to Paris",
            ),
            (
                "Is tea healthier than coffee?",
                "Is coffee healthier than tea?",
            ),
            (
                "Write a function that parses \"a,b\"",
                "Write a function that parses \"a;b\"",
            ),
            ("Give the answer in JSON", "Give the answer in YAML"),
            (
                "What is the capital of France?",
                "Quelle est la capitale de la France ?",
            ),
            ("What happened in 1914?", "What happened in 1918?"),
            ("Boil water at 100 C", "Boil water at 100 F"),
        ] {
            assert!(!same(a, b), "{a:?} / {b:?} must differ");
        }
    }

    #[test]
    fn numbers_are_normalised() {
        assert!(same("Split 1,000 dollars", "Split $1000"));
        assert!(same("Pay 3.50 euros", "Pay 3.5 euros"));
        assert!(same("Run 5km", "Run 5 km"));
    }
}
