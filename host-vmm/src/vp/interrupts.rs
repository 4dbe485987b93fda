//! Interrupt delivery into the guest's virtual IDT and the return from a handler.
//!
//! The guest masks interrupts by writing its `VpShared.mask` word: no exit. The VMM reads
//! that word (in the per-node region, so always local) before delivering, and only ever
//! delivers on the VP thread between two KVM_RUNs, so the frame push and the register
//! change are one step as far as the guest can tell. The frame layout and entry state are
//! ABI, documented in `vima::interrupt`.

use kvm_bindings::kvm_regs;
use vima::call::UncheckedRange;
use vima::interrupt::{frame_address, InterruptFrame, VP_SHARED_MASK_OFFSET};
use vima::layout::vp_shared_addr;
use vima::Status;

use super::calls::VpLocal;
use super::VpControl;
use crate::boot::cpu::{RFLAGS_BASE, RFLAGS_GUEST_MASK};
use crate::server::VirtualServer;

const FRAME_BYTES: u64 = std::mem::size_of::<InterruptFrame>() as u64;

/// Why an interrupt could not be delivered; the VP cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The interrupted stack pointer leaves no room for a frame inside logical memory.
    #[error("Interrupt frame for vector {vector} at {frame:#x} is outside logical memory (rsp {rsp:#x})")]
    FrameOutside {
        /// The vector.
        vector: u8,
        /// Where the frame would go.
        frame: u64,
        /// The interrupted stack pointer.
        rsp: u64,
    },
}

fn mask_range(server: &VirtualServer, vp: u32) -> vima::call::LogicalRange {
    UncheckedRange::new(vp_shared_addr(vp) + VP_SHARED_MASK_OFFSET, 8)
        .check(server.logical_bytes, 8)
        .expect("the per-node region is inside logical memory")
}

/// Delivers the lowest pending vector if the VP has interrupts unmasked and an IDT.
/// Returns true when `regs` were changed (the caller writes them back).
pub fn deliver_pending(
    server: &VirtualServer,
    vp: &VpControl,
    local: &VpLocal,
    regs: &mut kvm_regs,
) -> Result<bool, DeliveryError> {
    if !local.idt_registered {
        return Ok(false);
    }
    let mask_word = server
        .read_guest_u64(mask_range(server, vp.id))
        .unwrap_or(1);
    // The mask is the low 32 bits; the next 32 are the VP id.
    if mask_word & 0xffff_ffff != 0 {
        return Ok(false);
    }
    let vector = {
        let mut pending = vp.pending.lock().expect("pending lock");
        loop {
            if *pending == 0 {
                return Ok(false);
            }
            let v = pending.trailing_zeros();
            *pending &= !(1u64 << v);
            let vector = u8::try_from(v).expect("a u64 has 64 bits");
            if local.idt[usize::from(vector)] != 0 {
                server.mirror_pending(vp.id, *pending);
                break vector;
            }
            server.stats.count_interrupt_dropped();
        }
    };
    let frame_addr = frame_address(regs.rsp);
    let range = UncheckedRange::new(frame_addr, FRAME_BYTES)
        .check(server.logical_bytes, 16)
        .map_err(|_| DeliveryError::FrameOutside {
            vector,
            frame: frame_addr,
            rsp: regs.rsp,
        })?;
    let frame = InterruptFrame {
        rip: regs.rip,
        rsp: regs.rsp,
        rflags: regs.rflags,
        rax: regs.rax,
        rdi: regs.rdi,
        rsi: regs.rsi,
        rdx: regs.rdx,
        vector: u64::from(vector),
        mask_before: mask_word & 0xffff_ffff,
        reserved: 0,
    };
    server
        .write_guest(range, bytemuck::bytes_of(&frame))
        .map_err(|_| DeliveryError::FrameOutside {
            vector,
            frame: frame_addr,
            rsp: regs.rsp,
        })?;
    server.write_mask(vp.id, 1);
    regs.rip = local.idt[usize::from(vector)];
    regs.rsp = frame_addr;
    regs.rdi = frame_addr;
    regs.rsi = u64::from(vector);
    // A handler starts with DF clear (System V) and no trap flag.
    regs.rflags = RFLAGS_BASE;
    server.stats.count_interrupt_delivered();
    Ok(true)
}

/// `IntrReturn(frame)`: restores the interrupted state from the frame.
pub fn return_from_interrupt(
    server: &VirtualServer,
    vp: &VpControl,
    frame_addr: u64,
    regs: &mut kvm_regs,
) -> Result<(), Status> {
    let range = UncheckedRange::new(frame_addr, FRAME_BYTES).check(server.logical_bytes, 16)?;
    let bytes = server.read_guest(range)?;
    let frame: InterruptFrame = bytemuck::pod_read_unaligned(&bytes);
    regs.rip = frame.rip;
    regs.rsp = frame.rsp;
    // Only arithmetic flags come from guest memory; IOPL and the rest stay the VMM's.
    regs.rflags = (frame.rflags & RFLAGS_GUEST_MASK) | RFLAGS_BASE;
    regs.rax = frame.rax;
    regs.rdi = frame.rdi;
    regs.rsi = frame.rsi;
    regs.rdx = frame.rdx;
    server.write_mask(vp.id, u32::try_from(frame.mask_before).unwrap_or(1));
    Ok(())
}
