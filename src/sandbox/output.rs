//! Capped capture of one output stream: keeps the first and the last bytes of what a program
//! printed, counts what was cut in between, and renders it as text with a marker; and [`Live`],
//! what watchers of a running job see (its last line, the end of each stream). Pure logic.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Bytes of each stream [`Live`] keeps for watchers of a long run.
pub const LIVE_TAIL_BYTES: usize = 4096;

/// What watchers of a running job see while it runs: the last complete line it printed
/// (progress notifications) and the last [`LIVE_TAIL_BYTES`] of each stream (long runs polled
/// with get_run). Never the end marker.
#[derive(Debug, Default)]
pub struct Live {
    last_line: Mutex<String>,
    tails: Mutex<[String; 2]>,
    /// The container the job runs in and its runner's end marker, once it has one: what a
    /// server that did not start the job needs to follow it to its end.
    container: Mutex<Option<(String, String)>>,
}

impl Live {
    /// Notes the container the job runs in and the end marker its runner was given.
    pub fn set_container(&self, id: &str, marker: &str) {
        *self
            .container
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((id.to_string(), marker.to_string()));
    }

    /// The container the job runs in and its end marker, once known.
    pub fn container(&self) -> Option<(String, String)> {
        self.container
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last complete non-empty line printed (on either stream), at most 200 characters.
    pub fn last_line(&self) -> String {
        self.last_line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The end of stdout and of stderr so far.
    pub fn tails(&self) -> (String, String) {
        let t = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        (t[0].clone(), t[1].clone())
    }

    /// Notes a chunk of stdout (`stream` 0) or stderr (1); `partial` holds the stream's
    /// unfinished line between chunks.
    pub fn note(&self, stream: usize, partial: &mut String, chunk: &[u8]) {
        let text = String::from_utf8_lossy(chunk);
        {
            let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
            let tail = &mut tails[stream.min(1)];
            tail.push_str(&text);
            if tail.len() > LIVE_TAIL_BYTES {
                let mut cut = tail.len() - LIVE_TAIL_BYTES;
                while !tail.is_char_boundary(cut) {
                    cut += 1;
                }
                tail.drain(..cut);
            }
        }
        partial.push_str(&text);
        let Some(end) = partial.rfind('\n') else {
            if partial.len() > LIVE_TAIL_BYTES {
                partial.clear();
            }
            return;
        };
        if let Some(line) = partial[..end]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
        {
            *self
                .last_line
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = line.chars().take(200).collect();
        }
        partial.drain(..=end);
    }
}

/// One stream's capture, holding at most `limit` bytes however much the program prints.
#[derive(Debug)]
pub struct CappedOutput {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

impl CappedOutput {
    /// Keeps up to `limit` bytes: the first half and the last half of the stream.
    pub fn new(limit: usize) -> Self {
        let head_cap = limit.div_ceil(2);
        CappedOutput {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: limit - head_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let take = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.tail_cap == 0 || bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Bytes the program wrote to this stream.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text (invalid UTF-8 replaced), with a marker where bytes were cut.
    pub fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        let cut = self.total - (self.head.len() + self.tail.len()) as u64;
        if cut > 0 {
            out.push_str(&format!(
                "\n[... {cut} bytes cut by mcp-code-executor: the output limit keeps the first and last {} bytes ...]\n",
                self.head_cap + self.tail_cap
            ));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

/// One stream of a runner that ends with `"\n<marker>:<status>\n"`: passes everything before
/// the marker to a [`CappedOutput`], recognises the marker even when split across chunks, and
/// drops whatever follows it (output of leftover background processes).
#[derive(Debug)]
pub struct MarkedStream {
    pub output: CappedOutput,
    pending: Vec<u8>,
    marker: Vec<u8>,
    status: Option<i64>,
}

/// Longest status text after the marker (":255\n" and some slack).
const STATUS_SLACK: usize = 8;

impl MarkedStream {
    /// `marker` is the random token the runner got in its header.
    pub fn new(limit: usize, marker: &str) -> Self {
        MarkedStream {
            output: CappedOutput::new(limit),
            pending: Vec::new(),
            marker: format!("\n{marker}:").into_bytes(),
            status: None,
        }
    }

    /// The exit status the runner reported, once its marker has arrived.
    pub fn status(&self) -> Option<i64> {
        self.status
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.status.is_some() {
            return;
        }
        self.pending.extend_from_slice(chunk);
        if let Some(at) = find(&self.pending, &self.marker) {
            let rest = &self.pending[at + self.marker.len()..];
            if let Some(end) = rest.iter().position(|b| *b == b'\n') {
                let status = std::str::from_utf8(&rest[..end])
                    .ok()
                    .and_then(|s| s.parse().ok());
                if let Some(status) = status {
                    self.output.push(&self.pending[..at]);
                    self.status = Some(status);
                    self.pending = Vec::new();
                    return;
                }
            } else if rest.len() <= STATUS_SLACK {
                // The status is still on its way: keep everything from the marker on.
                self.output.push(&self.pending[..at]);
                self.pending.drain(..at);
                return;
            }
        }
        // Keep only what could be the start of a marker.
        let keep = self.marker.len() + STATUS_SLACK;
        if self.pending.len() > keep {
            let flush = self.pending.len() - keep;
            self.output.push(&self.pending[..flush]);
            self.pending.drain(..flush);
        }
    }

    /// The stream ended: what was held back is output after all.
    pub fn finish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.output.push(&pending);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keeps_the_last_complete_line_and_the_end_of_each_stream() {
        let live = Live::default();
        let mut partial = String::new();
        for piece in ["step", " ", "1", "\n", "step", " 2"] {
            live.note(0, &mut partial, piece.as_bytes());
        }
        assert_eq!(live.last_line(), "step 1");
        live.note(0, &mut partial, b"\n\n");
        assert_eq!(live.last_line(), "step 2");
        let mut err_partial = String::new();
        live.note(1, &mut err_partial, "é".repeat(LIVE_TAIL_BYTES).as_bytes());
        let (out, err) = live.tails();
        assert_eq!(out, "step 1\nstep 2\n\n");
        assert!(err.len() <= LIVE_TAIL_BYTES && err.len() > LIVE_TAIL_BYTES - 4);
        assert!(err.chars().all(|c| c == 'é'));
    }

    #[test]
    fn marker_is_found_and_stripped() {
        let mut m = MarkedStream::new(100, "mk");
        m.push(b"hello\n\nmk:3\n");
        assert_eq!(m.status(), Some(3));
        m.finish();
        assert_eq!(m.output.render(), "hello\n");
    }

    #[test]
    fn marker_split_across_chunks_byte_by_byte() {
        let mut m = MarkedStream::new(1000, "mce-exit-abc");
        let data =
            b"line one\nline two\nmce-exit-ab not yet\n\nmce-exit-abc:0\ntrailing daemon output";
        for b in data {
            m.push(&[*b]);
        }
        assert_eq!(m.status(), Some(0));
        m.finish();
        assert_eq!(
            m.output.render(),
            "line one\nline two\nmce-exit-ab not yet\n"
        );
    }

    #[test]
    fn no_marker_keeps_everything() {
        let mut m = MarkedStream::new(1000, "mk");
        m.push(b"partial output without end\nmk");
        m.push(b":");
        assert_eq!(m.status(), None);
        m.finish();
        assert_eq!(m.output.render(), "partial output without end\nmk:");
    }

    #[test]
    fn a_fake_marker_without_status_is_output() {
        let mut m = MarkedStream::new(1000, "mk");
        m.push(b"x\nmk:abcdefghijklmnop\nrest");
        m.finish();
        assert_eq!(m.status(), None);
        assert_eq!(m.output.render(), "x\nmk:abcdefghijklmnop\nrest");
    }

    #[test]
    fn small_output_is_kept_whole() {
        let mut o = CappedOutput::new(100);
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.render(), "hello world");
        assert!(!o.truncated());
        assert_eq!(o.total(), 11);
    }

    #[test]
    fn exactly_the_limit_is_not_truncated() {
        let mut o = CappedOutput::new(10);
        o.push(b"0123456789");
        assert_eq!(o.render(), "0123456789");
        assert!(!o.truncated());
    }

    #[test]
    fn keeps_head_and_tail_in_many_pushes() {
        let mut o = CappedOutput::new(10);
        for i in 0..1000u32 {
            o.push(format!("{}", i % 10).as_bytes());
        }
        assert!(o.truncated());
        assert_eq!(o.total(), 1000);
        let r = o.render();
        assert!(r.starts_with("01234\n[... 990 bytes cut"), "{r}");
        assert!(r.ends_with("]\n56789"), "{r}");
    }

    #[test]
    fn one_huge_push() {
        let mut o = CappedOutput::new(6);
        let big: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        o.push(&big);
        let r = o.render();
        assert!(r.starts_with("abc\n"));
        assert!(r.ends_with(&String::from_utf8_lossy(&big[big.len() - 3..]).into_owned()));
        assert!(r.contains("999994 bytes cut"));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut o = CappedOutput::new(100);
        o.push(&[0x66, 0xff, 0xfe, 0x67]);
        assert_eq!(o.render(), "f\u{fffd}\u{fffd}g");
    }
}
