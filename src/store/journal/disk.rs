//! The few file operations the journal needs, behind a trait so that the
//! property tests can run it on a disk that forgets unsynced writes and tears
//! the last one, and the fault tests on one that is full.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One segment file.
pub(crate) trait Segment: Send + Sync + std::fmt::Debug {
    fn read_all(&self) -> io::Result<Vec<u8>>;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Data only (`fdatasync`): a write inside the preallocated length
    /// changes no metadata, so this writes the touched pages and nothing else.
    fn sync(&self) -> io::Result<()>;
}

/// The directory of segments, named by number.
pub(crate) trait Dir: Send + Sync + std::fmt::Debug {
    /// Segment numbers present, in any order.
    fn list(&self) -> io::Result<Vec<u64>>;
    fn open(&self, n: u64) -> io::Result<Arc<dyn Segment>>;
    /// A new segment of `len` zero bytes, written out (not a sparse file:
    /// filling holes later would cost block allocations, metadata, at every
    /// commit) and synced, its directory entry too.
    fn create(&self, n: u64, len: u64) -> io::Result<Arc<dyn Segment>>;
    /// Gives segment `from` the number `to`, durably: how a segment whose
    /// records are all delivered is used again without writing it out anew.
    fn rename(&self, from: u64, to: u64) -> io::Result<()>;
    fn remove(&self, n: u64) -> io::Result<()>;
    /// Where the segments live, for messages.
    fn path(&self, n: u64) -> PathBuf;
}

/// Segments as files `NNNNNNNNNNNNNNNN.log` (hex) in a directory.
#[derive(Debug)]
pub(crate) struct FsDir {
    dir: PathBuf,
    /// Held open for `sync_all` after renames and creations.
    handle: File,
}

impl FsDir {
    pub(crate) fn open(dir: &Path) -> io::Result<FsDir> {
        std::fs::create_dir_all(dir)?;
        Ok(FsDir {
            dir: dir.to_path_buf(),
            handle: File::open(dir)?,
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.handle.sync_all()
    }
}

const SUFFIX: &str = ".log";

impl Dir for FsDir {
    fn list(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if name.len() == 16 {
                if let Ok(n) = u64::from_str_radix(name, 16) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    fn open(&self, n: u64) -> io::Result<Arc<dyn Segment>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(n))?;
        Ok(Arc::new(FsSegment::new(file)))
    }

    fn create(&self, n: u64, len: u64) -> io::Result<Arc<dyn Segment>> {
        let path = self.path(n);
        // Written under a temporary name and renamed, so a crash halfway
        // leaves no short segment that a scan would have to tell apart.
        let tmp = self.dir.join(format!("{n:016x}.tmp"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // Page by page: writes of 64 KiB would leave the file in the page
        // cache as 64 KiB folios, and every later commit dirtying a few bytes
        // of one would write all 64 KiB back (measured: 65,536 bytes written
        // per event against 4,194 this way).
        let zeros = vec![0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        self.sync_dir()?;
        Ok(Arc::new(FsSegment::new(file)))
    }

    fn rename(&self, from: u64, to: u64) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))?;
        self.sync_dir()
    }

    fn remove(&self, n: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(n))?;
        self.sync_dir()
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:016x}{SUFFIX}"))
    }
}

#[derive(Debug)]
struct FsSegment(File);

impl FsSegment {
    /// No readahead: reading a segment back at start or an item from it
    /// would otherwise fill the page cache with large folios, which a small
    /// commit then writes back whole (see `create`).
    fn new(file: File) -> FsSegment {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open and owned by `file`. Only advice:
        // a failure changes nothing but the bytes written, so it is ignored.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        FsSegment(file)
    }
}

impl Segment for FsSegment {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.0.metadata()?.len())
            .map_err(|_| io::Error::other("segment larger than memory"))?;
        let mut buf = vec![0u8; len];
        self.0.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[cfg(test)]
pub(crate) mod mem {
    //! A disk in memory that behaves like one losing power: writes since the
    //! last sync of a segment are kept, torn or lost at a crash.

    use std::collections::BTreeMap;
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::{Dir, Segment};

    #[derive(Debug, Default)]
    struct Bytes {
        /// What a read sees.
        live: Vec<u8>,
        /// What survives a crash: the bytes as of the last sync.
        synced: Vec<u8>,
        /// Unsynced writes, in order, for tearing.
        pending: Vec<(u64, Vec<u8>)>,
    }

