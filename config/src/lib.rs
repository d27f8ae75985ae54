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
pub mod schema;
mod units;
mod validate;

use std::path::Path;

pub use error::{Error, Problem};
pub use schema::*;
pub use units::{ByteSize, Duration, Secret};
pub use validate::listen_address;

use locate::Locations;

/// Reads, interpolates, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
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

    let config: Config = if expanded.trim().is_empty() {
        Config::default()
    } else {
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
    if found.is_empty() {
        return Ok(config);
    }
    let locations = Locations::index(&expanded);
    Err(Error::Invalid(
        found
            .into_iter()
            .map(|(field, message)| {
                let pos = locations.find(&field);
                problem(pos.map(|p| p.0), pos.map(|p| p.1), &field, message)
            })
            .collect(),
    ))
}

/// serde_norway appends " at line L column C"; we print the position ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
