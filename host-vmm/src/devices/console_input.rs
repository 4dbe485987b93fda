//! Console input: cvmm's standard input as the Linux program's (`StreamRead`).
//!
//! A VP must never block in `read(0)`: the VMM could not stop it when the server ends
//! (by `exit_group` on another VP, or another node). So one reader thread, started by
//! the first `StreamRead`, reads standard input into a bounded buffer, and `StreamRead`
//! only takes what is there: bytes, end of file, or "nothing yet" (the guest's thread
//! then sleeps in the guest scheduler and asks again). The reader is left blocked in
//! `read` when the server ends; the process exits around it. A full buffer stops the
//! reader (back-pressure on the pipe), so a large input costs at most [`BUFFER_BYTES`].

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, Once};

/// Most bytes read ahead of the program.
pub const BUFFER_BYTES: usize = 1 << 20;
/// One `read` of standard input.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a `StreamRead` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Some bytes (at least one).
    Bytes(Vec<u8>),
    /// Standard input ended (or failed: logged once).
    EndOfFile,
    /// Nothing has arrived yet.
    NotYet,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: VecDeque<u8>,
    ended: bool,
}

#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    room: Condvar,
}

/// Standard input, read ahead by a thread of its own.
#[derive(Debug)]
pub struct ConsoleInput {
    shared: Arc<Shared>,
    started: Once,
}

impl Default for ConsoleInput {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            started: Once::new(),
        }
    }
}

impl ConsoleInput {
    /// Takes up to `max` bytes of what has arrived.
    pub fn take(&self, max: usize) -> Input {
        self.started
            .call_once(|| self.start_reader(std::io::stdin()));
        self.take_ready(max)
    }

    /// True when a read would not have to wait: bytes have arrived or stdin ended.
    pub fn ready(&self) -> bool {
        self.started
            .call_once(|| self.start_reader(std::io::stdin()));
        let buffer = self.shared.buffer.lock().expect("console input lock");
        !buffer.bytes.is_empty() || buffer.ended
    }

    fn take_ready(&self, max: usize) -> Input {
        let mut buffer = self.shared.buffer.lock().expect("console input lock");
        if buffer.bytes.is_empty() {
            return if buffer.ended {
                Input::EndOfFile
            } else {
                Input::NotYet
            };
        }
        let n = max.min(buffer.bytes.len());
        let bytes: Vec<u8> = buffer.bytes.drain(..n).collect();
        self.shared.room.notify_one();
        Input::Bytes(bytes)
    }

    fn start_reader(&self, source: impl Read + Send + 'static) {
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("console-input".into())
            .spawn(move || read_all(source, &shared));
        if let Err(e) = spawned {
            log::error!("cannot start the console input thread: {e}; stdin reads as empty");
            self.shared.buffer.lock().expect("console input lock").ended = true;
        }
    }
}

fn read_all(mut source: impl Read, shared: &Shared) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        {
            let mut buffer = shared.buffer.lock().expect("console input lock");
            while buffer.bytes.len() >= BUFFER_BYTES {
                buffer = shared.room.wait(buffer).expect("console input lock");
            }
        }
        let n = match source.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("reading standard input failed: {e}; the program sees its end");
                0
            }
        };
        let mut buffer = shared.buffer.lock().expect("console input lock");
        if n == 0 {
            buffer.ended = true;
            return;
        }
        buffer.bytes.extend(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn drain(input: &ConsoleInput) -> Vec<u8> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match input.take_ready(1000) {
                Input::Bytes(b) => got.extend(b),
                Input::EndOfFile => return got,
                Input::NotYet => {
                    assert!(Instant::now() < deadline, "input never ended");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    #[test]
    fn every_byte_arrives_in_order_then_the_end() {
        // More than the buffer holds, so the reader has to wait for room.
        let data: Vec<u8> = (0..BUFFER_BYTES * 2 + 12345)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let input = ConsoleInput::default();
        input.start_reader(std::io::Cursor::new(data.clone()));
        assert_eq!(drain(&input), data);
        assert_eq!(input.take_ready(10), Input::EndOfFile);
    }

    #[test]
    fn nothing_yet_is_not_the_end() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let input = ConsoleInput::default();
        input.start_reader(reader);
        assert_eq!(input.take_ready(10), Input::NotYet);
        std::io::Write::write_all(&mut writer, b"late").unwrap();
        drop(writer);
        assert_eq!(drain(&input), b"late");
    }
}
