//! The register state of a VP at entry: 64-bit mode, CPL3, IOPL=3 (see docs/platform.md: on
//! PVM, CPL0 is emulated and CPL3 runs natively, so the guest never leaves CPL3).

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use super::private::{selector, GDT_BYTES, GDT_OFFSET, PRIVATE_GPA, TSS_BYTES, TSS_OFFSET};

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// RFLAGS bit 1 (always set) and IOPL = 3.
pub const RFLAGS_BASE: u64 = 0x2 | 0x3000;
/// RFLAGS bits a guest may carry across an interrupt return: CF PF AF ZF SF DF OF.
pub const RFLAGS_GUEST_MASK: u64 = 0xcd5;

fn segment(selector: u16, type_: u8, long: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db,
        s: 1,
        l: long,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets `sregs` for a VP entering at CPL3 with page tables at `cr3` and the `gs` base at
/// `gs_base` (its VpShared block).
pub fn set_entry_sregs(sregs: &mut kvm_sregs, cr3: u64, gs_base: u64) {
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs.cs = segment(selector::USER_CODE, 0xb, 1, 0);
    let data = segment(selector::USER_DATA, 0x3, 0, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.ss = data;
    sregs.fs = data;
    sregs.gs = kvm_segment {
        base: gs_base,
        ..data
    };
    sregs.gdt = kvm_dtable {
        base: PRIVATE_GPA + GDT_OFFSET as u64,
        limit: GDT_BYTES - 1,
        padding: [0; 3],
    };
    // The exception gates are present only for Linux programs (private.rs): otherwise a
    // fault triple-faults the VP, which the VMM reports with the VP's registers.
    sregs.idt = kvm_dtable {
        base: PRIVATE_GPA + super::private::IDT_OFFSET as u64,
        limit: super::private::IDT_BYTES - 1,
        padding: [0; 3],
    };
    sregs.tr = kvm_segment {
        base: PRIVATE_GPA + TSS_OFFSET as u64,
        limit: TSS_BYTES - 1,
        selector: selector::TSS,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
}

/// General registers at entry: `rip = entry`, `rsp = stack_top`, `rdi = arg`, `rsi = vp`.
pub fn entry_regs(entry: u64, stack_top: u64, arg: u64, vp: u32) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_top,
        rdi: arg,
        rsi: u64::from(vp),
        rflags: RFLAGS_BASE,
        ..Default::default()
    }
}

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// RFLAGS bits `syscall` clears: TF, DF, AC (IF is left alone: interrupts to this guest
/// are masked in its VpShared block, not by IF).
const SYSCALL_FLAGS_CLEARED: u64 = 0x100 | 0x400 | 0x4_0000;

/// Points the VP's `syscall` instruction at `entry` (`SyscallEntrySet`). On PVM the
/// instruction stays at CPL3 and ignores STAR's selectors; they are set to the GDT's
/// anyway, as a VMX host would use them.
pub fn set_syscall_entry(vcpu: &kvm_ioctls::VcpuFd, entry: u64) -> Result<(), kvm_ioctls::Error> {
    let star =
        (u64::from(selector::KERNEL_CODE) << 32) | (u64::from(selector::USER_DATA - 8) << 48);
    let entries = [
        (MSR_STAR, star),
        (MSR_LSTAR, entry),
        (MSR_SYSCALL_MASK, SYSCALL_FLAGS_CLEARED),
    ]
    .map(|(index, data)| kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs =
        kvm_bindings::Msrs::from_entries(&entries).expect("three entries fit a KVM MSR list");
    let written = vcpu.set_msrs(&msrs)?;
    if written != entries.len() {
        return Err(kvm_ioctls::Error::new(libc::EINVAL));
    }
    Ok(())
}
