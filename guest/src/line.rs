//! Console line buffering. The kernel formats into one [`LineBuffer`] per VP and hands
//! whole lines to the `ConsoleWrite` call, so a line costs one exit rather than one per
//! formatted piece, and lines of different VPs never interleave mid-line.

/// Bytes collected until a newline, handed to a sink one line at a time. A line longer
/// than `N` is handed over in pieces of `N` bytes (the VMM joins them, it buffers per VP
/// too).
#[derive(Debug)]
pub struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Bytes waiting for their newline.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends `data`, calling `sink` with each completed line (newline included) and with
    /// the buffer whenever it fills up.
    pub fn push(&mut self, mut data: &[u8], sink: &mut impl FnMut(&[u8])) {
        while let Some((&byte, rest)) = data.split_first() {
            data = rest;
            if N == 0 {
                sink(&[byte]);
                continue;
            }
            self.bytes[self.len] = byte;
            self.len += 1;
            if byte == b'\n' || self.len == N {
                self.flush(sink);
            }
        }
    }

    /// Hands whatever is buffered to `sink`, even without a newline.
    pub fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.bytes[..self.len]);
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<const N: usize>(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buffer = LineBuffer::<N>::new();
        let mut out = Vec::new();
        for piece in pieces {
            buffer.push(piece, &mut |line| out.push(line.to_vec()));
        }
        (out, buffer.pending().to_vec())
    }

    #[test]
    fn lines_are_handed_over_whole() {
        let (lines, rest) = collect::<64>(&[b"hello ", b"from vp ", b"3\nnext", b" line\nta"]);
        assert_eq!(
            lines,
            vec![b"hello from vp 3\n".to_vec(), b"next line\n".to_vec()]
        );
        assert_eq!(rest, b"ta");
    }

    #[test]
    fn long_lines_are_split_at_capacity() {
        let (lines, rest) = collect::<4>(&[b"abcdefghij\n"]);
        assert_eq!(
            lines,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"ij\n".to_vec()]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn flush_hands_over_a_partial_line() {
        let mut buffer = LineBuffer::<16>::new();
        let mut out = Vec::new();
        buffer.push(b"abc", &mut |line| out.push(line.to_vec()));
        assert!(out.is_empty());
        buffer.flush(&mut |line| out.push(line.to_vec()));
        buffer.flush(&mut |line| out.push(line.to_vec()));
        assert_eq!(out, vec![b"abc".to_vec()]);
    }
}
