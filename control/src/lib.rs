//! The control plane's keys: API keys created, changed, rotated and revoked
//! at run time over the admin API, kept in PostgreSQL, and checked on the
//! request path from memory.
//!
//! Every replica holds the whole key table ([`KeyTable`]) and follows the
//! store: changes arrive through `LISTEN/NOTIFY` as they commit, and the
//! whole table is read again periodically and after every reconnection.
//! PostgreSQL is never a single point of failure: a replica that starts
//! while it is away serves the keys of its last snapshot on disk; one that
//! loses it keeps every key it has; admin writes answer
//! [`Error::Unavailable`] (503) meanwhile, and the follower catches up
//! when the database returns.

mod error;
mod follow;
mod store;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use loom_config::settings::ControlPlane;
use serde::{Deserialize, Serialize};

pub use error::Error;
pub use store::AuditEntry;
pub use table::{KeyRecord, KeyRow, KeyTable};

/// Unix seconds now (what key expiry is kept in).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A new key, as the admin API takes it (checked by the caller against
/// the configuration: models, tiers).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub consumer: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// RFC 3339 time after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A change to a key: the fields present are set (`null` clears).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default, deserialize_with = "some")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "some")]
    pub tier: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A present field, even `null`, is `Some`.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A key as the admin API shows it: never a secret or a digest.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub consumer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Until when a rotated key's old secret works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `store`: managed here; `config`: from loom.yaml, read-only.
    pub source: &'static str,
}

fn rfc3339(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Unix seconds of an RFC 3339 time, for `field`.
fn parse_time(field: &str, s: &str) -> Result<i64, Error> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| Error::Invalid {
        field: field.into(),
        message: format!("an RFC 3339 time such as 2027-01-31T00:00:00Z ({e})"),
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

impl KeyView {
    /// The view of a stored key.
    pub fn of(row: &KeyRow) -> KeyView {
        KeyView {
            id: row.id.clone(),
            consumer: row.consumer.clone(),
            team: row.team.clone(),
            name: row.name.clone(),
            expires_at: row.expires_at.map(rfc3339),
            models: row.models.clone(),
            tier: row.tier.clone(),
            metadata: row.metadata.clone(),
            previous_valid_until: row.previous_until.filter(|&u| u > now()).map(rfc3339),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            source: "store",
        }
    }
}

/// How the follower stands, for `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// PostgreSQL answers.
    pub up: bool,
    pub keys: usize,
    /// Where the table came from last: `postgres`, `snapshot` or `none`.
    pub loaded_from: &'static str,
    /// Unix seconds of the last full read from PostgreSQL.
    pub last_sync: Option<i64>,
}

/// Random bytes, base64url: ids and secrets.
fn random(n: usize) -> Result<String, Error> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Unavailable("no randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn check_name(field: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.is_empty() || v.len() > max {
        return Err(Error::Invalid {
            field: field.into(),
            message: format!("1 to {max} characters"),
        });
    }
    if v.chars().any(char::is_control) {
        return Err(Error::Invalid {
            field: field.into(),
            message: "no control characters".into(),
        });
    }
    Ok(())
}

/// The control plane of one process.
pub struct Control {
    settings: ControlPlane,
    table: Arc<KeyTable>,
    /// The connection admin writes go through, opened when first needed.
    writer: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    up: AtomicBool,
    from_snapshot: AtomicBool,
    last_sync: AtomicI64,
    /// The table changed since the snapshot was written.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("keys", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Starts following the store of `settings`: the table is loaded from
    /// PostgreSQL (after migrating, when `migrate` is set), else from the
    /// snapshot; then changes are followed in the background.
    pub async fn start(settings: ControlPlane) -> Arc<Control> {
        let control = Arc::new(Control {
            settings,
            table: Arc::new(KeyTable::default()),
            writer: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
            from_snapshot: AtomicBool::new(false),
            last_sync: AtomicI64::new(0),
            dirty: AtomicBool::new(false),
        });
        follow::first_load(&control).await;
        tokio::spawn(follow::snapshots(Arc::downgrade(&control)));
        control
    }

    /// The key table, for the request path.
    pub fn keys(&self) -> &Arc<KeyTable> {
        &self.table
    }

    /// How the follower stands.
    pub fn health(&self) -> Health {
        let sync = self.last_sync.load(Ordering::Relaxed);
        Health {
            up: self.up.load(Ordering::Relaxed),
            keys: self.table.len(),
            loaded_from: if sync > 0 {
                "postgres"
            } else if self.from_snapshot.load(Ordering::Relaxed) {
                "snapshot"
            } else {
                "none"
            },
            last_sync: (sync > 0).then_some(sync),
        }
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout.get()
    }

