//! What the engine asks its host to do, and the counters it keeps.
//!
//! The action set is the whole interface between the pure engine and a platform. A host
//! applies them with DMA-window copies, `UFFDIO_CONTINUE`, `MADV_DONTNEED` and
//! `UFFDIO_WRITEPROTECT`; a NIC with DMA into the host's window and an interrupt to the host
//! for the mapping changes. The engine updates its own state as it emits an action; it never
//! waits for a completion. What makes that safe is one ordering rule for the applier:
//!
//! **Actions on the same page take effect in the order they were emitted.** In particular a
//! `SendPage` reads the page only after every earlier `Invalidate`/`Downgrade` of that page
//! has taken effect (so a guest write cannot slip in after the copy is taken), and an
//! `InstallPage` maps the page only after earlier mapping changes of the page are done.
//! Applying all actions strictly in order satisfies the rule; a NIC may keep one queue per
//! page (or hold every send behind an outstanding host interrupt) instead.

use vima::wire::{Body, Message, PAGE_BYTES};

use super::{LogicalPage, NodeId, PageState};

/// One thing the host (or NIC) must do. `'a` borrows page contents from the message the
/// engine was handling; copy them out before the `push` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send this message (never one that carries page contents) to `msg.dst`.
    Send(Message<'static>),
    /// Read the page from the local DMA window and send it: see [`PageSend::message`].
    SendPage(PageSend),
    /// Map the page in the guest mapping as `state` (Shared: write-protected; Exclusive:
    /// writable). With `data`, first write it into the DMA window; without, the window
    /// already holds the right contents (an upgrade, or the home mapping its own memory).
    InstallPage {
        /// The page.
        page: LogicalPage,
        /// [`PageState::Shared`] or [`PageState::Exclusive`].
        state: PageState,
        /// New contents, or `None` to map what the window holds.
        data: Option<&'a [u8; PAGE_BYTES]>,
    },
    /// Write `data` into the DMA window without mapping it (the home receiving a writeback;
    /// its own guest mapping of the page stays Invalid).
    StorePage {
        /// The page.
        page: LogicalPage,
        /// New contents.
        data: &'a [u8; PAGE_BYTES],
    },
    /// Unmap the page from the guest mapping (it becomes Invalid). The DMA window keeps its
    /// contents: a later `SendPage` of this page reads them.
    Invalidate {
        /// The page.
        page: LogicalPage,
    },
    /// Write-protect the page (Exclusive -> Shared).
    Downgrade {
        /// The page.
        page: LogicalPage,
    },
    /// The fault of `vp` on `page` is resolved: let the VP run (it retries the access and
    /// may fault again if the page was taken away meanwhile).
    FaultDone {
        /// The page.
        page: LogicalPage,
        /// The VP.
        vp: u32,
    },
    /// Another node is about to write the page: wake VPs waiting for it to change
    /// (`SpinWait`).
    WakeWatchers {
        /// The page.
        page: LogicalPage,
    },
}

/// Where the engine puts its actions. Closures `FnMut(Action<'_>)` are sinks.
pub trait Actions {
    /// Takes one action, in order.
    fn push(&mut self, action: Action<'_>);
}

impl<F: FnMut(Action<'_>)> Actions for F {
    fn push(&mut self, action: Action<'_>) {
        self(action);
    }
}

/// Which page message a [`PageSend`] becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSendKind {
    /// `PageData` granting a Shared copy.
    Shared,
    /// `PageData` granting the Exclusive copy.
    Exclusive,
    /// `Writeback` to the home.
    Writeback,
    /// `Evict` of the Exclusive copy, to the home.
    Evict,
    /// `HomeMove` of a Shared entry (these sharers) with the page, to the new home.
    HomeMove {
        /// The sharers, bit `n` = node `n`.
        sharers: u16,
    },
}

/// A page message whose contents the applier reads from its DMA window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSend {
    /// Virtual server.
    pub vs_id: u16,
    /// This node.
    pub src: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// The page.
    pub page: LogicalPage,
    /// The requester's request id.
    pub request_id: u64,
    /// What to send.
    pub kind: PageSendKind,
}

impl PageSend {
    /// The message to send, carrying `data` (the page as the DMA window holds it now).
    pub fn message<'d>(&self, data: &'d [u8; PAGE_BYTES]) -> Message<'d> {
        let page = self.page.0;
        let body = match self.kind {
            PageSendKind::Shared => Body::PageData {
                page,
                exclusive: false,
                data,
            },
            PageSendKind::Exclusive => Body::PageData {
                page,
                exclusive: true,
                data,
            },
            PageSendKind::Writeback => Body::Writeback { page, data },
            PageSendKind::Evict => Body::Evict {
                page,
                data: Some(data),
            },
            PageSendKind::HomeMove { sharers } => Body::HomeMove {
                page,
                exclusive: false,
                owner: 0,
                sharers,
                data: Some(data),
            },
        };
        Message {
            vs_id: self.vs_id,
            src: self.src,
            dst: self.to,
            request_id: self.request_id,
            body,
        }
    }
}

/// Event counts (firmware keeps counters, not logs). All wrap at `u64::MAX` in theory only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Faults the host reported.
    pub faults: u64,
    /// Faults answered at once: the local copy already allowed the access.
    pub faults_resolved_locally: u64,
    /// Faults that joined a request already in flight for the page.
    pub faults_coalesced: u64,
    /// Read requests issued (to a remote home or to ourselves).
    pub read_requests: u64,
    /// Write requests issued, upgrades included.
    pub write_requests: u64,
    /// Write requests issued while holding a Shared copy.
    pub upgrade_requests: u64,
    /// Home: an upgrade arrived from a node that had lost its copy to a competing writer
    /// (it gets the data).
    pub upgrades_lost_copy: u64,
    /// Home: requests queued behind an operation in flight.
    pub requests_queued: u64,
    /// Home: requests refused for lack of queue room.
    pub nacks_sent: u64,
    /// Requests refused by a home and sent again.
    pub nacks_received: u64,
    /// Home: forwards sent to an owner.
    pub forwards_sent: u64,
    /// Forwards this node served as owner.
    pub forwards_served: u64,
    /// Home: invalidations sent to sharers (the home's own copy is not counted).
    pub invalidations_sent: u64,
    /// Invalidations received as a sharer.
    pub invalidations_received: u64,
    /// Page contents sent (PageData and Writeback).
    pub pages_sent: u64,
    /// Page contents received (PageData and Writeback).
    pub pages_received: u64,
    /// Home: writebacks received from downgraded owners.
    pub writebacks_received: u64,
    /// Copies this node gave up (`Evict` sent).
    pub evictions_sent: u64,
    /// Home: evictions received (whether or not the directory still counted the copy).
    pub evictions_received: u64,
    /// Forwards and invalidations that reached a copy while it was being evicted (served
    /// from the DMA window).
    pub evicting_copies_taken: u64,
    /// Directory entries handed over to a new home.
    pub homes_moved_out: u64,
    /// Directory entries taken over from an old home.
    pub homes_moved_in: u64,
    /// Messages refused because they did not fit the protocol.
    pub protocol_errors: u64,
}
