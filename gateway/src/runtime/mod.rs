//! Runtime state: what one configuration compiles into, its reload, the
//! exchange each request carries, body helpers and log redaction.

pub mod body;
pub mod exchange;
pub mod models;
pub mod redact;
pub mod reload;
pub mod state;
pub mod stores;
