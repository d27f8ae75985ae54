//! Consumers and their API keys.
//!
//! Keys are kept only as SHA-256 digests, and a presented key is found by
//! its digest: the lookup's timing depends on a hash the caller cannot
//! steer, and the final comparison is constant-time. Neither keys nor
//! digests are ever logged or shown; only consumer names are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lc_rs::{constant_time, digest};
use loom_config::settings::ConsumerEntry;

/// Who a request is accounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Rate-limit tier, when configured.
    pub tier: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The consumer of requests on routes without authentication.
pub const ANONYMOUS: &str = "anonymous";

/// Every configured consumer, found by key or by name.
#[derive(Debug)]
pub struct Consumers {
    by_digest: HashMap<[u8; 32], Arc<Consumer>>,
    by_name: BTreeMap<String, Arc<Consumer>>,
    anonymous: Arc<Consumer>,
}

impl Consumers {
    /// From the `consumers:` section (already validated).
    pub fn from_config(entries: &[ConsumerEntry]) -> Consumers {
        let mut by_digest = HashMap::new();
        let mut by_name = BTreeMap::new();
        for e in entries {
            let consumer = Arc::new(Consumer {
                name: e.name.clone(),
                tier: e.tier.clone(),
                metadata: e.metadata.clone(),
            });
            for key in &e.keys {
                if let Some(d) = stored_digest(key.expose()) {
                    by_digest.insert(d, consumer.clone());
                }
            }
            by_name.insert(e.name.clone(), consumer);
        }
        Consumers {
            by_digest,
            by_name,
            anonymous: Arc::new(Consumer {
                name: ANONYMOUS.to_owned(),
                tier: None,
                metadata: BTreeMap::new(),
            }),
        }
    }

    /// Adds a consumer that no key maps to yet (one named only by a limit),
    /// unless it exists: its limits and usage are kept ready for the key
    /// a later configuration gives it.
    pub fn add_keyless(&mut self, name: &str) {
        if name == ANONYMOUS || self.by_name.contains_key(name) {
            return;
        }
        self.by_name.insert(
            name.to_owned(),
            Arc::new(Consumer {
                name: name.to_owned(),
                tier: None,
                metadata: BTreeMap::new(),
            }),
        );
    }

    /// The consumer that owns `key`, if any.
    pub fn authenticate(&self, key: &[u8]) -> Option<Arc<Consumer>> {
        let d = sha256(key);
        let (stored, consumer) = self.by_digest.get_key_value(&d)?;
        constant_time::verify_slices_are_equal(stored, &d).ok()?;
        Some(consumer.clone())
    }

    /// A consumer by name; `anonymous` always exists.
    pub fn get(&self, name: &str) -> Option<&Arc<Consumer>> {
        if name == ANONYMOUS {
            return Some(&self.anonymous);
        }
        self.by_name.get(name)
    }

    /// The consumer of unauthenticated requests.
    pub fn anonymous(&self) -> &Arc<Consumer> {
        &self.anonymous
    }

    /// Configured consumer names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// True when no consumer is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The SHA-256 of `data`: what keys are known by.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The digest a configured key stands for: `sha256:<hex>` as given, or the
/// digest of a plain key.
pub fn stored_digest(key: &str) -> Option<[u8; 32]> {
    match key.strip_prefix("sha256:") {
        Some(hex) => digest_from_hex(hex),
        None => Some(sha256(key.as_bytes())),
    }
}

/// The 32 bytes 64 hex digits stand for.
pub fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `sha256:` and the hex digest of `key`: the form to put in configuration
/// instead of the key itself.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", to_hex(&sha256(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_config::settings::Secret;

    fn entry(name: &str, keys: &[&str]) -> ConsumerEntry {
        ConsumerEntry {
            name: name.into(),
            tier: Some("pro".into()),
            keys: keys.iter().map(|k| Secret::new(*k)).collect(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn plain_and_hashed_keys_authenticate() {
        let hashed = hash_key("sk-mobile-0001");
        let c = Consumers::from_config(&[
            entry("web", &["sk-web-000001"]),
            entry("mobile", &[hashed.as_str()]),
        ]);
        assert_eq!(
            c.authenticate(b"sk-web-000001")
                .map(|c| c.name.clone())
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            c.authenticate(b"sk-mobile-0001")
                .map(|c| c.name.clone())
                .as_deref(),
            Some("mobile")
        );
        assert!(c.authenticate(b"sk-web-000002").is_none());
        assert!(
            c.authenticate(hashed.as_bytes()).is_none(),
            "the digest is not a key"
        );
        assert!(c.authenticate(b"").is_none());
        assert_eq!(
            c.get("anonymous").map(|c| c.name.as_str()),
            Some("anonymous")
        );
        assert_eq!(c.names().collect::<Vec<_>>(), vec!["mobile", "web"]);
    }

    #[test]
    fn the_hash_matches_the_sha256_of_the_key() {
        // sha256("abc"), a published test vector.
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
