//! Pipes: a 64 KiB ring in logical memory per pipe, so its two ends work between threads
//! on any VPs of any nodes (the coherent memory carries the bytes). A reader with
//! nothing to read and a writer with no room sleep on the pipe's change counter, a
//! futex word of the kernel's own ([`super::syscalls::futex::wait_on`]): every change
//! (bytes in or out, an end closed) bumps it and wakes them.
//!
//! A signal ends a blocked read or write as on Linux: ERESTARTSYS (restarted after a
//! handler with SA_RESTART, EINTR otherwise) when nothing was moved yet, else the bytes
//! moved. A write with no reader left raises SIGPIPE on the writer and fails with EPIPE.
//!
//! Not yet: PIPE_BUF atomicity for concurrent writers (a write larger than the room left
//! may interleave with another).

use core::sync::atomic::{AtomicU32, Ordering};

use guest::linux_abi::errno::{EAGAIN, EMFILE, ENOMEM, EPIPE, ERESTARTSYS};
use vima::layout::PAGE_SIZE;

use super::syscalls::{futex, user, usize_of};
use crate::alloc;
use crate::interrupts::current_vp;
use crate::machine::kernel;
use crate::spinlock::SpinLock;
use crate::sync::PageAligned;

/// Bytes a pipe holds.
pub const PIPE_BYTES: u64 = 64 * 1024;
/// Most pipes at once.
pub const MAX_PIPES: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    used: bool,
    data: u64,
    head: u64,
    len: u64,
    readers: u32,
    writers: u32,
}

struct Pipe {
    ring: SpinLock<Ring>,
    /// Bumped at every change; readers and writers wait on it.
    changes: AtomicU32,
}

static PIPES: [PageAligned<Pipe>; MAX_PIPES] = [const {
    PageAligned(Pipe {
        ring: SpinLock::new(Ring {
            used: false,
            data: 0,
            head: 0,
            len: 0,
            readers: 0,
            writers: 0,
        }),
        changes: AtomicU32::new(0),
    })
}; MAX_PIPES];

fn pipe(index: usize) -> &'static Pipe {
    &PIPES[index % MAX_PIPES].0
}

fn changed(p: &Pipe) {
    p.changes.fetch_add(1, Ordering::SeqCst);
    futex::wake_on(p.changes.as_ptr() as u64);
}

/// Makes a pipe with one reader and one writer; returns its index.
pub fn create() -> Result<usize, i64> {
    let node = kernel().node_of(current_vp() as usize);
    for (index, slot) in PIPES.iter().enumerate() {
        let mut ring = slot.0.ring.lock();
        if ring.used {
            continue;
        }
        let data = alloc::alloc_pages(PIPE_BYTES / PAGE_SIZE, node).map_err(|_| ENOMEM)?;
        *ring = Ring {
            used: true,
            data,
            head: 0,
            len: 0,
            readers: 1,
            writers: 1,
        };
        return Ok(index);
    }
    Err(EMFILE)
}

/// One end of pipe `index` closed for good; the ring goes with the last one.
pub fn close_end(index: usize, write: bool) {
    let p = pipe(index);
    let freed = {
        let mut ring = p.ring.lock();
        if write {
            ring.writers = ring.writers.saturating_sub(1);
        } else {
            ring.readers = ring.readers.saturating_sub(1);
        }
        if ring.readers == 0 && ring.writers == 0 && ring.used {
            let data = ring.data;
            *ring = Ring::default();
            Some(data)
        } else {
            None
        }
    };
    if let Some(data) = freed {
        let _ = alloc::free_pages(data, PIPE_BYTES / PAGE_SIZE);
    }
    changed(p);
}

/// Reads up to `count` bytes into the program's `buf`; waits for bytes (or for the
/// last writer to go: 0) unless `nonblocking` (EAGAIN).
pub fn read(index: usize, buf: u64, count: u64, nonblocking: bool) -> Result<u64, i64> {
    user::check(buf, count)?;
    if count == 0 {
        return Ok(0);
    }
    let p = pipe(index);
    loop {
        let seen = p.changes.load(Ordering::SeqCst);
        {
            let mut ring = p.ring.lock();
            if ring.len > 0 {
                let n = count.min(ring.len);
                let mut done = 0;
                while done < n {
                    let at = (ring.head + done) % PIPE_BYTES;
                    let piece = (n - done).min(PIPE_BYTES - at);
                    // SAFETY: [data + at, + piece) lies in the ring's own pages.
                    let bytes = unsafe {
                        core::slice::from_raw_parts((ring.data + at) as *const u8, usize_of(piece))
                    };
                    user::write(buf + done, bytes)?;
                    done += piece;
                }
                ring.head = (ring.head + n) % PIPE_BYTES;
                ring.len -= n;
                drop(ring);
                changed(p);
                return Ok(n);
            }
            if ring.writers == 0 {
                return Ok(0);
            }
        }
        if nonblocking {
            return Err(EAGAIN);
        }
        if !futex::wait_on(p.changes.as_ptr() as u64, seen) {
            return Err(ERESTARTSYS);
        }
    }
}

/// Writes `count` bytes of the program's `buf`, waiting for room unless `nonblocking`
/// (then as much as fits, or EAGAIN); EPIPE once no reader is left.
pub fn write(index: usize, buf: u64, count: u64, nonblocking: bool) -> Result<u64, i64> {
    user::check(buf, count)?;
    let p = pipe(index);
    let mut done = 0;
    while done < count {
        let seen = p.changes.load(Ordering::SeqCst);
        let wrote = {
            let mut ring = p.ring.lock();
            if ring.readers == 0 {
                drop(ring);
                super::syscalls::signals::raise_later(super::syscalls::signals::SIGPIPE);
                return if done > 0 { Ok(done) } else { Err(EPIPE) };
            }
            let room = PIPE_BYTES - ring.len;
            let n = room.min(count - done);
            let mut put = 0;
            while put < n {
                let at = (ring.head + ring.len + put) % PIPE_BYTES;
                let piece = (n - put).min(PIPE_BYTES - at);
                // SAFETY: [data + at, + piece) lies in the ring's own pages.
                let dest = unsafe {
                    core::slice::from_raw_parts_mut((ring.data + at) as *mut u8, usize_of(piece))
                };
                user::read(buf + done + put, dest)?;
                put += piece;
            }
            ring.len += n;
            n
        };
        if wrote > 0 {
            done += wrote;
            changed(p);
            continue;
        }
        if nonblocking {
            return if done > 0 { Ok(done) } else { Err(EAGAIN) };
        }
        if !futex::wait_on(p.changes.as_ptr() as u64, seen) {
            return if done > 0 { Ok(done) } else { Err(ERESTARTSYS) };
        }
    }
    Ok(done)
}

/// What poll sees: (readable, writable, hung up).
pub fn readiness(index: usize, write: bool) -> (bool, bool, bool) {
    let ring = pipe(index).ring.lock();
    if write {
        (
            false,
            ring.len < PIPE_BYTES && ring.readers > 0,
            ring.readers == 0,
        )
    } else {
        (ring.len > 0, false, ring.writers == 0)
    }
}
