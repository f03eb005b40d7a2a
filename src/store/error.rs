use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the durable store. Every variant names the database file so that an
/// operator reading a log line knows which file to look at.
///
/// `Clone` because one failed group commit has to be reported to every waiting caller;
/// the underlying errors are therefore kept behind `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot create or open the state database: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{path}: the state database is locked; is another vendgate running with the same state directory?")]
    Locked { path: PathBuf },
    #[error(
        "{path}: the disk is full; the event was NOT stored and was not acknowledged: {source}"
    )]
    DiskFull {
        path: PathBuf,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("{path}: the state database is corrupt ({detail}); move it aside to start with an empty state, which loses undelivered events")]
    CorruptFile { path: PathBuf, detail: String },
    #[error("{path}: corrupt record in table `{table}` at key {key}: {detail}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("{path}: the state database was written by a newer or older redb format (version {version}) and must be upgraded")]
    UpgradeRequired { path: PathBuf, version: u8 },
    #[error("{path}: state database error: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("{path}: the store's writer thread has stopped; nothing more can be stored")]
    WriterGone { path: PathBuf },
    #[error("{path}: an outbox item is too large to store: {detail}")]
    TooLarge { path: PathBuf, detail: String },
}

impl StoreError {
    /// Maps any redb error onto the variants an operator can act on.
    pub(crate) fn from_redb(path: &std::path::Path, err: impl Into<redb::Error>) -> StoreError {
        let path = path.to_path_buf();
        let err: redb::Error = err.into();
        match err {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked { path },
            redb::Error::Corrupted(detail) => StoreError::CorruptFile { path, detail },
            redb::Error::UpgradeRequired(version) => StoreError::UpgradeRequired { path, version },
            redb::Error::ValueTooLarge(n) => StoreError::TooLarge {
                path,
                detail: format!("{n} bytes"),
            },
            // redb reports a foreign or mangled header as InvalidData.
            redb::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StoreError::CorruptFile {
                    path,
                    detail: io.to_string(),
                }
            }
            redb::Error::Io(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull {
                    path,
                    source: Arc::new(err),
                }
            }
            other => StoreError::Database {
                path,
                source: Arc::new(other),
            },
        }
    }
}

/// Attaches the database path to a redb error (`.at(path)?`), since redb's many
/// error types cannot share one closure.
pub(crate) trait At<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError> {
        self.map_err(|err| StoreError::from_redb(path, err))
    }
}
