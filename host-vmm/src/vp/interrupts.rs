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

use super::{VpControl, VpLocal};
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

/// Names of the exception vectors, for messages.
fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "reserved exception",
    }
}

/// An exception the CPU delivered to its stub (`regs.rip` is just after the stub's
/// `out`; `cr2` from the special registers): takes the CPU's frame off the stack, so
/// `regs` is the faulting state again, then delivers the exception through the virtual
/// IDT. `Err` says why the VP cannot go on (no handler for the vector, a bad stack);
/// `regs` is then the faulting state, for the report.
pub fn deliver_exception(
    server: &VirtualServer,
    vp: &VpControl,
    local: &VpLocal,
    regs: &mut kvm_regs,
    cr2: u64,
) -> Result<(), String> {
    use vima::interrupt::{exception_frame_address, exception_has_error_code, ExceptionFrame};
    use vima::layout::{EXCEPTION_STUBS_OFFSET, EXCEPTION_STUB_BYTES, EXCEPTION_VECTORS};
    // `out imm8, al` is two bytes.
    let stub = regs.rip.wrapping_sub(2);
    let offset = stub.wrapping_sub(EXCEPTION_STUBS_OFFSET);
    if offset >= EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES
        || !offset.is_multiple_of(EXCEPTION_STUB_BYTES)
    {
        return Err(format!(
            "out to the exception port at rip {:#x}, which is not an exception stub",
            regs.rip
        ));
    }
    let vector = u8::try_from(offset / EXCEPTION_STUB_BYTES).expect("below 32");
    let words: u64 = if exception_has_error_code(vector) {
        6
    } else {
        5
    };
    let pushed = UncheckedRange::new(regs.rsp, words * 8)
        .check(server.logical_bytes, 8)
        .and_then(|range| server.read_guest(range))
        .map_err(|_| {
            format!(
                "exception {vector} ({}): the CPU's frame at {:#x} is outside logical memory",
                exception_name(vector),
                regs.rsp
            )
        })?;
    let word = |i: usize| u64::from_le_bytes(pushed[i * 8..i * 8 + 8].try_into().expect("8"));
    let (error_code, base) = if words == 6 { (word(0), 1) } else { (0, 0) };
    regs.rip = word(base);
    regs.rflags = (word(base + 2) & RFLAGS_GUEST_MASK) | RFLAGS_BASE;
    regs.rsp = word(base + 3);
    let fault_addr = if vector == vima::interrupt::EXC_PAGE_FAULT {
        cr2
    } else {
        0
    };
    let describe = || {
        format!(
            "exception {vector} ({}, error code {error_code:#x}) at rip {:#x}, address {fault_addr:#x}",
            exception_name(vector),
            regs.rip
        )
    };
    let handler = local.idt[usize::from(vector)];
    if handler == 0 {
        return Err(format!("{} with no handler", describe()));
    }
    let frame_addr = exception_frame_address(regs.rsp);
    let range = UncheckedRange::new(frame_addr, std::mem::size_of::<ExceptionFrame>() as u64)
        .check(server.logical_bytes, 16)
        .map_err(|_| {
            format!(
                "{}: no room for its frame below rsp {:#x}",
                describe(),
                regs.rsp
            )
        })?;
    let mask_word = server
        .read_guest_u64(mask_range(server, vp.id))
        .unwrap_or(1);
    let frame = ExceptionFrame {
        frame: InterruptFrame {
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
        },
        error_code,
        fault_addr,
    };
    server
        .write_guest(range, bytemuck::bytes_of(&frame))
        .map_err(|_| {
            format!(
                "{}: its frame at {frame_addr:#x} cannot be written",
                describe()
            )
        })?;
    server.write_mask(vp.id, 1);
    regs.rip = handler;
    regs.rsp = frame_addr;
    regs.rdi = frame_addr;
    regs.rsi = u64::from(vector);
    regs.rflags = RFLAGS_BASE;
    server.stats.count_interrupt_delivered();
    Ok(())
}
