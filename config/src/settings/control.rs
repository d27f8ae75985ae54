//! The control plane's store: run-time keys (and, as they land, teams,
//! budgets and the audit log) in PostgreSQL.

use serde::{Deserialize, Serialize};

use crate::units::{Duration, Secret};

/// `control_plane:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// The PostgreSQL connection: a URL (`postgres://loom@db:5432/loom`) or
    /// libpq key=value settings (`host=db user=loom dbname=loom`); best
    /// read from the environment, as it may hold a password.
    pub postgres: Secret,
    /// Apply the store's migrations at start (`loom migrate` applies them
    /// by hand).
    #[serde(default = "crate::schema::yes")]
    pub migrate: bool,
    /// The file the key table is written to after each full load, and read
    /// at start while PostgreSQL is away.
    #[serde(default = "default_snapshot")]
    pub snapshot: String,
    /// How often the whole key table is read again (changes arrive at
    /// once through `LISTEN/NOTIFY` in between).
    #[serde(default = "default_resync")]
    pub resync_every: Duration,
    /// How long a rotated key's old secret keeps working, unless the
    /// rotation names its own.
    #[serde(default = "default_grace")]
    pub rotation_grace: Duration,
    /// Longest a call to PostgreSQL may take.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_snapshot() -> String {
    "loom-keys.snapshot.json".to_owned()
}
fn default_resync() -> Duration {
    Duration::from_secs(300)
}
fn default_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
