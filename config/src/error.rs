//! Configuration errors, each naming file, line, column and field.

use std::fmt;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the field, such as `routes[0].path`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

impl Error {
    /// The individual problems (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid(p) => p,
            Error::Read { .. } => &[],
        }
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds "did you mean" to serde's unknown-field and unknown-variant messages.
pub(crate) fn suggest(message: &str) -> String {
    let Some(rest) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| &message[i + p.len()..]))
    else {
        return message.to_owned();
    };
    let Some(end) = rest.find('`') else {
        return message.to_owned();
    };
    let unknown = &rest[..end];
    let candidates = rest[end..]
        .split('`')
        .skip(2)
        .step_by(2)
        .filter(|c| !c.is_empty());
    match closest(unknown, candidates) {
        Some(c) => format!("{message} (did you mean `{c}`?)"),
        None => message.to_owned(),
    }
}

/// The candidate closest to a misspelt name, if any is close.
pub(crate) fn closest<'a>(
    unknown: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(unknown, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let m = "unknown field `adress`, expected one of `name`, `address`, `protocol`";
        assert!(suggest(m).ends_with("(did you mean `address`?)"));
        let m = "unknown field `zzz`, expected one of `name`, `address`";
        assert_eq!(suggest(m), m);
        let m = "unknown variant `prority`, expected one of `priority`, `round_robin`";
        assert!(suggest(m).ends_with("(did you mean `priority`?)"));
    }
}
