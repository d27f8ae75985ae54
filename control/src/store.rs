//! PostgreSQL: the keys and the audit log, written by the admin API and
//! read by every replica's follower.
//!
//! Admin writes go through one connection, one transaction at a time (they
//! are rare, and a transaction needs the connection to itself); each
//! records its audit entry in the same transaction and announces the key it
//! changed with `pg_notify('loom_keys', id)`, delivered at commit.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::{Client, NoTls, Row};

use crate::Error;
use crate::table::{KeyRow, hex};

/// The channel key changes are announced on.
pub(crate) const CHANNEL: &str = "loom_keys";

mod embedded {
    refinery::embed_migrations!("migrations");
}

const COLUMNS: &str = "id, consumer, team, name, secret_hash, previous_hash, previous_until, \
     expires_at, models, tier, metadata::text, created_at, updated_at, version";

/// A connection to the store, with the call timeout.
pub(crate) async fn connect(
    url: &str,
    timeout: Duration,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    Error,
> {
    match tokio::time::timeout(timeout, tokio_postgres::connect(url, NoTls)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Unavailable(e.to_string())),
        Err(_) => Err(Error::Unavailable("connecting timed out".into())),
    }
}

/// Applies the migrations not applied yet; the names of those applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<String>, Error> {
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| Error::Unavailable(format!("migrating: {e}")))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

fn digest_hex(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| hex(&b))
}

/// A key row from the store.
pub(crate) fn key_row(r: &Row) -> Result<KeyRow, Error> {
    let bad = |e: tokio_postgres::Error| Error::Unavailable(format!("reading a key: {e}"));
    let metadata: String = r.try_get(10).map_err(bad)?;
    Ok(KeyRow {
        id: r.try_get(0).map_err(bad)?,
        consumer: r.try_get(1).map_err(bad)?,
        team: r.try_get(2).map_err(bad)?,
        name: r.try_get(3).map_err(bad)?,
        secret_hash: hex(&r.try_get::<_, Vec<u8>>(4).map_err(bad)?),
        previous_hash: digest_hex(r.try_get(5).map_err(bad)?),
        previous_until: r.try_get(6).map_err(bad)?,
        expires_at: r.try_get(7).map_err(bad)?,
        models: r.try_get(8).map_err(bad)?,
        tier: r.try_get(9).map_err(bad)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at: r.try_get(11).map_err(bad)?,
        updated_at: r.try_get(12).map_err(bad)?,
        version: r.try_get(13).map_err(bad)?,
    })
}

fn db(e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return Error::Conflict("a key with that secret exists".into());
    }
    Error::Unavailable(e.to_string())
}

/// Every key, read as a stream (a row at a time, not the whole answer
/// buffered beside the keys made of it).
pub(crate) async fn all(client: &Client) -> Result<Vec<KeyRow>, Error> {
    use futures_util::TryStreamExt as _;
    let none: [&str; 0] = [];
    let stream = client
        .query_raw(&format!("SELECT {COLUMNS} FROM loom_keys"), none)
        .await
        .map_err(db)?;
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while let Some(row) = stream.try_next().await.map_err(db)? {
        out.push(key_row(&row)?);
    }
    Ok(out)
}

/// The key `id`.
pub(crate) async fn one(client: &Client, id: &str) -> Result<Option<KeyRow>, Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM loom_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(db)?;
    row.as_ref().map(key_row).transpose()
}

/// One admin change, as the audit log keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What an audit entry shows of a key: everything but its digests.
pub(crate) fn shown(row: &KeyRow) -> Value {
    let mut v = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("secret_hash");
        m.remove("previous_hash");
    }
    v
}

