//! Loom's configuration: the YAML schema ([`schema`]), `${ENV}` interpolation,
//! loading with errors that name file, line, column and field, and the semantic
//! validation that runs before a configuration is accepted at start-up or on
//! hot reload.
//!
//! This crate only describes what the operator asked for. The gateway compiles
//! it into runtime structures (route table, provider registry, upstream pools);
//! no runtime state ever lives in these types.

mod error;
mod interpolate;
mod locate;
mod resilience;
mod resolve;
pub mod schema;
mod secrets;
pub mod settings;
mod units;
mod validate;
mod warnings;

use std::path::Path;

pub use error::{Error, Problem};
pub use resilience::{Spelling, Spellings};
pub use schema::*;
pub use units::{ByteSize, Duration, Pattern, Secret};
pub use validate::listen_address;

use locate::Locations;

/// A configuration that loaded, with what it may say but probably should
/// not (deprecated spellings, consumers named only by a limit).
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Reads, interpolates, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, Error> {
    check_file(path).map(|c| c.config)
}

/// [`load_file`], keeping the warnings.
pub fn check_file(path: &Path) -> Result<Checked, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    check_str(&text, &path.display().to_string())
}

/// [`load_str`], keeping the warnings.
pub fn check_str(text: &str, file: &str) -> Result<Checked, Error> {
    check_with_env(text, file, |name| std::env::var(name).ok())
}

/// Interpolates, parses and validates configuration text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, Error> {
    load_with_env(text, file, |name| std::env::var(name).ok())
}

/// [`load_str`] with an explicit environment, for tests and tools.
pub fn load_with_env(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, Error> {
    check_with_env(text, file, env).map(|c| c.config)
}

/// [`load_with_env`], keeping the warnings.
pub fn check_with_env(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Checked, Error> {
    let problem = |line, column, field: &str, message: String| Problem {
        file: file.to_owned(),
        line,
        column,
        field: field.to_owned(),
        message,
    };
    let expanded = interpolate::interpolate(text, env).map_err(|errs| {
        Error::Invalid(
            errs.into_iter()
                .map(|e| problem(Some(e.line), Some(e.column), "", e.message))
                .collect(),
        )
    })?;

    if is_blank(&expanded) {
        // An editor truncates a file before writing it; a reload that
        // caught that moment must not apply a configuration of nothing.
        return Err(Error::Invalid(vec![problem(
            None,
            None,
            "",
            "the configuration is empty (only blanks or comments); it needs at least one route, and an empty file is never applied".into(),
        )]));
    }
    let config: Config = {
        let de = serde_norway::Deserializer::from_str(&expanded);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            let field = if field == "." { String::new() } else { field };
            let inner = err.into_inner();
            let (line, column) = match inner.location() {
                Some(l) => (Some(l.line()), Some(l.column())),
                None => match Locations::index(&expanded).find(&field) {
                    Some((l, c)) => (Some(l), Some(c)),
                    None => (None, None),
                },
            };
            let message = strip_location(&inner.to_string());
            // serde_norway also prefixes the path, which we print as the field.
            let message = message
                .strip_prefix(&format!("{field}: "))
                .map(str::to_owned)
                .unwrap_or(message);
            Error::Invalid(vec![problem(
                line,
                column,
                &field,
                error::suggest(&message),
            )])
        })?
    };

    let found = validate::validate(&config);
    let locations = Locations::index(&expanded);
    let locate = |(field, message): (String, String)| {
        let pos = locations.find(&field);
        problem(pos.map(|p| p.0), pos.map(|p| p.1), &field, message)
    };
    if found.is_empty() {
        let warnings = warnings::warnings(&config)
            .into_iter()
            .map(locate)
            .collect();
        return Ok(Checked { config, warnings });
    }
    Err(Error::Invalid(found.into_iter().map(locate).collect()))
}

/// Whether YAML text holds nothing but blank lines, comments and document
/// markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// serde_norway appends " at line L column C"; we print the position ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Entry point of the fuzz target in `fuzz/` (and of the test that replays
/// its corpus).
#[doc(hidden)]
pub mod fuzzing {
    /// The loader: any bytes give a configuration or an error naming the
    /// file, never a panic. `${ENV}` references see an empty environment.
    pub fn load(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        match crate::check_with_env(&text, "fuzz.yaml", |_| None) {
            Ok(checked) => {
                // A valid configuration serialises (the admin API's /config).
                serde_json::to_string(&checked.config).expect("a loaded config serialises");
            }
            Err(e) => assert!(e.to_string().starts_with("fuzz.yaml"), "{e}"),
        }
    }
}

/// The JSON Schema of `loom.yaml`, generated from the schema types (their
/// doc comments become descriptions), for editors that complete and check
/// the file. `loom schema` prints it; `docs/loom.schema.json` is this
/// output, and a test keeps the two equal.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "loom.yaml".into());
    }
    schema
}

#[cfg(test)]
mod schema_tests {
    /// `docs/loom.schema.json` is what `loom schema` prints now.
    #[test]
    fn the_committed_json_schema_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/loom.schema.json");
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/loom.schema.json"))
                .expect("docs/loom.schema.json is JSON");
        assert!(
            committed == super::json_schema(),
            "docs/loom.schema.json is out of date: run `loom schema > docs/loom.schema.json`"
        );
    }

    /// Unknown keys are errors in the loader, and so in the schema.
    #[test]
    fn sections_refuse_unknown_keys_and_aliases_are_described() {
        let s = super::json_schema();
        let text = s.to_string();
        assert!(s["properties"]["routes"].is_object(), "{text}");
        assert!(s["properties"]["ai_gateway"].is_object(), "{text}");
        assert_eq!(s["additionalProperties"], serde_json::json!(false));
        // A deprecated spelling is still accepted, so still in the schema.
        assert!(text.contains("failure_threshold") && text.contains("consecutive_failures"));
    }
}
