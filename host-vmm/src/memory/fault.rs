//! The fault thread: waits on the userfaultfd and on a stop eventfd, reads events in
//! batches, lets the [`super::pager::Pager`] answer them, and hands faults the local copy
//! cannot serve to a [`PageResolver`].
//!
//! One thread per node is enough: the handler's own work is a few microseconds per fault
//! and the batch read lets it coalesce. It blocks in `poll` on both fds, so stopping never
//! waits for a fault to arrive.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use log::{error, warn};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::pager::FetchRequest;
use super::pages::PageState;
use super::uffd::{sys, FaultEvent};
use super::{LogicalMemory, MemoryError};

/// Brings pages the local copy cannot serve (Invalid, or Shared on a write).
///
/// `fetch` runs on the fault thread and must not wait for the round trip: it posts the
/// request (to the fabric, the NIC ring) and returns. When the page's contents are in the
/// DMA window, whoever completes it calls [`LogicalMemory::complete_fetch`] with the state
/// the node now holds; that maps the page and resumes every thread waiting on it.
pub trait PageResolver: Send + Sync {
    /// Starts fetching `request.page`.
    fn fetch(&self, memory: &Arc<LogicalMemory>, request: FetchRequest);
}

/// The single-node resolver: this node owns every page, so the local contents are
/// authoritative and a "fetch" just makes the page Exclusive again. With all pages
/// Exclusive (the single-node case) it is never called.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalResolver;

impl PageResolver for LocalResolver {
    fn fetch(&self, memory: &Arc<LogicalMemory>, request: FetchRequest) {
        if let Err(err) = memory.complete_fetch(request.page, PageState::Exclusive) {
            error!("local fetch of page {}: {err}", request.page);
        }
    }
}

/// A running fault thread. Stop it with [`FaultHandler::stop`]; dropping it stops it too.
#[derive(Debug)]
pub struct FaultHandler {
    stop: EventFd,
    thread: Option<JoinHandle<Result<(), MemoryError>>>,
}

/// Messages read per `read(2)`: a burst of faults from many VPs is answered in one pass.
const BATCH: usize = 64;

impl FaultHandler {
    pub(super) fn spawn(
        memory: &Arc<LogicalMemory>,
        resolver: Arc<dyn PageResolver>,
    ) -> Result<Self, MemoryError> {
        if memory.handler_active.swap(true, Ordering::SeqCst) {
            return Err(MemoryError::HandlerRunning);
        }
        let stop = match EventFd::new(EFD_NONBLOCK) {
            Ok(stop) => stop,
            Err(source) => {
                memory.handler_active.store(false, Ordering::SeqCst);
                return Err(MemoryError::CreateStopEvent { source });
            }
        };
        let thread_stop = match stop.try_clone() {
            Ok(fd) => fd,
            Err(source) => {
                memory.handler_active.store(false, Ordering::SeqCst);
                return Err(MemoryError::CreateStopEvent { source });
            }
        };
        let thread_memory = Arc::clone(memory);
        let spawned = std::thread::Builder::new()
            .name("cvmm-fault".into())
            .spawn(move || {
                let result = run(&thread_memory, resolver.as_ref(), &thread_stop);
                thread_memory.handler_active.store(false, Ordering::SeqCst);
                if let Err(err) = &result {
                    error!("fault handler stopped: {err}");
                }
                result
            });
        match spawned {
            Ok(thread) => Ok(Self {
                stop,
                thread: Some(thread),
            }),
            Err(source) => {
                memory.handler_active.store(false, Ordering::SeqCst);
                Err(MemoryError::SpawnHandler { source })
            }
        }
    }

    /// Asks the thread to stop and waits for it. Returns the error that ended it early,
    /// if any. Threads still blocked in a fault stay blocked: stop the VPs first.
    pub fn stop(mut self) -> Result<(), MemoryError> {
        self.stop_and_join()
    }

    /// True while the thread runs (false after an error ended it).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn stop_and_join(&mut self) -> Result<(), MemoryError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // The counter cannot overflow from one write; a failure here would leave the
        // thread running, so report it.
        self.stop
            .write(1)
            .map_err(|source| MemoryError::SignalStop { source })?;
        thread.join().map_err(|_| MemoryError::HandlerPanicked)?
    }
}

impl Drop for FaultHandler {
    fn drop(&mut self) {
        if let Err(err) = self.stop_and_join() {
            warn!("fault handler: {err}");
        }
    }
}

fn run(
    memory: &Arc<LogicalMemory>,
    resolver: &dyn PageResolver,
    stop: &EventFd,
) -> Result<(), MemoryError> {
    let uffd = memory.uffd.as_fd().as_raw_fd();
    let mut messages = [sys::uffd_msg::default(); BATCH];
    let mut events = Vec::with_capacity(BATCH);
    let mut fetches = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: uffd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two initialized pollfds that outlives the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(MemoryError::Poll { source: err });
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(MemoryError::Poll {
                source: std::io::Error::other("userfaultfd reported an error or hang-up"),
            });
        }
        let count = memory
            .uffd
            .read_messages(&mut messages)
            .map_err(|source| MemoryError::ReadFaults { source })?;
        let read_at = Instant::now();
        events.clear();
        for message in &messages[..count] {
            match FaultEvent::from_msg(message) {
                Some(event) => events.push(event),
                None => {
                    warn!("unexpected userfaultfd event {:#x}", message.event);
                    memory.stats.count_error();
                }
            }
        }
        memory.pager().handle_batch(&events, read_at, &mut fetches);
        for request in fetches.drain(..) {
            resolver.fetch(memory, request);
        }
    }
}