/// Ends a change to the key `id`: records its audit entry, announces the
/// key, commits.
pub(crate) async fn finish(
    tx: tokio_postgres::Transaction<'_>,
    actor: &str,
    action: &str,
    id: &str,
    before: Option<&KeyRow>,
    after: Option<&KeyRow>,
) -> Result<(), Error> {
    let now = crate::now();
    let before_json = before.map(shown).map(|v| v.to_string());
    let after_json = after.map(shown).map(|v| v.to_string());
    tx.execute(
        "INSERT INTO loom_audit (at, actor, action, target, before, after) \
         VALUES ($1, $2, $3, $4, ($5::text)::jsonb, ($6::text)::jsonb)",
        &[&now, &actor, &action, &id, &before_json, &after_json],
    )
    .await
    .map_err(db)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// Opens a transaction.
pub(crate) async fn begin(client: &mut Client) -> Result<tokio_postgres::Transaction<'_>, Error> {
    client.transaction().await.map_err(db)
}

/// Inserts `row` (its digests as given).
pub(crate) async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    row: &KeyRow,
) -> Result<(), Error> {
    let secret = crate::table::unhex(&row.secret_hash)
        .ok_or_else(|| Error::Unavailable("malformed digest".into()))?
        .to_vec();
    let metadata = serde_json::to_string(&row.metadata).unwrap_or_else(|_| "{}".into());
    tx.execute(
        "INSERT INTO loom_keys (id, consumer, team, name, secret_hash, previous_hash, previous_until, \
         expires_at, models, tier, metadata, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6, $7, $8, ($9::text)::jsonb, $10, $10, 1)",
        &[
            &row.id,
            &row.consumer,
            &row.team,
            &row.name,
            &secret,
            &row.expires_at,
            &row.models,
            &row.tier,
            &metadata,
            &row.created_at,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// The key `id`, locked until the transaction ends.
pub(crate) async fn locked(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<KeyRow>, Error> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM loom_keys WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(db)?;
    row.as_ref().map(key_row).transpose()
}

/// Writes every field of `row` but its id and creation time, one version on.
pub(crate) async fn update(
    tx: &tokio_postgres::Transaction<'_>,
    row: &KeyRow,
) -> Result<(), Error> {
    let secret = crate::table::unhex(&row.secret_hash)
        .ok_or_else(|| Error::Unavailable("malformed digest".into()))?
        .to_vec();
    let previous = row
        .previous_hash
        .as_deref()
        .and_then(crate::table::unhex)
        .map(|d| d.to_vec());
    let metadata = serde_json::to_string(&row.metadata).unwrap_or_else(|_| "{}".into());
    tx.execute(
        "UPDATE loom_keys SET team = $2, name = $3, secret_hash = $4, previous_hash = $5, \
         previous_until = $6, expires_at = $7, models = $8, tier = $9, metadata = ($10::text)::jsonb, \
         updated_at = $11, version = $12 WHERE id = $1",
        &[
            &row.id,
            &row.team,
            &row.name,
            &secret,
            &previous,
            &row.previous_until,
            &row.expires_at,
            &row.models,
            &row.tier,
            &metadata,
            &row.updated_at,
            &row.version,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Deletes the key `id`.
pub(crate) async fn delete(tx: &tokio_postgres::Transaction<'_>, id: &str) -> Result<(), Error> {
    tx.execute("DELETE FROM loom_keys WHERE id = $1", &[&id])
        .await
        .map_err(db)?;
    Ok(())
}

/// The latest audit entries, newest first, older than `before` when given.
pub(crate) async fn audit(
    client: &Client,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, Error> {
    let rows = client
        .query(
            "SELECT id, at, actor, action, target, before::text, after::text FROM loom_audit \
             WHERE ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
            &[&limit, &before],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let bad = |e: tokio_postgres::Error| Error::Unavailable(e.to_string());
            let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
            Ok(AuditEntry {
                id: r.try_get(0).map_err(bad)?,
                at: r.try_get(1).map_err(bad)?,
                actor: r.try_get(2).map_err(bad)?,
                action: r.try_get(3).map_err(bad)?,
                target: r.try_get(4).map_err(bad)?,
                before: json(r.try_get(5).map_err(bad)?),
                after: json(r.try_get(6).map_err(bad)?),
            })
        })
        .collect()
}
