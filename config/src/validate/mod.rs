//! Semantic checks that the schema alone cannot express, including the rule
//! that a section Loom does not implement yet is rejected when it is enabled.

use std::net::SocketAddr;

use crate::schema::*;

mod ai;
mod consumers;
mod process;
mod routes;
mod security;
mod upstreams;

use ai::ai_gateway;
use consumers::consumer_entries;
use process::{listeners, plugins};
use routes::routes;
pub(crate) use security::security;
use upstreams::upstreams;

type Found = Vec<(String, String)>;

/// Parses `host:port` or `:port` (every interface) into a socket address.
pub fn listen_address(address: &str) -> Result<SocketAddr, String> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.replace("localhost:", "127.0.0.1:")
    };
    full.parse()
        .map_err(|_| format!("invalid address {address:?}: expected host:port or :port"))
}

/// A breaker's failure share is a percent in 1..=100.
fn breaker_percent(percent: u32, at: &str, found: &mut Found) {
    if !(1..=100).contains(&percent) {
        found.push((
            format!("{at}.failure_percent"),
            format!("a percent from 1 to 100, not {percent}"),
        ));
    }
}

/// A similarity threshold is a cosine in (0, 1].
fn threshold(t: Option<f64>, at: &str, found: &mut Found) {
    if let Some(t) = t
        && !(t > 0.0 && t <= 1.0)
    {
        found.push((
            format!("{at}.similarity_threshold"),
            format!("must be above 0 and at most 1 (a cosine similarity), not {t}"),
        ));
    }
}

/// Every problem found, as (field path, message).
pub(crate) fn validate(config: &Config) -> Found {
    let mut found = Found::new();
    if config.routes.is_empty() {
        // An empty or truncated file (an editor saving, a config manager
        // half-way through a write) parses as a configuration without
        // routes; applying it would answer every request 404.
        found.push((
            "routes".into(),
            "no routes: a configuration must define at least one route (an empty or truncated file is never applied)".into(),
        ));
    }
    listeners(config, &mut found);
    if config
        .server
        .shed_at_loop_delay
        .is_some_and(|d| d.get() < std::time::Duration::from_millis(1))
    {
        found.push((
            "server.shed_at_loop_delay".into(),
            "at least 1ms (a loop is always a little late); leave it out to turn shedding by delay off".into(),
        ));
    }
    admin(&config.admin, &mut found);
    upstreams(config, &mut found);
    plugins(config, &mut found);
    routes(config, &mut found);
    ai_gateway(&config.ai_gateway, &config.consumers, &mut found);
    consumer_entries(config, &mut found);
    found
}

/// The admin listener: its address, and tokens wherever it is reachable
/// from other hosts.
fn admin(admin: &crate::schema::Admin, found: &mut Found) {
    match listen_address(&admin.address) {
        Err(e) => found.push(("admin.address".into(), e)),
        Ok(addr) if admin.enabled && !addr.ip().is_loopback() && admin.tokens.is_empty() => {
            found.push((
                "admin.tokens".into(),
                format!(
                    "the admin listener binds {addr}, reachable from other hosts: configure admin tokens (or bind a loopback address)"
                ),
            ));
        }
        Ok(_) => {}
    }
    let mut names = std::collections::HashSet::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        if t.name.is_empty() || t.name.len() > 64 {
            found.push((format!("{at}.name"), "a name of 1 to 64 characters".into()));
        } else if !names.insert(t.name.as_str()) {
            found.push((
                format!("{at}.name"),
                format!("duplicate token name {:?}", t.name),
            ));
        }
        let token = t.token.expose();
        match token.strip_prefix("sha256:") {
            Some(hex) if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                found.push((
                    format!("{at}.token"),
                    "`sha256:` must be followed by 64 hex digits (`loom hash-key`)".into(),
                ));
            }
            None if token.len() < 16 => found.push((
                format!("{at}.token"),
                "at least 16 characters (or `sha256:` and its digest)".into(),
            )),
            _ => {}
        }
        if t.scopes.is_empty() {
            found.push((
                format!("{at}.scopes"),
                "at least one of read, keys, admin".into(),
            ));
        }
    }
}

