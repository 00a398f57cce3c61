//! Errors of the storage crate.

use thiserror::Error;

/// A storage operation failed. Cloneable: one failed group commit answers every operation
/// that was part of it.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine refused or failed the operation (I/O error, disk full, corruption).
    #[error("storage engine error during {op}: {msg}")]
    Engine { op: &'static str, msg: String },
    /// The storage thread has stopped; nothing more can be stored.
    #[error("storage thread has stopped")]
    Closed,
}

impl StoreError {
    pub(crate) fn engine(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Engine {
            op,
            msg: e.to_string(),
        }
    }
}
