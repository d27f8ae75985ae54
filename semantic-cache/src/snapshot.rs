//! Writing the memory index to a file at shutdown and reading it back at
//! start, so a restart does not empty the cache.
//!
//! The file is JSON lines: a header with the format version and the
//! embeddings' dimensions, then one entry per line in the order they were
//! stored. It is written to a temporary file and renamed, so a crash
//! mid-write leaves the previous snapshot intact. Entries past the TTL are
//! dropped on load; a file from another format version or embedder is
//! ignored with an error the caller logs.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Answer;
use crate::key::Digest;
use crate::memory::{MemoryIndex, Similar};
use crate::signature::Signature;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    dims: usize,
}

#[derive(Serialize, Deserialize)]
struct Line {
    exact: Digest,
    stored_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    similar: Option<SimilarLine>,
    answer: Answer,
}

#[derive(Serialize, Deserialize)]
struct SimilarLine {
    partition: Digest,
    vector: Vec<f32>,
    signature: Signature,
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {detail}")]
    Format {
        path: String,
        line: usize,
        detail: String,
    },
}

/// Writes every living entry of `index` to `path`; returns how many.
pub fn save(index: &MemoryIndex<Answer>, path: &Path) -> Result<usize, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = BufWriter::new(file);
    let entries = index.entries();
    let header = Header {
        version: VERSION,
        dims: index.dims(),
    };
    let write = |out: &mut BufWriter<std::fs::File>, v: &dyn erased::Json| -> std::io::Result<()> {
        v.write(out)?;
        out.write_all(b"\n")
    };
    write(&mut out, &header).map_err(io)?;
    for (exact, similar, answer, stored_at) in &entries {
        let line = Line {
            exact: *exact,
            stored_at: *stored_at,
            similar: similar.as_ref().map(|s| SimilarLine {
                partition: s.partition,
                vector: s.vector.clone(),
                signature: s.signature.clone(),
            }),
            answer: (**answer).clone(),
        };
        write(&mut out, &line).map_err(io)?;
    }
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(entries.len())
}

/// Loads `path` into `index`, keeping entries younger than the TTL at
/// `now`; returns how many. A missing file loads nothing.
pub fn load(index: &MemoryIndex<Answer>, path: &Path, now: u64) -> Result<usize, SnapshotError> {
    let name = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(SnapshotError::Io { path: name, source }),
    };
    let format = |line: usize, detail: String| SnapshotError::Format {
        path: name.clone(),
        line,
        detail,
    };
    let mut lines = std::io::BufReader::new(file).lines();
    let header: Header = match lines.next() {
        None => return Ok(0),
        Some(l) => {
            let l = l.map_err(|e| format(1, e.to_string()))?;
            serde_json::from_str(&l).map_err(|e| format(1, e.to_string()))?
        }
    };
    if header.version != VERSION {
        return Err(format(
            1,
            format!("format version {} (expected {VERSION})", header.version),
        ));
    }
    if index.dims() != 0 && header.dims != 0 && header.dims != index.dims() {
        return Err(format(
            1,
            format!(
                "embeddings of {} dimensions; this embedder makes {}",
                header.dims,
                index.dims()
            ),
        ));
    }
    let mut loaded = 0;
    for (n, l) in lines.enumerate() {
        let l = l.map_err(|e| format(n + 2, e.to_string()))?;
        let line: Line = serde_json::from_str(&l).map_err(|e| format(n + 2, e.to_string()))?;
        let size = serde_json::to_string(&line.answer.response).map_or(0, |s| s.len());
        let similar = line.similar.map(|s| Similar {
            partition: s.partition,
            vector: s.vector,
            signature: s.signature,
        });
        if index.put_at(line.exact, similar, line.answer, size, line.stored_at, now) {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Serialising a header or a line with one writer.
mod erased {
    pub trait Json {
        fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
    }
    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            serde_json::to_writer(out, self).map_err(std::io::Error::other)
        }
    }
}
