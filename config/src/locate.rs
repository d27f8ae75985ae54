//! Maps a field path such as `routes[1].upstream` to its line and column in
//! the YAML text, so errors found after parsing can still point at the file.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// 1-based line and column of every key and sequence item, by path.
#[derive(Debug, Default)]
pub struct Locations {
    by_path: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl Locations {
    /// Indexes `text`; a YAML syntax error stops the index where it occurs.
    pub fn index(text: &str) -> Locations {
        let mut by_path = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = (span.start.line(), span.start.col() + 1);
            let starts_value = matches!(
                event,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(..)
            );
            // The path of the value this event begins, if it begins one.
            let mut value_path = None;
            if starts_value {
                match stack.last_mut() {
                    Some(Frame::Map { path, key }) => match key.take() {
                        None => {
                            if let Event::Scalar(k, ..) = &event {
                                let p = join(path, k);
                                by_path.insert(p.clone(), pos);
                                *key = Some(p);
                            }
                            continue;
                        }
                        Some(p) => value_path = Some(p),
                    },
                    Some(Frame::Seq { path, index }) => {
                        let p = format!("{path}[{index}]");
                        *index += 1;
                        by_path.insert(p.clone(), pos);
                        value_path = Some(p);
                    }
                    None => value_path = Some(String::new()),
                }
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: value_path.unwrap_or_default(),
                    key: None,
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: value_path.unwrap_or_default(),
                    index: 0,
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Locations { by_path }
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let text = "routes:\n  - id: a\n    path: /x\n  - id: b\n    upstream: up\nai_gateway:\n  providers: [{name: p, type: mock}]\n";
        let loc = Locations::index(text);
        assert_eq!(loc.find("routes[1].upstream"), Some((5, 5)));
        assert_eq!(loc.find("routes[0].path"), Some((3, 5)));
        assert_eq!(loc.find("ai_gateway.providers[0].type"), Some((7, 25)));
        // Unknown leaf: falls back to the nearest ancestor.
        assert_eq!(loc.find("routes[1].nothing"), Some((4, 5)));
    }
}
