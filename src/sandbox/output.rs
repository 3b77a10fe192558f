//! Capped capture of one output stream: keeps the first and the last bytes of what a program
//! printed, counts what was cut in between, and renders it as text with a marker. Pure logic.

use std::collections::VecDeque;

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

#[cfg(test)]
mod tests {
    use super::*;

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
