//! Interrupts: the virtual IDT, its entry stub, the handlers, and masking through the
//! VP's shared block (`gs` points at it, so masking never exits).
//!
//! The VMM enters a handler with `rsp = rdi =` the [`vima::interrupt::InterruptFrame`] it
//! pushed and `rsi =` the vector, and `IntrReturn` restores only `rip, rsp, rflags, rax,
//! rdi, rsi, rdx`. So the one entry stub, used for every vector, saves every other
//! register ([`SavedRegs`]) and the SSE state (`fxsave64`), calls [`handle_interrupt`]
//! on a 16-byte aligned stack, restores, and makes the `IntrReturn` call itself.
//!
//! Handlers only count: the per-node tick (the paper's jiffies page, 4.8) and IPIs. They
//! never lock or print, so they cannot deadlock with the code they interrupt. Once a
//! Linux program's threads are scheduled ([`set_preemptive`]), an interrupt that hits
//! program code may also switch threads ([`crate::sched::preempt_from_interrupt`]).

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vima::call::Call;
use vima::interrupt::{
    ExceptionFrame, InterruptFrame, VECTOR_CONFIG, VECTOR_COUNT, VECTOR_IPI, VECTOR_TIMER,
};
use vima::layout::{MAX_VPS, PER_NODE_GUEST_BASE};

use crate::vima_calls::{self, CallError};

/// The per-node tick period: 100 Hz.
pub const TICK_NS: u64 = 10_000_000;

global_asm!(
    ".pushsection .text.intr_entry,\"ax\",@progbits",
    ".global intr_entry",
    "intr_entry:",
    "push rbp",
    "mov rbp, rsp",
    "push rcx",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    // rbx (callee-saved) keeps the frame address across the call.
    "mov rbx, rdi",
    "and rsp, -16",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "mov rdi, rsi",
    "mov rsi, rbx",
    // The saved registers (a SavedRegs) and the saved SSE state, for a signal frame.
    "lea rdx, [rbp - 80]",
    "mov rcx, rsp",
    "cld",
    "call {handler}",
    "fxrstor64 [rsp]",
    "lea rsp, [rbp - 80]",
    "mov rdi, rbx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rcx",
    "pop rbp",
    "mov eax, {intr_return}",
    "out 0xCA, al",
    // IntrReturn does not return; if it did, the VP must stop here rather than run on.
    "ud2",
    ".popsection",
    handler = sym handle_interrupt,
    intr_return = const Call::IntrReturn as u32,
);

/// The registers the entry stub saved (the frame holds the rest), lowest address first;
/// a signal handler's frame is built from them, and changes to them are what the
/// interrupted code gets back.
#[repr(C)]
#[derive(Debug)]
pub struct SavedRegs {
    /// r15.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// rbx.
    pub rbx: u64,
    /// r11.
    pub r11: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rcx.
    pub rcx: u64,
    /// rbp.
    pub rbp: u64,
}

extern "C" {
    /// The entry stub above; only its address is used.
    fn intr_entry();
}

/// IPIs received, per VP.
static IPIS_RECEIVED: [AtomicU64; MAX_VPS] = [const { AtomicU64::new(0) }; MAX_VPS];
/// Interrupts on vectors nobody expects, per VP.
static SPURIOUS: [AtomicU64; MAX_VPS] = [const { AtomicU64::new(0) }; MAX_VPS];

/// This node's tick counter, in the per-node region: every node has its own copy and
/// only the node's first VP arms the timer that advances it.
fn node_tick() -> &'static AtomicU64 {
    const _: () = assert!(PER_NODE_GUEST_BASE % 8 == 0);
    // SAFETY: PER_NODE_GUEST_BASE is 8-byte aligned, mapped on every node, reserved for
    // the guest, and this kernel keeps only the tick counter there; atomics make the
    // concurrent updates and reads of the VPs of one node well defined.
    unsafe { &*(PER_NODE_GUEST_BASE as *const AtomicU64) }
}

/// Set once threads are scheduled preemptively (a Linux program runs).
static PREEMPTIVE: AtomicBool = AtomicBool::new(false);

/// From now on the tick and IPIs may switch threads ([`crate::sched`]).
pub fn set_preemptive() {
    PREEMPTIVE.store(true, Ordering::Release);
}