    /// Faults the tests switch on, shared by a directory and its segments.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// `create` fails with ENOSPC: a full disk.
        pub(crate) full: AtomicBool,
        /// Writes and syncs fail with EIO, after writing half of the bytes.
        pub(crate) broken: AtomicBool,
    }

    #[derive(Debug, Default)]
    pub(crate) struct MemSegment(Mutex<Bytes>, Arc<Faults>);

    impl Segment for MemSegment {
        fn read_all(&self) -> io::Result<Vec<u8>> {
            Ok(lock(&self.0).live.clone())
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let b = lock(&self.0);
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let src = b
                .live
                .get(start..start + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
            let mut b = lock(&self.0);
            if self.1.broken.load(Ordering::Relaxed) {
                let half = &data[..data.len() / 2];
                put(&mut b.live, offset, half);
                b.pending.push((offset, half.to_vec()));
                return Err(io::Error::other("injected I/O error"));
            }
            put(&mut b.live, offset, data);
            b.pending.push((offset, data.to_vec()));
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            if self.1.broken.load(Ordering::Relaxed) {
                return Err(io::Error::other("injected I/O error"));
            }
            let mut b = lock(&self.0);
            b.synced = b.live.clone();
            b.pending.clear();
            Ok(())
        }
    }

    fn put(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if buf.len() < start + data.len() {
            buf.resize(start + data.len(), 0);
        }
        buf[start..start + data.len()].copy_from_slice(data);
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Segments by number. Directory operations are durable at once, as
    /// FsDir makes them.
    #[derive(Debug, Default)]
    pub(crate) struct MemDir {
        segments: Mutex<BTreeMap<u64, Arc<MemSegment>>>,
        pub(crate) faults: Arc<Faults>,
    }

    impl MemDir {
        /// Power loss: every segment keeps its synced bytes plus the first
        /// `keep` unsynced writes, the next of which is cut after `tear`
        /// bytes (both per segment, from the caller's dice).
        pub(crate) fn crash(&self, keep: usize, tear: usize) {
            for seg in lock(&self.segments).values() {
                let mut b = lock(&seg.0);
                let mut bytes = b.synced.clone();
                let pending = std::mem::take(&mut b.pending);
                for (i, (offset, data)) in pending.iter().enumerate() {
                    if i < keep {
                        put(&mut bytes, *offset, data);
                    } else {
                        put(&mut bytes, *offset, &data[..tear.min(data.len())]);
                        break;
                    }
                }
                b.live = bytes.clone();
                b.synced = bytes;
            }
        }

        /// Direct access for tests that cut or corrupt a segment.
        pub(crate) fn edit(&self, n: u64, f: impl FnOnce(&mut Vec<u8>)) {
            if let Some(seg) = lock(&self.segments).get(&n) {
                let mut b = lock(&seg.0);
                f(&mut b.live);
                b.synced = b.live.clone();
                b.pending.clear();
            }
        }
    }

    impl Dir for MemDir {
        fn list(&self) -> io::Result<Vec<u64>> {
            Ok(lock(&self.segments).keys().copied().collect())
        }
        fn open(&self, n: u64) -> io::Result<Arc<dyn Segment>> {
            let seg = lock(&self.segments).get(&n).cloned();
            let seg = seg.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            Ok(seg)
        }
        fn create(&self, n: u64, len: u64) -> io::Result<Arc<dyn Segment>> {
            if self.faults.full.load(Ordering::Relaxed) {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let bytes = Bytes {
                live: vec![0; len],
                synced: vec![0; len],
                pending: Vec::new(),
            };
            let seg = Arc::new(MemSegment(Mutex::new(bytes), self.faults.clone()));
            lock(&self.segments).insert(n, seg.clone());
            Ok(seg)
        }
        fn rename(&self, from: u64, to: u64) -> io::Result<()> {
            let mut segs = lock(&self.segments);
            let seg = segs
                .remove(&from)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            segs.insert(to, seg);
            Ok(())
        }
        fn remove(&self, n: u64) -> io::Result<()> {
            lock(&self.segments).remove(&n);
            Ok(())
        }
        fn path(&self, n: u64) -> PathBuf {
            PathBuf::from(format!("mem/{n:016x}.log"))
        }
    }
}
