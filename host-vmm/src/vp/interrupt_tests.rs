//! Interrupt delivery without KVM: masking by the guest's `VpShared.mask` word, the
//! lowest pending vector first, vectors with no handler dropped, the frame the guest sees
//! (vima::interrupt's layout) and the return from a handler.

use kvm_bindings::kvm_regs;
use vima::call::UncheckedRange;
use vima::interrupt::{frame_address, InterruptFrame, VP_SHARED_PENDING_OFFSET};
use vima::layout::vp_shared_addr;
use vima::Status;

use super::interrupts::{deliver_pending, return_from_interrupt, DeliveryError};
use super::VpLocal;
use crate::boot::cpu::RFLAGS_BASE;
use crate::server::testing::single_node;
use crate::server::VirtualServer;

const STACK: u64 = 0x20_0000;
const HANDLER: u64 = 0x40_0000;

fn local_with_handlers(vectors: &[u8]) -> VpLocal {
    let mut local = VpLocal::default();
    for &v in vectors {
        local.idt[usize::from(v)] = HANDLER + u64::from(v);
    }
    local.idt_registered = true;
    local
}

fn interrupted() -> kvm_regs {
    kvm_regs {
        rip: 0x30_1234,
        rsp: STACK,
        rflags: RFLAGS_BASE | 0x1, // CF
        rax: 1,
        rdi: 2,
        rsi: 3,
        rdx: 4,
        ..Default::default()
    }
}

fn u64_at(server: &VirtualServer, addr: u64) -> u64 {
    let range = UncheckedRange::new(addr, 8)
        .check(server.logical_bytes, 8)
        .unwrap();
    server.read_guest_u64(range).unwrap()
}

fn mask(server: &VirtualServer, vp: u32) -> u64 {
    u64_at(server, vp_shared_addr(vp)) & 0xffff_ffff
}

fn frame_at(server: &VirtualServer, addr: u64) -> InterruptFrame {
    let size = std::mem::size_of::<InterruptFrame>() as u64;
    let range = UncheckedRange::new(addr, size)
        .check(server.logical_bytes, 16)
        .unwrap();
    bytemuck::pod_read_unaligned(&server.read_guest(range).unwrap())
}

/// VP 0 of a fresh server, unmasked.
fn unmasked() -> VirtualServer {
    let server = single_node(1);
    server.write_mask(0, 0);
    server
}

#[test]
fn nothing_is_delivered_while_masked_or_before_an_idt() {
    let server = single_node(1);
    let vp = server.vp(0).unwrap().clone();
    server.reset_vp_shared(0); // masked, as after a start
    server.post_interrupt(0, 0x30).unwrap();
    let mut regs = interrupted();
    let local = local_with_handlers(&[0x30]);
    assert!(!deliver_pending(&server, &vp, &local, &mut regs).unwrap());
    assert_eq!(regs, interrupted());
    assert_eq!(*vp.pending.lock().unwrap(), 1 << 0x30);
    server.write_mask(0, 0);
    assert!(!deliver_pending(&server, &vp, &VpLocal::default(), &mut regs).unwrap());
    assert_eq!(*vp.pending.lock().unwrap(), 1 << 0x30);
}