extern "sysv64" fn handle_interrupt(
    vector: u64,
    frame: *mut InterruptFrame,
    saved: *mut SavedRegs,
    fx: *const u8,
) {
    if let Ok(vector) = u8::try_from(vector) {
        if u64::from(vector) < vima::layout::EXCEPTION_VECTORS {
            // SAFETY: the VMM delivers exception vectors with an ExceptionFrame, whose
            // first part is the InterruptFrame the stub passes; the stub's saved
            // registers and SSE state are just below. All stay on this stack until the
            // handler returns, and nothing else refers to them.
            let (frame, saved, fx) = unsafe {
                (
                    &mut *frame.cast::<ExceptionFrame>(),
                    &mut *saved,
                    &*fx.cast::<[u8; 512]>(),
                )
            };
            crate::faults::exception(vector, frame, saved, fx);
            return;
        }
    }
    let vp = current_vp() as usize % MAX_VPS;
    match u8::try_from(vector) {
        Ok(VECTOR_TIMER) => {
            // With threads every VP ticks; the node's tick advances on its first VP.
            if !PREEMPTIVE.load(Ordering::Relaxed) || crate::machine::kernel().is_first_on_node(vp)
            {
                node_tick().fetch_add(1, Ordering::Relaxed);
            }
            if PREEMPTIVE.load(Ordering::Relaxed) {
                crate::linux::at_tick();
            }
        }
        Ok(VECTOR_IPI) => {
            IPIS_RECEIVED[vp].fetch_add(1, Ordering::Relaxed);
        }
        Ok(VECTOR_CONFIG) => {
            // Kept until the idle context looks, even before the scheduler runs (a VP
            // that just started): a configuration interrupt is never dropped.
            crate::sched::hotplug::on_config_interrupt(current_vp());
        }
        _ => {
            SPURIOUS[vp].fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if PREEMPTIVE.load(Ordering::Acquire) {
        // SAFETY: the VMM pushed the frame and the entry stub passes its address, with
        // the registers and SSE state it saved just below; they stay on this stack
        // until the handler returns, and nothing else refers to them.
        let (frame, saved, fx) = unsafe { (&mut *frame, &mut *saved, &*fx.cast::<[u8; 512]>()) };
        crate::sched::preempt_from_interrupt(frame.rip);
        let kernel_text = crate::alloc::image_start()..crate::alloc::image_end();
        if !kernel_text.contains(&frame.rip) && !crate::sched::current_is_idle() {
            crate::linux::at_interrupt(frame, saved, fx);
        }
    }
}

/// This VP's id, from its shared block (no exit).
pub fn current_vp() -> u32 {
    let vp: u32;
    // SAFETY: the VMM points the gs base at this VP's VpShared block before the VP runs;
    // offset 4 is `vp_id`, a u32 the VMM wrote before start.
    unsafe {
        asm!(
            "mov {vp:e}, dword ptr gs:[{offset}]",
            vp = out(reg) vp,
            offset = const vima::interrupt::VP_SHARED_VP_ID_OFFSET,
            options(nostack, readonly, preserves_flags)
        );
    }
    vp
}

fn set_mask(mask: u32) -> u32 {
    let old: u32;
    // SAFETY: gs points at this VP's VpShared block; offset 0 is `mask`, which the guest
    // owns. `xchg` reads the old value and writes the new one in one instruction.
    unsafe {
        asm!(
            "xchg dword ptr gs:[{offset}], {mask:e}",
            mask = inout(reg) mask => old,
            offset = const vima::interrupt::VP_SHARED_MASK_OFFSET,
            options(nostack, preserves_flags)
        );
    }
    old
}

fn pending() -> u64 {
    let pending: u64;
    // SAFETY: gs points at this VP's VpShared block; offset 8 is `pending`, a u64 the VMM
    // sets bits in.
    unsafe {
        asm!(
            "mov {pending}, qword ptr gs:[{offset}]",
            pending = out(reg) pending,
            offset = const vima::interrupt::VP_SHARED_PENDING_OFFSET,
            options(nostack, readonly, preserves_flags)
        );
    }
    pending
}

/// Holds interrupts back; returns the previous mask for [`restore`].
pub fn mask() -> u32 {
    set_mask(1)
}

/// Puts back a mask [`mask`] returned, polling for what arrived meanwhile.
pub fn restore(old: u32) {
    set_mask(old);
    if old == 0 && pending() != 0 {
        // Best effort: a failing poll only delays delivery to the next call.
        let _ = vima_calls::intr_poll();
    }
}

/// Lets interrupts in: clears the mask, then polls if any arrived while it was set.
pub fn enable() -> Result<(), CallError> {
    set_mask(0);
    if pending() != 0 {
        vima_calls::intr_poll()?;
    }
    Ok(())
}

/// Runs `f` with interrupts held back, restoring the previous mask afterwards.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let old = set_mask(1);
    let result = f();
    set_mask(old);
    if old == 0 && pending() != 0 {
        // Best effort: a failing poll only delays delivery to the next call.
        let _ = vima_calls::intr_poll();
    }
    result
}

/// Registers the virtual IDT of the calling VP: the entry stub on every vector, the
/// exceptions (0..31, which the VMM delivers for Linux programs only) included.
pub fn install() -> Result<(), CallError> {
    let table = [intr_entry as *const () as u64; VECTOR_COUNT];
    vima_calls::idt_register(&table)
}

/// Starts this node's tick (call on the node's first VP only).
pub fn start_node_tick() -> Result<(), CallError> {
    vima_calls::timer_set(VECTOR_TIMER, TICK_NS, TICK_NS)
}

/// Disarms this VP's timer.
pub fn stop_node_tick() -> Result<(), CallError> {
    vima_calls::timer_set(VECTOR_TIMER, 0, 0)
}

/// Ticks of the caller's node so far.
#[allow(dead_code)] // Read by the scheduler and probe workloads to come.
pub fn node_ticks() -> u64 {
    node_tick().load(Ordering::Relaxed)
}

/// IPIs VP `vp` has received.
#[allow(dead_code)] // Statistics for the scheduler to come.
pub fn ipis_received(vp: u32) -> u64 {
    IPIS_RECEIVED
        .get(vp as usize)
        .map_or(0, |count| count.load(Ordering::Relaxed))
}