    /// Runs an admin write on the writer connection (opened, or opened
    /// again, as needed), within the timeout.
    async fn write<T>(
        &self,
        op: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut guard = self.writer.lock().await;
        if guard.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (client, conn) = store::connect(self.settings.postgres.expose(), self.timeout())
                .await
                .inspect_err(|_| self.up.store(false, Ordering::Relaxed))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *guard = Some(client);
        }
        let Some(client) = guard.as_mut() else {
            return Err(Error::Unavailable("no connection".into()));
        };
        match tokio::time::timeout(self.timeout(), op(client)).await {
            Ok(r) => r,
            Err(_) => {
                *guard = None;
                Err(Error::Unavailable(
                    "the store did not answer in time".into(),
                ))
            }
        }
    }

    /// Creates a key; its secret is returned this once.
    pub async fn create(&self, actor: &str, new: NewKey) -> Result<(KeyView, String), Error> {
        check_name("consumer", &new.consumer, 128)?;
        if let Some(n) = &new.name {
            check_name("name", n, 128)?;
        }
        if let Some(t) = &new.team {
            check_name("team", t, 128)?;
        }
        let expires_at = new
            .expires_at
            .as_deref()
            .map(|s| parse_time("expires_at", s))
            .transpose()?;
        if expires_at.is_some_and(|e| e <= now()) {
            return Err(Error::Invalid {
                field: "expires_at".into(),
                message: "in the past".into(),
            });
        }
        if new.metadata.len() > 64 {
            return Err(Error::Invalid {
                field: "metadata".into(),
                message: "at most 64 entries".into(),
            });
        }
        let secret = format!("sk-loom-{}", random(24)?);
        let t = now();
        let row = KeyRow {
            id: format!("key_{}", random(12)?),
            consumer: new.consumer,
            team: new.team,
            name: new.name,
            secret_hash: table::hex(&loom_accounting::sha256(secret.as_bytes())),
            previous_hash: None,
            previous_until: None,
            expires_at,
            models: new.models,
            tier: new.tier,
            metadata: new.metadata,
            created_at: t,
            updated_at: t,
            version: 1,
        };
        let written = row.clone();
        self.write(async move |client| {
            let tx = store::begin(client).await?;
            store::insert(&tx, &written).await?;
            store::finish(tx, actor, "key.create", &written.id, None, Some(&written)).await
        })
        .await?;
        self.table.put(row.clone());
        self.dirty.store(true, Ordering::Relaxed);
        Ok((KeyView::of(&row), secret))
    }

    /// Changes a key.
    pub async fn update(&self, actor: &str, id: &str, patch: KeyPatch) -> Result<KeyView, Error> {
        if let Some(Some(n)) = &patch.name {
            check_name("name", n, 128)?;
        }
        let expires = match &patch.expires_at {
            Some(Some(s)) => {
                let e = parse_time("expires_at", s)?;
                if e <= now() {
                    return Err(Error::Invalid {
                        field: "expires_at".into(),
                        message: "in the past".into(),
                    });
                }
                Some(Some(e))
            }
            Some(None) => Some(None),
            None => None,
        };
        let id = id.to_owned();
        let row = self
            .write(async move |client| {
                let tx = store::begin(client).await?;
                let before = store::locked(&tx, &id).await?.ok_or(Error::NotFound)?;
                let mut after = before.clone();
                if let Some(n) = patch.name {
                    after.name = n;
                }
                if let Some(e) = expires {
                    after.expires_at = e;
                }
                if let Some(m) = patch.models {
                    after.models = m;
                }
                if let Some(t) = patch.tier {
                    after.tier = t;
                }
                if let Some(m) = patch.metadata {
                    after.metadata = m;
                }
                after.updated_at = now();
                after.version += 1;
                store::update(&tx, &after).await?;
                store::finish(tx, actor, "key.update", &id, Some(&before), Some(&after)).await?;
                Ok(after)
            })
            .await?;
        self.table.put(row.clone());
        self.dirty.store(true, Ordering::Relaxed);
        Ok(KeyView::of(&row))
    }

    /// Gives a key a new secret (returned this once); the old one keeps
    /// working for `grace` (the configured default when `None`).
    /// Rotations of one key are serialised by the store: each one's secret
    /// is current or, for the grace period, the previous one.
    pub async fn rotate(
        &self,
        actor: &str,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<(KeyView, String), Error> {
        let grace = grace.unwrap_or_else(|| self.settings.rotation_grace.get());
        let secret = format!("sk-loom-{}", random(24)?);
        let digest = table::hex(&loom_accounting::sha256(secret.as_bytes()));
        let id = id.to_owned();
        let row = self
            .write(async move |client| {
                let tx = store::begin(client).await?;
                let before = store::locked(&tx, &id).await?.ok_or(Error::NotFound)?;
                let mut after = before.clone();
                let t = now();
                after.previous_hash = Some(before.secret_hash.clone());
                after.previous_until = Some(t + grace.as_secs() as i64);
                after.secret_hash = digest;
                after.updated_at = t;
                after.version += 1;
                store::update(&tx, &after).await?;
                store::finish(tx, actor, "key.rotate", &id, Some(&before), Some(&after)).await?;
                Ok(after)
            })
            .await?;
        self.table.put(row.clone());
        self.dirty.store(true, Ordering::Relaxed);
        Ok((KeyView::of(&row), secret))
    }

    /// Revokes a key: it is refused at once here, and on every other
    /// replica as soon as the change reaches it.
    pub async fn delete(&self, actor: &str, id: &str) -> Result<(), Error> {
        let owned = id.to_owned();
        self.write(async move |client| {
            let tx = store::begin(client).await?;
            let before = store::locked(&tx, &owned).await?.ok_or(Error::NotFound)?;
            store::delete(&tx, &owned).await?;
            store::finish(tx, actor, "key.delete", &owned, Some(&before), None).await
        })
        .await?;
        self.table.remove(id);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn audit(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditEntry>, Error> {
        self.write(async move |client| store::audit(client, limit, before).await)
            .await
    }

    /// Applies the store's migrations (`loom migrate`); the names of those
    /// applied now.
    pub async fn migrate(settings: &ControlPlane) -> Result<Vec<String>, Error> {
        let (mut client, conn) =
            store::connect(settings.postgres.expose(), settings.timeout.get()).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let applied = store::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        applied
    }
}
