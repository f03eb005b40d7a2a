use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the durable store. Every variant names the file or directory so
/// that an operator reading a log line knows where to look.
///
/// `Clone` because one failed group commit has to be reported to every waiting
/// caller; the underlying errors are therefore kept behind `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot create or open the state: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error(
        "{path}: the state is locked; is another vendgate running with the same state directory?"
    )]
    Locked { path: PathBuf },
    #[error(
        "{path}: the disk is full; the event was NOT stored and was not acknowledged: {source}"
    )]
    DiskFull {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{path}: cannot write the journal; nothing of this commit was acknowledged: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{path}: the journal cannot be read ({detail}); move the directory aside to start with an empty state, which loses undelivered events")]
    CorruptFile { path: PathBuf, detail: String },
    #[error("{path}: corrupt record in `{table}` at {key}: {detail}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
        detail: String,
    },
    #[error("{path}: cannot convert the state database of an earlier vendgate: {detail}; it is left as it was")]
    Migrate { path: PathBuf, detail: String },
    #[error("{path}: the store's writer thread has stopped; nothing more can be stored")]
    WriterGone { path: PathBuf },
    #[error("{path}: an outbox item is too large to store: {detail}")]
    TooLarge { path: PathBuf, detail: String },
}

impl StoreError {
    /// A failed journal write: a full disk is told apart, since it is the
    /// one an operator can fix at once.
    pub(crate) fn write(path: &std::path::Path, err: std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        let source = Arc::new(err);
        if source.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull { path, source }
        } else {
            StoreError::Write { path, source }
        }
    }

    pub(crate) fn io(path: &std::path::Path, err: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source: Arc::new(err),
        }
    }
}