#[test]
fn the_lowest_pending_vector_enters_its_handler_with_a_frame_and_masked() {
    let server = unmasked();
    let vp = server.vp(0).unwrap().clone();
    server.post_interrupt(0, 0x31).unwrap();
    server.post_interrupt(0, 0x30).unwrap();
    let local = local_with_handlers(&[0x30, 0x31]);
    let mut regs = interrupted();
    assert!(deliver_pending(&server, &vp, &local, &mut regs).unwrap());
    let at = frame_address(STACK);
    assert_eq!(
        (regs.rip, regs.rsp, regs.rdi, regs.rsi, regs.rflags),
        (HANDLER + 0x30, at, at, 0x30, RFLAGS_BASE)
    );
    let frame = frame_at(&server, at);
    let before = interrupted();
    assert_eq!(
        (
            frame.rip,
            frame.rsp,
            frame.rflags,
            frame.rax,
            frame.rdi,
            frame.rsi,
            frame.rdx
        ),
        (before.rip, before.rsp, before.rflags, 1, 2, 3, 4)
    );
    assert_eq!((frame.vector, frame.mask_before), (0x30, 0));
    assert_eq!(mask(&server, 0), 1);
    // The guest's copy of the pending bits lost the delivered one.
    assert_eq!(*vp.pending.lock().unwrap(), 1 << 0x31);
    assert_eq!(
        u64_at(&server, vp_shared_addr(0) + VP_SHARED_PENDING_OFFSET),
        1 << 0x31
    );
    // Masked now: the next one waits for the return.
    assert!(!deliver_pending(&server, &vp, &local, &mut regs).unwrap());
    assert_eq!(server.stats.snapshot().interrupts_delivered, 1);
}

#[test]
fn a_vector_with_no_handler_is_dropped_and_the_next_delivered() {
    let server = unmasked();
    let vp = server.vp(0).unwrap().clone();
    server.post_interrupt(0, 0x30).unwrap();
    server.post_interrupt(0, 0x35).unwrap();
    let local = local_with_handlers(&[0x35]);
    let mut regs = interrupted();
    assert!(deliver_pending(&server, &vp, &local, &mut regs).unwrap());
    assert_eq!(regs.rip, HANDLER + 0x35);
    assert_eq!(*vp.pending.lock().unwrap(), 0);
    let stats = server.stats.snapshot();
    assert_eq!(
        (stats.interrupts_dropped, stats.interrupts_delivered),
        (1, 1)
    );
}

#[test]
fn a_stack_with_no_room_for_the_frame_is_an_error() {
    let server = unmasked();
    let vp = server.vp(0).unwrap().clone();
    server.post_interrupt(0, 0x30).unwrap();
    let local = local_with_handlers(&[0x30]);
    let mut regs = kvm_regs {
        rsp: 0x100,
        ..interrupted()
    };
    let result = deliver_pending(&server, &vp, &local, &mut regs);
    assert!(matches!(
        result,
        Err(DeliveryError::FrameOutside {
            vector: 0x30,
            rsp: 0x100,
            ..
        })
    ));
}

#[test]
fn intr_return_restores_the_interrupted_state_and_mask_but_not_privileged_flags() {
    let server = unmasked();
    let vp = server.vp(0).unwrap().clone();
    server.post_interrupt(0, 0x30).unwrap();
    let local = local_with_handlers(&[0x30]);
    let mut regs = interrupted();
    assert!(deliver_pending(&server, &vp, &local, &mut regs).unwrap());
    let at = regs.rsp;
    // The handler scribbles the trap and alignment-check flags into the saved flags and
    // clears IOPL.
    let mut frame = frame_at(&server, at);
    frame.rflags = (frame.rflags | 0x100 | 0x4_0000) & !0x3000;
    let range = UncheckedRange::new(at, std::mem::size_of::<InterruptFrame>() as u64)
        .check(server.logical_bytes, 16)
        .unwrap();
    server
        .write_guest(range, bytemuck::bytes_of(&frame))
        .unwrap();
    let mut after = kvm_regs::default();
    return_from_interrupt(&server, &vp, at, &mut after).unwrap();
    let before = interrupted();
    assert_eq!(
        (after.rip, after.rsp, after.rax, after.rdi, after.rsi, after.rdx),
        (before.rip, before.rsp, 1, 2, 3, 4)
    );
    // Only the arithmetic flags (CF here) come from the frame; the rest are the VMM's.
    assert_eq!(after.rflags, RFLAGS_BASE | 0x1);
    assert_eq!(mask(&server, 0), 0);
    let end = server.logical_bytes;
    assert_eq!(
        return_from_interrupt(&server, &vp, end - 8, &mut after),
        Err(Status::BadAddress)
    );
}
