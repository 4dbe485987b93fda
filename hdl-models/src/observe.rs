//! What a NIC does for each engine action, in a form both the engine and the RTL can be
//! reduced to, so the differential test compares them value for value.
//!
//! The engine's [`Action`]s say *what* must happen; the pipeline's action records say it
//! with the NIC's means: a wire message (its exact 32-byte header), a DMA request into the
//! DMA window, an MSI-X vector. [`observe_engine`] turns an engine action into what a NIC
//! must do for it (using the reference [`SteeringModel`] for vectors), and with feature
//! `hdl-sim`, `observe_rtl` reads the same from an `RtlAction`. Equal [`Observed`]
//! values mean the RTL encoded the same message, asked for the same DMA and raised the
//! same interrupt.

use nic_firmware::engine::{Action, EngineError, PageState};
use vima::wire::{encode, Body, MAX_MESSAGE_BYTES, PAGE_BYTES};

use crate::steering::SteeringModel;

/// A NIC-level effect of one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A message goes on the wire.
    Transmit {
        /// Its header, as on the wire.
        header: [u8; 32],
        /// The forward body (ForwardRead/ForwardWrite only).
        forward_body: Option<[u8; 8]>,
        /// The page is read from this host address first (PageData, Writeback).
        dma_read: Option<u64>,
    },
    /// A page is installed and mapped.
    Install {
        /// The page.
        page: u64,
        /// Its new state.
        state: PageState,
        /// The received contents are written to this host address first.
        dma_write: Option<u64>,
        /// The interrupt raised for the mapping change.
        vector: Option<u8>,
    },
    /// Received contents are written to host memory, no mapping.
    Store {
        /// The page.
        page: u64,
        /// Host address written.
        dma_write: Option<u64>,
    },
    /// The host unmaps the page.
    Unmap {
        /// The page.
        page: u64,
        /// Interrupt raised.
        vector: Option<u8>,
    },
    /// The host write-protects the page.
    Downgrade {
        /// The page.
        page: u64,
        /// Interrupt raised.
        vector: Option<u8>,
    },
    /// The host wakes the page's watchers.
    Wake {
        /// The page.
        page: u64,
        /// Interrupt raised.
        vector: Option<u8>,
    },
    /// A VP's fault is resolved.
    FaultDone {
        /// The page.
        page: u64,
        /// The VP.
        vp: u32,
        /// The completion interrupt, steered to the VP's thread.
        vector: Option<u8>,
    },
    /// Something the engine never produces (a malformed RTL record), with its reason.
    Malformed(&'static str),
}

/// Where the DMA window is and which vector mapping changes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicView {
    /// Host address of logical page 0 in the DMA window.
    pub window_base: u64,
    /// Vector of mapping-change interrupts.
    pub map_vector: u8,
}

impl NicView {
    /// The DMA address of a page.
    pub fn page_address(&self, page: u64) -> u64 {
        self.window_base
            .wrapping_add(page.wrapping_mul(PAGE_BYTES as u64))
    }
}

const ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

