//! The console: `print!`/`println!` format into this VP's line buffer, and every full line
//! goes out with one `ConsoleWrite` call. Lines of different VPs never mix because each
//! VP has its own buffer (and the VMM keeps one per VP too).
//!
//! Each VP touches only its own buffer, with interrupts held back (handlers do not print,
//! but masking makes that a non-issue). The buffers sit on pages of their own, away from
//! data that VPs share.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};

use guest::line::LineBuffer;
use vima::layout::MAX_VPS;

use crate::interrupts::{current_vp, without_interrupts};
use crate::sync::PageAligned;
use crate::vima_calls;

/// Bytes per VP line buffer; longer lines go out in pieces.
const LINE_BYTES: usize = 256;

struct ConsoleBuffers([UnsafeCell<LineBuffer<LINE_BYTES>>; MAX_VPS]);

// SAFETY: VP `v` only ever touches buffer `v` (see `with_line`), with interrupts masked,
// so no buffer is accessed from two places at once.
unsafe impl Sync for ConsoleBuffers {}

static BUFFERS: PageAligned<ConsoleBuffers> = PageAligned(ConsoleBuffers(
    [const { UnsafeCell::new(LineBuffer::new()) }; MAX_VPS],
));

fn with_line<R>(f: impl FnOnce(&mut LineBuffer<LINE_BYTES>) -> R) -> R {
    without_interrupts(|| {
        let vp = current_vp() as usize % MAX_VPS;
        // SAFETY: only this VP uses buffer `vp` (the VMM gives every VP its own id), and
        // with interrupts masked nothing else on this VP runs until `f` returns.
        let line = unsafe { &mut *BUFFERS.0 .0[vp].get() };
        f(line)
    })
}

fn send(line: &[u8]) {
    // Nowhere to report a console failure; the line is lost.
    let _ = vima_calls::console_write(line);
}

struct LineWriter<'a>(&'a mut LineBuffer<LINE_BYTES>);

impl Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s.as_bytes(), &mut send);
        Ok(())
    }
}

/// Formats `args` into this VP's line buffer; full lines are written out.
pub fn print(args: fmt::Arguments<'_>) {
    with_line(|line| {
        let _ = LineWriter(line).write_fmt(args);
    });
}

/// Writes out whatever this VP has buffered, even without a newline.
pub fn flush() {
    with_line(|line| line.flush(&mut send));
}

/// Prints to the console.
#[allow(unused_macros)] // The console API; the workloads print whole lines.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!($($arg)*))
    };
}

/// Prints a line to the console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
