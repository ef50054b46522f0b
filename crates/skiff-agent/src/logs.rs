//! Container logs: files in the CRI log format, with size-based rotation.
//!
//! Each line a container writes becomes one line in its log file:
//! ```text
//! 2026-11-22T09:30:01.123456789Z stdout F GET / HTTP/1.1 200
//! ```
//! (timestamp, stream, `F` for a full line or `P` for a partial one — a line longer than 16 KiB
//! is split — and the text). That is the format kubelet writes, so `kubectl logs --timestamps`,
//! `--since` and `--tail` are answered by reading the file. When a file passes `max_size` it is
//! renamed to `NAME.1` (replacing the previous one) and a new file is started.
//!
//! The container's stdout and stderr are FIFOs the shim writes to; [`spawn_copier`] reads them.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// Lines longer than this are split into partial (`P`) records, as kubelet does.
const MAX_LINE: usize = 16 * 1024;

/// The default size at which a log file is rotated.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// One container's log file, shared by its stdout and stderr copiers.
pub struct LogWriter {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    size: u64,
    max_size: u64,
}

impl LogWriter {
    pub async fn open(path: &Path, max_size: u64) -> std::io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size,
        })
    }

    /// Appends one record; rotates first if the file is full.
    pub async fn write(&mut self, stream: &str, partial: bool, line: &[u8]) -> std::io::Result<()> {
        if self.size >= self.max_size {
            self.rotate().await?;
        }
        let mut record = Vec::with_capacity(line.len() + 48);
        record.extend_from_slice(format_timestamp(jiff::Timestamp::now()).as_bytes());
        record.push(b' ');
        record.extend_from_slice(stream.as_bytes());
        record.extend_from_slice(if partial { b" P " } else { b" F " });
        record.extend_from_slice(line);
        record.push(b'\n');
        if let Some(file) = &mut self.file {
            file.write_all(&record).await?;
            // tokio's File hands writes to a background thread; flush so a reader (kubectl
            // logs) sees the line now.
            file.flush().await?;
        }
        self.size += record.len() as u64;
        Ok(())
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        tokio::fs::rename(&self.path, &rotated).await?;
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }
}

/// RFC 3339 with nanoseconds, as kubelet writes (fixed width so the file sorts by time).
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// Log files a running container is still writing, with how many copiers write each (so
/// `kubectl logs -f` knows when to stop following).
static ACTIVE: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, usize>>> =
    std::sync::Mutex::new(None);

fn set_active(path: &Path, delta: isize) {
    let mut guard = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(Default::default);
    let count = map.entry(path.to_path_buf()).or_insert(0);
    *count = (*count as isize + delta).max(0) as usize;
    if *count == 0 {
        map.remove(path);
    }
}

/// Whether a container is still writing `path`.
pub fn is_active(path: &Path) -> bool {
    let guard = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().is_some_and(|m| m.contains_key(path))
}

/// Copies lines from a FIFO (or any reader) into the shared log writer until EOF.
pub fn spawn_copier<R>(reader: R, stream: &'static str, writer: Arc<Mutex<LogWriter>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let path = writer.lock().await.path.clone();
        set_active(&path, 1);
        copy_lines(reader, stream, &writer).await;
        set_active(&path, -1);
    });
}

async fn copy_lines<R>(reader: R, stream: &'static str, writer: &Arc<Mutex<LogWriter>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            // Read at most MAX_LINE bytes: a longer line becomes several partial records.
            let mut limited = (&mut reader).take(MAX_LINE as u64);
            match limited.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let full = line.last() == Some(&b'\n');
            if full {
                line.pop();
            }
            let result = writer.lock().await.write(stream, !full, &line).await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "writing a container log");
            }
        }
    }
}

use tokio::io::AsyncReadExt as _;

/// One parsed record of a log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
}

/// Parses a line of a CRI log file.
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    Some(Record {
        time,
        stream,
        partial: tag == "P",
        text,
    })
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<jiff::Timestamp>,
    pub limit_bytes: Option<usize>,
}

/// Renders the log files (rotated one first) as `kubectl logs` prints them.
pub fn render(paths: &[PathBuf], options: &LogOptions) -> String {
    let mut lines: Vec<String> = Vec::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let mut pending = String::new();
        for line in text.lines() {
            let Some(record) = parse_record(line) else {
                continue;
            };
            if let Some(since) = options.since {
                match record.time.parse::<jiff::Timestamp>() {
                    Ok(t) if t < since => continue,
                    _ => {}
                }
            }
            pending.push_str(record.text);
            if record.partial {
                continue;
            }
            let text = std::mem::take(&mut pending);
            lines.push(if options.timestamps {
                format!("{} {text}", record.time)
            } else {
                text
            });
        }
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(limit) = options.limit_bytes {
        out.truncate(limit.min(out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_cri_records_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c_0.log");
        let mut w = LogWriter::open(&path, 200).await.expect("open");
        w.write("stdout", false, b"hello").await.expect("write");
        w.write("stderr", true, b"part").await.expect("write");
        w.write("stderr", false, b"ial").await.expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let records: Vec<Record> = text.lines().filter_map(parse_record).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].stream, "stdout");
        assert_eq!(records[0].text, "hello");
        assert!(records[1].partial);
        // Partial records join into one line when rendered; tail counts whole lines.
        let all = render(std::slice::from_ref(&path), &LogOptions::default());
        assert_eq!(all, "hello\npartial\n");
        let tail = render(
            std::slice::from_ref(&path),
            &LogOptions {
                tail_lines: Some(1),
                ..LogOptions::default()
            },
        );
        assert_eq!(tail, "partial\n");
        // Past 200 bytes the next write rotates (each record is ~70 bytes with its header):
        // the three records above and one more fill the first file, two go to the next.
        for _ in 0..3 {
            w.write("stdout", false, b"0123456789012345678901234567890")
                .await
                .expect("write");
        }
        assert!(dir.path().join("c_0.log.1").exists());
        let both = render(
            &[dir.path().join("c_0.log.1"), path.clone()],
            &LogOptions::default(),
        );
        assert_eq!(both.lines().count(), 5);
    }

    #[test]
    fn timestamps_have_fixed_width() {
        let t: jiff::Timestamp = "2026-11-22T09:30:01Z".parse().expect("ts");
        assert_eq!(format_timestamp(t), "2026-11-22T09:30:01.000000000Z");
    }
}
