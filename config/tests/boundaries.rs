//! The libraries read resolved settings, never the YAML document: outside
//! their tests, no library crate names a `loom_config` item other than
//! `loom_config::settings`. (The document's aliases, precedence rules and
//! fallbacks are decided once, in `config/src/resolve.rs`.)

use std::fs;
use std::path::{Path, PathBuf};

/// Every crate except `config` itself and the `gateway` binary, which
/// resolves the document into settings.
const LIBRARIES: [&str; 10] = [
    "accounting",
    "guardrails",
    "http",
    "inference",
    "models",
    "plugins",
    "providers",
    "proxy",
    "semantic-cache",
    "bench/upstream",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The paths after `loom_config::` in the code before the file's test
/// module.
fn config_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|(_, next)| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("loom_config::") {
            let rest = &code[at + "loom_config::".len()..];
            let item: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            found.push((n + 1, item));
        }
    }
    found
}

#[test]
fn libraries_read_only_resolved_settings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offences = Vec::new();
    let mut scanned = 0;
    for lib in LIBRARIES {
        let mut files = Vec::new();
        sources(&root.join(lib).join("src"), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).expect("readable source");
            scanned += 1;
            for (line, item) in config_paths(&text) {
                if item != "settings" {
                    offences.push(format!("{}:{line}: loom_config::{item}", file.display()));
                }
            }
        }
    }
    assert!(
        scanned > 50,
        "the library sources were not found ({scanned} files)"
    );
    assert!(
        offences.is_empty(),
        "library code reads the YAML document instead of loom_config::settings:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_scan_sees_what_it_must_refuse() {
    let text = "use loom_config::settings::Upstream;\nuse loom_config::{AiGateway, Strategy};\nfn f(c: &loom_config::AiGateway) {}\n// loom_config::Config in a comment\n#[cfg(test)]\nmod tests {\n    use loom_config::Config;\n}\n";
    let items: Vec<String> = config_paths(text).into_iter().map(|(_, i)| i).collect();
    assert_eq!(items, ["settings", "{AiGateway", "AiGateway"]);
}
