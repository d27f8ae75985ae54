//! `${VAR}` and `${VAR:-default}` substitution in the configuration text.
//!
//! Substitution happens on the text before YAML parsing, line by line, so an
//! error can name the line and column of the reference. Comments are left
//! alone, and `$${` writes a literal `${`.

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Replaces every reference using `lookup`; collects every unresolved one.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_idx, line) in text.split_inclusive('\n').enumerate() {
        interpolate_line(line, line_idx + 1, &lookup, &mut out, &mut errors);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn interpolate_line(
    line: &str,
    line_no: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<InterpolationError>,
) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' if quote.is_none() => quote = Some(b),
            b'\'' | b'"' if quote == Some(b) => quote = None,
            b'#' if quote.is_none() && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                out.push_str(&line[i..]);
                return;
            }
            b'$' if line[i..].starts_with("$${") => {
                out.push_str("${");
                i += 3;
                continue;
            }
            b'$' if line[i..].starts_with("${") => {
                let Some(close) = line[i + 2..].find('}') else {
                    errors.push(InterpolationError {
                        line: line_no,
                        column: i + 1,
                        message: "unterminated ${ reference".to_owned(),
                    });
                    out.push_str(&line[i..]);
                    return;
                };
                let inner = &line[i + 2..i + 2 + close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                let valid = !name.is_empty()
                    && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if !valid {
                    errors.push(InterpolationError {
                        line: line_no,
                        column: i + 1,
                        message: format!("invalid variable name in ${{{inner}}}"),
                    });
                } else {
                    match (lookup(name), default) {
                        (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                        (_, Some(d)) => out.push_str(d),
                        (None, None) => errors.push(InterpolationError {
                            line: line_no,
                            column: i + 1,
                            message: format!(
                                "environment variable {name} is not set (write ${{{name}:-}} to allow it to be empty)"
                            ),
                        }),
                        (Some(_), None) => unreachable!("matched by the first arm"),
                    }
                }
                i += 2 + close + 1;
                continue;
            }
            _ => {}
        }
        let ch_len = line[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&line[i..i + ch_len]);
        i += ch_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let text = "a: ${KEY}\nb: ${MISSING:-fallback}\nc: ${EMPTY:-d}\nd: $${KEY}\ne: 'ü${KEY}'\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: sk-1\nb: fallback\nc: d\nd: ${KEY}\ne: 'üsk-1'\n"
        );
    }

    #[test]
    fn comments_are_not_interpolated() {
        assert_eq!(
            interpolate("a: 1 # uses ${NOPE}\n", env).unwrap(),
            "a: 1 # uses ${NOPE}\n"
        );
    }

    #[test]
    fn missing_variables_name_line_and_column() {
        let errs = interpolate("x: 1\napi_key: ${NOPE}\nk: ${bad-name}\n", env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].column), (2, 10));
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!(errs[1].line, 3);
    }
}