/// ", did you mean X?" when a close name exists.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    crate::error::closest(name, known)
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::{Error, load_with_env};

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
    }

    fn problems(text: &str) -> Vec<String> {
        match load_with_env(text, "loom.yaml", env) {
            Ok(_) => vec![],
            Err(Error::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_bad_path_regex_is_refused_where_it_is_written() {
        let text = "upstreams:\n  - {name: u, endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - id: r\n    path: /x/*\n    upstream: u\n    match:\n      path_regex: \"^/x/([\"\n";
        let err = load_with_env(text, "loom.yaml", env).expect_err("refused");
        let shown = err.to_string();
        assert!(shown.contains("loom.yaml:8"), "{shown}");
        assert!(
            shown.contains("path_regex") && shown.contains("unclosed"),
            "{shown}"
        );
    }

    #[test]
    fn custom_pii_patterns_are_compiled_once_as_the_file_is_read() {
        let config = |pattern: &str| {
            format!(
                "routes: [{{id: ai, path: /v1/*, ai_gateway: true}}]\nai_gateway:\n  enabled: true\n  providers: [{{name: m, type: mock}}]\n  security:\n    pii_detection:\n      enabled: true\n      custom:\n        - {{name: ticket, pattern: '{pattern}'}}\n"
            )
        };
        let loaded = load_with_env(&config("TCK-[0-9]{6}"), "loom.yaml", env).expect("valid");
        let pii = loaded.ai_gateway.security.pii_detection.expect("pii");
        assert!(pii.custom[0].pattern.regex().is_match("ref TCK-123456"));
        let shown = load_with_env(&config("TCK-([0-9]"), "loom.yaml", env)
            .expect_err("refused")
            .to_string();
        assert!(
            shown.contains("loom.yaml:9") && shown.contains("pattern"),
            "{shown}"
        );
        // Past the compiled-size bound: refused rather than slowing every request.
        let shown = load_with_env(&config("(\\w{100}){100}"), "loom.yaml", env)
            .expect_err("refused")
            .to_string();
        assert!(shown.contains("size limit"), "{shown}");
        assert!(
            problems(&config(""))
                .iter()
                .any(|p| p.contains("the pattern is empty"))
        );
    }

    #[test]
    fn seed_getting_started_config_loads() {
        let text = r#"
listeners:
  - name: http
    address: ":8080"

routes:
  - id: ai
    path: /v1/*
    ai_gateway: true

ai_gateway:
  enabled: true
  providers:
    - name: openai
      type: openai
      api_key: ${OPENAI_API_KEY}
      models: [gpt-4, gpt-3.5-turbo]
"#;
        let cfg = load_with_env(text, "loom.yaml", env).unwrap();
        assert_eq!(cfg.ai_gateway.providers[0].api_key.expose(), "sk-test");
        assert_eq!(cfg.routes[0].path, "/v1/*");
    }

    #[test]
    fn unknown_key_names_line_column_field_and_suggestion() {
        let p = problems("listeners:\n  - name: http\n    adress: \":8080\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:3:5: listeners[0]"), "{}", p[0]);
        assert!(p[0].contains("did you mean `address`?"), "{}", p[0]);
    }

    #[test]
    fn wrong_type_is_located() {
        let p = problems(
            "ai_gateway:\n  enabled: true\n  providers:\n    - name: x\n      type: mock\n      models: 5\n",
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:6:"), "{}", p[0]);
        assert!(p[0].contains("ai_gateway.providers[0].models"), "{}", p[0]);
    }

    #[test]
    fn semantic_errors_are_located_and_all_reported() {
        let text = "routes:\n  - id: a\n    path: api\n    upstream: nowhere\n  - id: a\n    path: /x/*\n    ai_gateway: true\n";
        let p = problems(text);
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:3:5: routes[0].path")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:4:5: routes[0].upstream: unknown upstream")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:5:5: routes[1].id: duplicate")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("needs ai_gateway.enabled")),
            "{p:?}"
        );
    }

    #[test]
    fn an_http3_listener_needs_tls() {
        let text = "listeners: [{address: \":8443\", protocol: http3}]\nroutes: [{id: a, path: /a, upstream: u}]\nupstreams: [{name: u, endpoints: [\"http://127.0.0.1:1\"]}]\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("listeners[0].tls"), "{}", p[0]);
    }

    #[test]
    fn cache_settings_are_checked() {
        let text = "routes: [{id: ai, path: /v1/*, ai_gateway: true}]\nai_gateway:\n  enabled: true\n  providers: [{name: main, type: mock}]\n  semantic_cache:\n    enabled: true\n    similarity_threshold: 1.5\n    ttl: 0s\n    embedding: {provider: mian}\n";
        let p = problems(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("similarity_threshold") && m.contains("at most 1")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("ttl")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("embedding.provider") && m.contains("did you mean \"main\"")),
            "{p:?}"
        );
    }

    #[test]
    fn missing_env_is_reported_with_position() {
        let p = problems(
            "ai_gateway:\n  providers:\n    - {name: a, type: openai, api_key: ${NOT_SET_ANYWHERE}}\n",
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:3:"), "{}", p[0]);
        assert!(p[0].contains("NOT_SET_ANYWHERE"));
    }
}
