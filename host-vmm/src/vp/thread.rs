//! The VP thread: park until started, run guest code, serve exits, repeat.

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vima::call::{EXCEPTION_PORT, VIMA_PORT};
use vima::layout::vp_shared_addr;

use super::calls::{self, CallOutcome};
use super::VpLocal;
use super::{interrupts, kick, RunState, VpControl};
use crate::boot::cpu;
use crate::server::{GuestFault, Outcome, VirtualServer};

/// Starts the thread of VP `vp`, which owns `vcpu` from now on.
pub fn spawn_vp_thread(
    server: Arc<VirtualServer>,
    vcpu: VcpuFd,
    vp: Arc<VpControl>,
) -> std::io::Result<JoinHandle<()>> {
    kick::install_handler();
    let control = vp.clone();
    let handle = std::thread::Builder::new()
        .name(format!("vp{}", vp.id))
        .spawn(move || vp_main(&server, vcpu, &vp))?;
    control
        .thread
        .set(handle.as_pthread_t())
        .expect("each VP thread is spawned once");
    Ok(handle)
}

enum RunEnd {
    Stopped,
    ServerDone,
}

fn vp_main(server: &VirtualServer, mut vcpu: VcpuFd, vp: &VpControl) {
    let run_page: *mut kvm_bindings::kvm_run = vcpu.get_kvm_run();
    kick::register_this_thread(Some(run_page));
    if let Some(fabric) = server.fabric.as_ref() {
        fabric.register_vp_thread(vp.id);
    }
    while let Some((entry, stack_top, arg)) = wait_for_start(server, vp) {
        if let Err(error) = set_entry_state(server, &vcpu, vp, entry, stack_top, arg) {
            server.finish(Outcome::VmmError(format!(
                "vp {}: failed to set up registers: {error}",
                vp.id
            )));
            break;
        }
        match run(server, &mut vcpu, vp, run_page) {
            RunEnd::Stopped => {
                *vp.state.lock().expect("state lock") = RunState::Stopped;
                server.vp_stopped();
            }
            RunEnd::ServerDone => break,
        }
    }
    kick::register_this_thread(None);
}

/// Parks until a start request or the end of the server.
fn wait_for_start(server: &VirtualServer, vp: &VpControl) -> Option<(u64, u64, u64)> {
    let mut state = vp.state.lock().expect("state lock");
    loop {
        if server.is_finished() {
            return None;
        }
        if let RunState::StartRequested {
            entry,
            stack_top,
            arg,
        } = *state
        {
            *state = RunState::Running;
            return Some((entry, stack_top, arg));
        }
        state = vp.started.wait(state).expect("state lock");
    }
}

/// Puts `vcpu` in the VP entry state (vima::call docs) and resets the VP's shared block.
pub fn set_entry_state(
    server: &VirtualServer,
    vcpu: &VcpuFd,
    vp: &VpControl,
    entry: u64,
    stack_top: u64,
    arg: u64,
) -> Result<(), kvm_ioctls::Error> {
    server.reset_vp_shared(vp.id);
    let mut sregs = vcpu.get_sregs()?;
    cpu::set_entry_sregs(&mut sregs, server.cr3, vp_shared_addr(vp.id));
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&cpu::entry_regs(entry, stack_top, arg, vp.id))
}

enum Exit {
    Call,
    Exception,
    OtherPort(u16),
    Interrupted,
    Fault(String),
}