fn header_of(msg: &vima::wire::Message<'_>) -> Result<([u8; 32], Option<[u8; 8]>), &'static str> {
    let mut buf = [0u8; MAX_MESSAGE_BYTES];
    encode(msg, &mut buf).map_err(|_| "the engine produced a message that does not encode")?;
    let mut header = [0u8; 32];
    header.copy_from_slice(&buf[..32]);
    let forward = matches!(
        msg.body,
        Body::ForwardRead { .. } | Body::ForwardWrite { .. }
    );
    let body = forward.then(|| {
        let mut body = [0u8; 8];
        body.copy_from_slice(&buf[32..40]);
        body
    });
    Ok((header, body))
}

/// What a NIC does for engine action `action`.
pub fn observe_engine(action: &Action<'_>, view: &NicView, steering: &SteeringModel) -> Observed {
    let map = Some(view.map_vector);
    match *action {
        Action::Send(msg) => match header_of(&msg) {
            Ok((header, forward_body)) => Observed::Transmit {
                header,
                forward_body,
                dma_read: None,
            },
            Err(why) => Observed::Malformed(why),
        },
        Action::SendPage(send) => match header_of(&send.message(&ZERO_PAGE)) {
            Ok((header, _)) => Observed::Transmit {
                header,
                forward_body: None,
                dma_read: Some(view.page_address(send.page.0)),
            },
            Err(why) => Observed::Malformed(why),
        },
        Action::InstallPage { page, state, data } => Observed::Install {
            page: page.0,
            state,
            dma_write: data.map(|_| view.page_address(page.0)),
            vector: map,
        },
        Action::StorePage { page, .. } => Observed::Store {
            page: page.0,
            dma_write: Some(view.page_address(page.0)),
        },
        Action::Invalidate { page } => Observed::Unmap {
            page: page.0,
            vector: map,
        },
        Action::Downgrade { page } => Observed::Downgrade {
            page: page.0,
            vector: map,
        },
        Action::WakeWatchers { page } => Observed::Wake {
            page: page.0,
            vector: map,
        },
        Action::FaultDone { page, vp } => Observed::FaultDone {
            page: page.0,
            vp,
            vector: Some(steering.vector_for(vp)),
        },
    }
}

/// The error code of an engine error, as the RTL reports it in its `A_END` record
/// (`E_*` in `rtl/cv_defs.vh`). Configuration errors never reach the RTL: `u8::MAX`.
pub fn error_code(error: &EngineError) -> u8 {
    match error {
        EngineError::WrongVirtualServer { .. } => 1,
        EngineError::WrongDestination { .. } => 2,
        EngineError::BadSource { .. } => 3,
        EngineError::NotCoherenceMessage { .. } => 4,
        EngineError::NotCoherent { .. } => 5,
        EngineError::UnknownPage { .. } => 6,
        EngineError::NotHome { .. } => 7,
        EngineError::NotFromHome { .. } => 8,
        EngineError::UnexpectedMessage { .. } => 9,
        EngineError::BadVp { .. } => 10,
        EngineError::PendingFull => 11,
        EngineError::StorageTooSmall => 12,
        // Eviction and handoff are started by the host, not by a message: the RTL has no
        // such input.
        EngineError::BadNodeConfig
        | EngineError::BadHomeRange
        | EngineError::EvictAtHome { .. }
        | EngineError::HandoffUnderWay => u8::MAX,
    }
}

/// The error code of a wire decode error, as `cv_parser` reports it (`E_W_*`).
pub fn wire_error_code(error: &vima::wire::WireError) -> u8 {
    use vima::wire::WireError;
    match error {
        WireError::Truncated => 0x11,
        WireError::BadMagic => 0x12,
        WireError::BadVersion => 0x13,
        WireError::UnknownKind => 0x14,
        WireError::BadLength => 0x15,
        WireError::BadFlags => 0x16,
        WireError::BadReserved => 0x17,
        WireError::BadNode => 0x18,
        WireError::BadPage => 0x19,
        WireError::BadVp => 0x1a,
        WireError::BadVector => 0x1b,
        WireError::BufferTooSmall => u8::MAX,
    }
}

#[cfg(feature = "hdl-sim")]
mod rtl_side {
    use super::{NicView, Observed};
    use crate::rtl::{RtlAction, RtlActionKind};
    use vima::wire::MessageKind;

    /// What the RTL pipeline did for one of its action records.
    pub fn observe_rtl(action: &RtlAction, view: &NicView) -> Observed {
        let page = action.page;
        let dma_write = |a: &RtlAction| match a.dma {
            Some((true, addr, 4096)) => Ok(Some(addr)),
            None => Ok(None),
            Some(_) => Err(Observed::Malformed("DMA request of the wrong kind or size")),
        };
        match action.kind {
            RtlActionKind::Send | RtlActionKind::SendPage => {
                let Some((header, body)) = action.transmit else {
                    return Observed::Malformed("send without a wire message");
                };
                let forward = matches!(
                    MessageKind::from_raw(header[3]),
                    Some(MessageKind::ForwardRead | MessageKind::ForwardWrite)
                );
                let dma_read = match (action.kind, action.dma) {
                    (RtlActionKind::Send, None) => None,
                    (RtlActionKind::SendPage, Some((false, addr, 4096))) => Some(addr),
                    _ => return Observed::Malformed("page send without its DMA read"),
                };
                let _ = view;
                Observed::Transmit {
                    header,
                    forward_body: forward.then_some(body),
                    dma_read,
                }
            }
            RtlActionKind::Install => match dma_write(action) {
                Ok(dma_write) if dma_write.is_some() == action.with_data => Observed::Install {
                    page,
                    state: action.state,
                    dma_write,
                    vector: action.vector,
                },
                Ok(_) => Observed::Malformed("install whose DMA write does not match its data"),
                Err(bad) => bad,
            },
            RtlActionKind::Store => match dma_write(action) {
                Ok(dma_write) => Observed::Store { page, dma_write },
                Err(bad) => bad,
            },
            RtlActionKind::Invalidate => Observed::Unmap {
                page,
                vector: action.vector,
            },
            RtlActionKind::Downgrade => Observed::Downgrade {
                page,
                vector: action.vector,
            },
            RtlActionKind::Wake => Observed::Wake {
                page,
                vector: action.vector,
            },
            RtlActionKind::FaultDone => Observed::FaultDone {
                page,
                vp: action.vp,
                vector: action.vector,
            },
            RtlActionKind::End | RtlActionKind::Unknown(_) => {
                Observed::Malformed("unknown action kind")
            }
        }
    }
}

#[cfg(feature = "hdl-sim")]
pub use rtl_side::observe_rtl;

#[cfg(test)]
mod tests {
    use super::*;
    use nic_firmware::engine::{LogicalPage, PageSend, PageSendKind};
    use vima::wire::Message;

    fn view() -> NicView {
        NicView {
            window_base: 0x1_0000_0000,
            map_vector: 0,
        }
    }

    #[test]
    fn a_page_send_reads_the_window_and_carries_the_header() {
        let send = PageSend {
            vs_id: 7,
            src: 1,
            to: 2,
            page: LogicalPage(0x203),
            request_id: 9,
            kind: PageSendKind::Exclusive,
        };
        let seen = observe_engine(&Action::SendPage(send), &view(), &SteeringModel::new(4, 0));
        let Observed::Transmit {
            header, dma_read, ..
        } = seen
        else {
            panic!("not a transmit: {seen:?}");
        };
        // Computed by hand: 0x1_0000_0000 + 0x203 * 4096.
        assert_eq!(dma_read, Some(0x1_0020_3000));
        assert_eq!(&header[..8], &[0x43, 0x56, 1, 0x07, 7, 0, 1, 0]);
        assert_eq!(&header[8..16], &[1, 0, 2, 0, 0, 0x10, 0, 0]);
    }

    #[test]
    fn forwards_keep_their_body() {
        let msg = Message {
            vs_id: 7,
            src: 0,
            dst: 1,
            request_id: 3,
            body: Body::ForwardRead {
                page: 0x200,
                requester: 2,
            },
        };
        let seen = observe_engine(&Action::Send(msg), &view(), &SteeringModel::new(4, 0));
        assert!(matches!(
            seen,
            Observed::Transmit {
                forward_body: Some([2, 0, 0, 0, 0, 0, 0, 0]),
                dma_read: None,
                ..
            }
        ));
    }

    #[test]
    fn error_codes_are_distinct() {
        let errors = [
            EngineError::WrongVirtualServer { vs_id: 1 },
            EngineError::WrongDestination { dst: 1 },
            EngineError::BadSource { node: 1 },
            EngineError::NotCoherenceMessage {
                kind: vima::wire::MessageKind::Ipi,
            },
            EngineError::NotCoherent { page: 1 },
            EngineError::UnknownPage { page: 1 },
            EngineError::NotHome { page: 1 },
            EngineError::NotFromHome { page: 1, src: 1 },
            EngineError::UnexpectedMessage {
                kind: vima::wire::MessageKind::Nack,
                page: 1,
                src: 1,
            },
            EngineError::BadVp { vp: 1 },
            EngineError::PendingFull,
            EngineError::StorageTooSmall,
        ];
        let codes: Vec<u8> = errors.iter().map(error_code).collect();
        assert_eq!(codes, (1..=12).collect::<Vec<u8>>());
    }
}
