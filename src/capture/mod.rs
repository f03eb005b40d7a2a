//! `run --capture DIR` (DESIGN §2, §8): what crossed each device's serial
//! line, both directions, chunk by chunk as read or written, with times,
//! as JSON Lines a profile author replays.
//!
//! The port task only hands a chunk to a bounded queue (`try_send`): a
//! writer thread formats and writes it. A writer that falls behind (a slow
//! SD card) makes the port task drop chunks, counted in health as
//! `capture_dropped`, never wait: the board's POLLs are answered as without
//! a capture. Files are `{machine}-{started as YYYYMMDDTHHMMSSZ}.jsonl`,
//! rotated at 16 MiB (each file with its own header), the last 4 kept.
//!
//! On a bus every device's capture holds the whole line (the frames of the
//! other addresses too): that is what crossed its wire, and replay picks
//! the frames by address as `run` does.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc::{channel, Receiver, Sender};
use tracing::{error, warn};

/// Chunks waiting for the writer; beyond that they are dropped.
const QUEUE: usize = 4096;
/// A capture file is closed and a new one begun at this size.
pub const ROTATE_AT: u64 = 16 * 1024 * 1024;
/// Capture files kept per machine, the newest.
pub const KEEP: usize = 4;

/// Which way a chunk went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the machine.
    Rx,
    /// From the gateway (or, in `tap`, the existing upper computer).
    Tx,
}

impl Dir {
    fn as_str(self) -> &'static str {
        match self {
            Dir::Rx => "rx",
            Dir::Tx => "tx",
        }
    }
}

struct Chunk {
    at: Instant,
    dir: Dir,
    bytes: Vec<u8>,
}

/// What a header says about the line.
#[derive(Debug, Clone)]
pub struct Header {
    pub profile: String,
    pub machine: String,
    pub baud: u32,
}

/// The port task's end of one device's capture.
pub struct Capture {
    // tokio's channel, not std's: it is in the binary already, and the
    // writer thread can wait on it with `blocking_recv`.
    queue: Sender<Chunk>,
}

impl Capture {
    /// Starts the writer thread for one device's capture in `dir`.
    pub fn start(dir: &Path, header: Header) -> std::io::Result<Capture> {
        std::fs::create_dir_all(dir)?;
        let (queue, chunks) = channel(QUEUE);
        let writer = Writer::new(dir.to_owned(), header, ROTATE_AT)?;
        std::thread::Builder::new()
            .name(format!("capture {}", writer.header.machine))
            .spawn(move || writer.run(chunks))?;
        Ok(Capture { queue })
    }

    /// Hands a chunk to the writer; false if it was dropped (the writer is
    /// behind or gone), for the caller to count.
    pub fn record(&self, dir: Dir, bytes: &[u8]) -> bool {
        let chunk = Chunk {
            at: Instant::now(),
            dir,
            bytes: bytes.to_vec(),
        };
        self.queue.try_send(chunk).is_ok()
    }
}

/// The writer thread's state: the open file and when it began.
struct Writer {
    dir: PathBuf,
    header: Header,
    rotate_at: u64,
    file: BufWriter<File>,
    written: u64,
    started: Instant,
}

impl Writer {
    fn new(dir: PathBuf, header: Header, rotate_at: u64) -> std::io::Result<Writer> {
        let (file, written, started) = open(&dir, &header, Utc::now())?;
        Ok(Writer {
            dir,
            header,
            rotate_at,
            file,
            written,
            started,
        })
    }

    fn run(mut self, mut chunks: Receiver<Chunk>) {
        while let Some(first) = chunks.blocking_recv() {
            // Everything queued, then one flush: a capture is read while the
            // gateway runs, and a crash loses at most the last burst.
            let mut next = Some(first);
            while let Some(chunk) = next {
                if let Err(e) = self.write(&chunk) {
                    error!(machine = %self.header.machine, error = %e, "capture write failed; the capture stops");
                    return;
                }
                next = chunks.try_recv().ok();
            }
            if let Err(e) = self.file.flush() {
                error!(machine = %self.header.machine, error = %e, "capture write failed; the capture stops");
                return;
            }
        }
    }