fn run(
    server: &VirtualServer,
    vcpu: &mut VcpuFd,
    vp: &VpControl,
    run_page: *mut kvm_bindings::kvm_run,
) -> RunEnd {
    let mut local = VpLocal::default();
    loop {
        if server.is_finished() {
            return RunEnd::ServerDone;
        }
        if let Err(end) = deliver(server, vcpu, vp, &local) {
            return end;
        }
        let entered = std::time::Instant::now();
        let result = vcpu.run();
        server.stats.add_run_time(vp.id, entered.elapsed());
        let exit = match result {
            Ok(VcpuExit::IoOut(port, _)) if port == VIMA_PORT => Exit::Call,
            Ok(VcpuExit::IoOut(port, _)) if port == EXCEPTION_PORT => Exit::Exception,
            Ok(VcpuExit::IoOut(port, _)) => Exit::OtherPort(port),
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0xff);
                Exit::OtherPort(port)
            }
            Ok(VcpuExit::Shutdown) => Exit::Fault("triple fault (shutdown)".into()),
            Ok(VcpuExit::Hlt) => Exit::Fault("hlt at CPL3".into()),
            Ok(other) => Exit::Fault(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
            Err(e) => Exit::Fault(format!("KVM_RUN failed: {e}")),
        };
        // SAFETY: `run_page` is this thread's live kvm_run page (registered in vp_main).
        unsafe { kick::clear_immediate_exit(run_page) };
        match exit {
            Exit::Interrupted => {}
            Exit::OtherPort(port) => server.stats.count_stray_port(port),
            Exit::Call => match serve_call(server, vcpu, vp, &mut local) {
                Ok(CallOutcome::Resume) => {}
                Ok(CallOutcome::Stop) => return RunEnd::Stopped,
                Ok(CallOutcome::ServerDone) => return RunEnd::ServerDone,
                Err(e) => {
                    server.finish(Outcome::VmmError(format!(
                        "vp {}: register access failed: {e}",
                        vp.id
                    )));
                    return RunEnd::ServerDone;
                }
            },
            Exit::Exception => {
                if let Err(what) = take_exception(server, vcpu, vp, &local) {
                    fault(server, vcpu, vp, what);
                    return RunEnd::ServerDone;
                }
            }
            Exit::Fault(what) => {
                fault(server, vcpu, vp, what);
                return RunEnd::ServerDone;
            }
        }
    }
}

/// Ends the server for a fault the VP cannot go on from: a Linux program is killed
/// (SIGSEGV); anything else is a guest fault, reported with the VP's registers.
fn fault(server: &VirtualServer, vcpu: &VcpuFd, vp: &VpControl, what: String) {
    if server.runs_linux_program {
        server.kill_linux_program(&what);
        return;
    }
    server.finish(Outcome::GuestFault(GuestFault::capture(
        vp.id, vp.node, what, vcpu,
    )));
}

/// Delivers an exception that came through the CPU's IDT to its stub; `Err` when the VP
/// cannot go on (its registers are left at the faulting instruction, for the report).
fn take_exception(
    server: &VirtualServer,
    vcpu: &VcpuFd,
    vp: &VpControl,
    local: &VpLocal,
) -> Result<(), String> {
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| format!("get_regs failed: {e}"))?;
    let cr2 = vcpu
        .get_sregs()
        .map_err(|e| format!("get_sregs failed: {e}"))?
        .cr2;
    let delivered = interrupts::deliver_exception(server, vp, local, &mut regs, cr2);
    vcpu.set_regs(&regs)
        .map_err(|e| format!("set_regs failed: {e}"))?;
    delivered
}

fn serve_call(
    server: &VirtualServer,
    vcpu: &VcpuFd,
    vp: &VpControl,
    local: &mut VpLocal,
) -> Result<CallOutcome, kvm_ioctls::Error> {
    let mut regs = vcpu.get_regs()?;
    let outcome = calls::dispatch(server, vp, local, &mut regs);
    if let Some(entry) = local.syscall_entry.take() {
        cpu::set_syscall_entry(vcpu, entry)?;
    }
    if outcome == CallOutcome::Resume {
        vcpu.set_regs(&regs)?;
    }
    Ok(outcome)
}

fn deliver(
    server: &VirtualServer,
    vcpu: &VcpuFd,
    vp: &VpControl,
    local: &VpLocal,
) -> Result<(), RunEnd> {
    if *vp.pending.lock().expect("pending lock") == 0 || !local.idt_registered {
        return Ok(());
    }
    let fail = |msg: String| {
        server.finish(Outcome::VmmError(format!("vp {}: {msg}", vp.id)));
        RunEnd::ServerDone
    };
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| fail(format!("get_regs failed: {e}")))?;
    match interrupts::deliver_pending(server, vp, local, &mut regs) {
        Ok(true) => vcpu
            .set_regs(&regs)
            .map_err(|e| fail(format!("set_regs failed: {e}"))),
        Ok(false) => Ok(()),
        Err(e) => {
            server.finish(Outcome::GuestFault(GuestFault::capture(
                vp.id,
                vp.node,
                e.to_string(),
                vcpu,
            )));
            Err(RunEnd::ServerDone)
        }
    }
}
