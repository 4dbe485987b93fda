//! The console (VCON): `ConsoleWrite` bytes, printed a whole line at a time per VP so lines
//! of different VPs never interleave.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

/// Longest line kept before it is printed without its end.
const MAX_LINE: usize = 4096;

/// Where finished lines go.
pub trait ConsoleSink: Send + Sync + std::fmt::Debug {
    /// Prints one line (without its newline) written by `vp` on `node`.
    fn line(&self, vp: u32, node: u32, line: &str);
}

/// Prints lines on standard output, optionally tagged with the node.
#[derive(Debug)]
pub struct StdoutSink {
    /// Prefix each line with `[nN] `.
    pub tag_node: bool,
}

impl ConsoleSink for StdoutSink {
    fn line(&self, _vp: u32, node: u32, line: &str) {
        let mut out = std::io::stdout().lock();
        let result = if self.tag_node {
            writeln!(out, "[n{node}] {line}")
        } else {
            writeln!(out, "{line}")
        };
        // A closed stdout must not take the VMM down; the line is also in the log ring.
        let _ = result.and_then(|()| out.flush());
    }
}

/// The console device of one node.
#[derive(Debug)]
pub struct Console {
    partial: Mutex<HashMap<u32, Vec<u8>>>,
    sink: Box<dyn ConsoleSink>,
    lines: Mutex<Vec<String>>,
}

impl Console {
    /// A console printing to `sink`.
    pub fn new(sink: Box<dyn ConsoleSink>) -> Self {
        Console {
            partial: Mutex::new(HashMap::new()),
            sink,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Appends bytes written by `vp`; returns the lines they complete (the caller prints
    /// them with [`Console::print_line`] or sends them to the console's node).
    pub fn write(&self, vp: u32, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        let mut partial = self.partial.lock().expect("console lock");
        let buf = partial.entry(vp).or_default();
        for &b in bytes {
            if b == b'\n' || buf.len() >= MAX_LINE {
                done.push(String::from_utf8_lossy(buf).into_owned());
                buf.clear();
                if b == b'\n' {
                    continue;
                }
            }
            buf.push(b);
        }
        done
    }

    /// Prints one complete line of `vp` on `node`.
    pub fn print_line(&self, vp: u32, node: u32, line: &str) {
        self.sink.line(vp, node, line);
        self.lines
            .lock()
            .expect("console lock")
            .push(line.to_string());
    }

    /// Prints what is left of unfinished lines (at exit).
    pub fn flush(&self, node: u32) {
        let mut partial = self.partial.lock().expect("console lock");
        for (vp, buf) in partial.iter_mut() {
            if !buf.is_empty() {
                let line = String::from_utf8_lossy(buf).into_owned();
                self.sink.line(*vp, node, &line);
                buf.clear();
            }
        }
    }

    /// Every complete line so far (for tests and the exit summary).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("console lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug, Default)]
    struct Collect(Arc<Mutex<Vec<(u32, String)>>>);
    impl ConsoleSink for Collect {
        fn line(&self, vp: u32, _node: u32, line: &str) {
            self.0.lock().unwrap().push((vp, line.to_string()));
        }
    }

    #[test]
    fn lines_of_two_vps_do_not_interleave() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let console = Console::new(Box::new(Collect(seen.clone())));
        let writes: [(u32, &[u8]); 4] = [
            (0, b"hello "),
            (1, b"other\nsecond "),
            (0, b"world\n"),
            (1, b"line\n"),
        ];
        for (vp, bytes) in writes {
            for line in console.write(vp, bytes) {
                console.print_line(vp, 0, &line);
            }
        }
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (1, "other".to_string()),
                (0, "hello world".to_string()),
                (1, "second line".to_string())
            ]
        );
    }

    #[test]
    fn overlong_lines_are_cut() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let console = Console::new(Box::new(Collect(seen.clone())));
        for line in console.write(0, &vec![b'x'; MAX_LINE + 10]) {
            console.print_line(0, 0, &line);
        }
        console.flush(0);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert_eq!(got[1].1.len(), 10);
    }
}