    fn write(&mut self, chunk: &Chunk) -> std::io::Result<()> {
        if self.written >= self.rotate_at {
            self.file.flush()?;
            let (file, written, started) = open(&self.dir, &self.header, Utc::now())?;
            (self.file, self.written, self.started) = (file, written, started);
            prune(&self.dir, &self.header.machine, KEEP);
        }
        // Whole microseconds as integers: exact, and no float formatting
        // (a sizeable part of std) in the board binary for it.
        let t = chunk.at.saturating_duration_since(self.started).as_micros();
        let line = format!(
            "{{\"t\":{}.{:06},\"dir\":\"{}\",\"hex\":\"{}\"}}\n",
            t / 1_000_000,
            t % 1_000_000,
            chunk.dir.as_str(),
            hex(&chunk.bytes)
        );
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new capture file with its header; its `t = 0` is now.
fn open(
    dir: &Path,
    header: &Header,
    now: DateTime<Utc>,
) -> std::io::Result<(BufWriter<File>, u64, Instant)> {
    let mut name = format!("{}-{}.jsonl", header.machine, now.format("%Y%m%dT%H%M%SZ"));
    // Two rotations within one second: keep both.
    let mut n = 1;
    while dir.join(&name).exists() {
        n += 1;
        name = format!(
            "{}-{}-{n}.jsonl",
            header.machine,
            now.format("%Y%m%dT%H%M%SZ")
        );
    }
    let mut file = BufWriter::new(File::create(dir.join(&name))?);
    let first = serde_json::json!({
        "vendgate_capture": 1,
        "profile": header.profile,
        "machine": header.machine,
        "baud": header.baud,
        "started": now.to_rfc3339_opts(SecondsFormat::Micros, true),
    });
    let line = format!("{first}\n");
    file.write_all(line.as_bytes())?;
    Ok((file, line.len() as u64, Instant::now()))
}

/// Deletes all but the newest `keep` captures of `machine` (names sort by
/// time).
fn prune(dir: &Path, machine: &str, keep: usize) {
    let prefix = format!("{machine}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        if let Err(e) = std::fs::remove_file(old) {
            warn!(file = %old.display(), error = %e, "cannot remove an old capture");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            profile: "vmc-upper-computer".into(),
            machine: "vm-001".into(),
            baud: 57600,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_capture_is_a_header_and_a_line_per_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(dir.path().to_owned(), header(), ROTATE_AT).unwrap();
        let start = w.started;
        for (dir, bytes) in [
            (Dir::Rx, &b"\xfa\xfb\x41\x00\x40"[..]),
            (Dir::Tx, &b"\xfa\xfb\x42\x00\x43"[..]),
        ] {
            w.write(&Chunk {
                at: start,
                dir,
                bytes: bytes.to_vec(),
            })
            .unwrap();
        }
        w.file.flush().unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("vm-001-") && name.ends_with("Z.jsonl"),
            "{name}"
        );
        let l = lines(&file);
        assert_eq!(l[0]["vendgate_capture"], 1);
        assert_eq!(l[0]["profile"], "vmc-upper-computer");
        assert_eq!(l[0]["machine"], "vm-001");
        assert_eq!(l[0]["baud"], 57600);
        assert!(l[0]["started"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            l[1],
            serde_json::json!({"t": 0.0, "dir": "rx", "hex": "fafb410040"})
        );
        assert_eq!(l[2]["dir"], "tx");
        assert_eq!(l[2]["hex"], "fafb420043");
    }

    #[test]
    fn captures_rotate_each_with_a_header_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(dir.path().to_owned(), header(), 300).unwrap();
        for _ in 0..60 {
            let chunk = Chunk {
                at: Instant::now(),
                dir: Dir::Rx,
                bytes: vec![0xfa; 16],
            };
            w.write(&chunk).unwrap();
        }
        w.file.flush().unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), KEEP, "{files:?}");
        for file in &files {
            let l = lines(file);
            assert_eq!(l[0]["vendgate_capture"], 1, "{}", file.display());
            assert!(l[1..].iter().all(|c| c["hex"] == "fa".repeat(16)));
        }
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (queue, _chunks) = channel(1);
        let capture = Capture { queue };
        assert!(capture.record(Dir::Rx, b"a"));
        assert!(!capture.record(Dir::Rx, b"b"), "dropped, not blocked");
    }
}
