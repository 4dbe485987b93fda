//! The VMM-private region: page tables, GDT and TSS, built in a byte buffer that becomes
//! KVM memory slot 1 at [`PRIVATE_GPA`].
//!
//! Page tables map logical memory at logical = virtual with user-accessible, writable,
//! executable entries: 4 KiB pages for the first 2 MiB (so the null page can stay
//! unmapped), 2 MiB pages above. The private region is mapped at its own guest physical
//! address, supervisor-only: the CPU reaches the GDT and TSS there, the guest at CPL3
//! cannot. Large guest pages are fine for coherence: KVM maps host 4 KiB pages underneath
//! and userfaultfd works on those.

use vima::layout::{MAX_LOGICAL_BYTES, PAGE_SIZE};

/// Guest physical (and virtual) address of the private region: PML4 slot 1.
pub const PRIVATE_GPA: u64 = 0x80_0000_0000;
/// Size of the private region: one 2 MiB page.
pub const PRIVATE_BYTES: usize = 2 << 20;

const PML4: usize = 0;
const PDPT_LOW: usize = 0x1000;
const PDPT_PRIVATE: usize = 0x2000;
const PD_PRIVATE: usize = 0x3000;
const PT_FIRST_2M: usize = 0x4000;
/// Offset of the GDT in the private region.
pub const GDT_OFFSET: usize = 0x5000;
/// Offset of the TSS in the private region.
pub const TSS_OFFSET: usize = 0x6000;
/// Offset of the system call trampoline page (mapped at virtual 0 for Linux programs).
const TRAMPOLINE: usize = 0x9000;
/// Offset of the CPU's IDT: gates 0..31, present only for Linux programs (they point at
/// the exception stubs of the trampoline page); otherwise a fault triple-faults the VP.
pub const IDT_OFFSET: usize = 0xa000;
/// Bytes of the IDT (the exception vectors).
#[allow(clippy::cast_possible_truncation)] // 32 * 16
pub const IDT_BYTES: u16 = (vima::layout::EXCEPTION_VECTORS * 16) as u16;
const PD_LOW: usize = 0x10000;
const _: () = assert!(TSS_OFFSET + TSS_HEADER_BYTES + IO_BITMAP_BYTES <= TRAMPOLINE);
const _: () = assert!(TRAMPOLINE + 0x1000 <= IDT_OFFSET);
const _: () = assert!(IDT_OFFSET + IDT_BYTES as usize <= PD_LOW);
const _: () = assert!(TSS_OFFSET + TSS_HEADER_BYTES + IO_BITMAP_BYTES <= PD_LOW);

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const HUGE: u64 = 0x80;
const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;

/// GDT selectors. User code and data at RPL 3; the kernel descriptors exist because the
/// CPU requires sane ones, the guest never runs with them.
pub mod selector {
    /// 64-bit kernel code (unused by the guest).
    pub const KERNEL_CODE: u16 = 0x08;
    /// Kernel data (unused by the guest).
    pub const KERNEL_DATA: u16 = 0x10;
    /// User data, RPL 3.
    pub const USER_DATA: u16 = 0x23;
    /// 64-bit user code, RPL 3.
    pub const USER_CODE: u16 = 0x2b;
    /// The TSS.
    pub const TSS: u16 = 0x30;
}

/// Bytes of the GDT (8 descriptors, the TSS takes two).
pub const GDT_BYTES: u16 = 8 * 8;
/// Bytes of the TSS proper; the I/O permission bitmap follows it.
const TSS_HEADER_BYTES: usize = 0x68;
/// One bit per port, plus the terminating all-ones byte the CPU requires.
const IO_BITMAP_BYTES: usize = 65536 / 8 + 1;
/// Bytes of the TSS including its I/O permission bitmap (the TSS limit + 1).
#[allow(clippy::cast_possible_truncation)] // 0x68 + 8193, checked below
pub const TSS_BYTES: u32 = (TSS_HEADER_BYTES + IO_BITMAP_BYTES) as u32;
const _: () = assert!(TSS_HEADER_BYTES + IO_BITMAP_BYTES < u32::MAX as usize);

fn put(buf: &mut [u8], off: usize, value: u64) {
    buf[off..off + 8].copy_from_slice(&value.to_le_bytes());
}

/// Writes page tables, GDT and TSS for `logical_bytes` of logical memory into `buf`
/// (`PRIVATE_BYTES` long, zeroed). Returns the CR3 value.
pub fn build(buf: &mut [u8], logical_bytes: u64) -> u64 {
    assert!(
        buf.len() >= PRIVATE_BYTES,
        "private region buffer too small"
    );
    assert!(
        logical_bytes <= MAX_LOGICAL_BYTES,
        "logical memory checked by the caller"
    );
    let gpa = |off: usize| PRIVATE_GPA + off as u64;
    let user = PRESENT | WRITABLE | USER;

    put(buf, PML4, gpa(PDPT_LOW) | user);
    put(buf, PML4 + 8, gpa(PDPT_PRIVATE) | PRESENT | WRITABLE);
    put(buf, PDPT_PRIVATE, gpa(PD_PRIVATE) | PRESENT | WRITABLE);
    put(buf, PD_PRIVATE, PRIVATE_GPA | PRESENT | WRITABLE | HUGE);

    let gibs = logical_bytes.div_ceil(GIB);
    for g in 0..gibs {
        let pd = PD_LOW + usize::try_from(g).expect("at most 64 GiB") * 0x1000;
        put(
            buf,
            PDPT_LOW + usize::try_from(g).expect("at most 64") * 8,
            gpa(pd) | user,
        );
        for e in 0..512u64 {
            let addr = g * GIB + e * TWO_MIB;
            if addr >= logical_bytes {
                break;
            }
            let entry = if addr == 0 {
                gpa(PT_FIRST_2M) | user
            } else {
                addr | user | HUGE
            };
            put(buf, pd + usize::try_from(e).expect("< 512") * 8, entry);
        }
    }
    // The first 2 MiB in 4 KiB pages; page 0 stays not-present.
    for p in 1..512u64 {
        if p * PAGE_SIZE >= logical_bytes {
            break;
        }
        put(
            buf,
            PT_FIRST_2M + usize::try_from(p).expect("< 512") * 8,
            (p * PAGE_SIZE) | user,
        );
    }

    let gdt: [u64; 6] = [
        0,
        0x00af_9b00_0000_ffff, // kernel code, L=1
        0x00cf_9300_0000_ffff, // kernel data
        0,
        0x00cf_f300_0000_ffff, // user data, DPL 3
        0x00af_fb00_0000_ffff, // user code, L=1, DPL 3
    ];
    for (i, d) in gdt.iter().enumerate() {
        put(buf, GDT_OFFSET + i * 8, *d);
    }
    let tss = gpa(TSS_OFFSET);
    let low = u64::from(TSS_BYTES - 1)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((tss >> 24) & 0xff) << 56);
    put(buf, GDT_OFFSET + 6 * 8, low);
    put(buf, GDT_OFFSET + 7 * 8, tss >> 32);
    // The I/O permission bitmap allows the ViMA port only. PVM does not honour IOPL=3
    // (measured: `out` faults with the bitmap absent), so the bitmap is what lets the guest
    // make calls; on VMX hosts IOPL=3 alone would do. Other ports fault.
    let iomap = u16::try_from(TSS_HEADER_BYTES).expect("0x68 fits");
    buf[TSS_OFFSET + 0x66..TSS_OFFSET + 0x68].copy_from_slice(&iomap.to_le_bytes());
    let bitmap = TSS_OFFSET + TSS_HEADER_BYTES;
    buf[bitmap..bitmap + IO_BITMAP_BYTES].fill(0xff);
    for port in [vima::call::VIMA_PORT, vima::call::EXCEPTION_PORT] {
        let port = usize::from(port);
        buf[bitmap + port / 8] &= !(1u8 << (port % 8));
    }
    PRIVATE_GPA + PML4 as u64
}

/// Maps the system call trampoline (`vima::layout::syscall_trampoline_page`) at virtual
/// page 0, user read/execute and not writable, from this node's private region (so it
/// needs no coherence and the guest cannot change it). For Linux programs only: the null
/// page then reads as the trampoline, and null writes still fault.
pub fn map_syscall_trampoline(buf: &mut [u8]) {
    let page = vima::layout::syscall_trampoline_page();
    buf[TRAMPOLINE..TRAMPOLINE + page.len()].copy_from_slice(&page);
    put(
        buf,
        PT_FIRST_2M,
        (PRIVATE_GPA + TRAMPOLINE as u64) | PRESENT | USER,
    );
    // Exceptions of the program go to the stubs (at CPL3, on the current stack: no
    // privilege change), whose `out` brings them to the VMM.
    for vector in 0..vima::layout::EXCEPTION_VECTORS {
        let stub =
            vima::layout::EXCEPTION_STUBS_OFFSET + vector * vima::layout::EXCEPTION_STUB_BYTES;
        let [low, high] = interrupt_gate(stub, selector::USER_CODE);
        let at = IDT_OFFSET + usize::try_from(vector).expect("32 vectors") * 16;
        put(buf, at, low);
        put(buf, at + 8, high);
    }
}

/// A present 64-bit trap gate to `offset` in code segment `cs`, DPL 3.
fn interrupt_gate(offset: u64, cs: u16) -> [u64; 2] {
    const TRAP_GATE: u64 = 0xf;
    let low = (offset & 0xffff)
        | (u64::from(cs) << 16)
        | ((TRAP_GATE | 0x60 | 0x80) << 40)
        | (((offset >> 16) & 0xffff) << 48);
    [low, offset >> 32]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(buf: &[u8], gpa: u64) -> u64 {
        let off = usize::try_from(gpa - PRIVATE_GPA).unwrap();
        u64::from_le_bytes(buf[off..off + 8].try_into().unwrap())
    }

    /// An independent page walk: returns (physical address, user, writable) or None.
    fn walk(buf: &[u8], cr3: u64, va: u64) -> Option<(u64, bool, bool)> {
        let mask = 0x000f_ffff_ffff_f000u64;
        let mut table = cr3;
        let mut user = true;
        let mut writable = true;
        for (level, shift) in [(4, 39), (3, 30), (2, 21), (1, 12)] {
            let entry = get(buf, (table & mask) + ((va >> shift) & 511) * 8);
            if entry & PRESENT == 0 {
                return None;
            }
            user &= entry & USER != 0;
            writable &= entry & WRITABLE != 0;
            if level == 2 && entry & HUGE != 0 {
                return Some((
                    (entry & mask & !(TWO_MIB - 1)) | (va & (TWO_MIB - 1)),
                    user,
                    writable,
                ));
            }
            table = entry;
        }
        Some(((table & mask) | (va & 0xfff), user, writable))
    }

    #[test]
    fn identity_maps_logical_memory_except_null_page() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        let logical = 3 * GIB + 6 * TWO_MIB;
        let cr3 = build(&mut buf, logical);
        assert_eq!(walk(&buf, cr3, 0), None);
        assert_eq!(walk(&buf, cr3, 0xfff), None);
        for va in [
            0x1000,
            0x1_ff000,
            0x20_0000,
            0x20_1234,
            GIB + 5,
            logical - 1,
        ] {
            assert_eq!(walk(&buf, cr3, va), Some((va, true, true)), "va {va:#x}");
        }
        assert_eq!(walk(&buf, cr3, logical), None);
        assert_eq!(walk(&buf, cr3, 4 * GIB), None);
    }

    #[test]
    fn private_region_is_supervisor_only() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        let cr3 = build(&mut buf, 16 << 20);
        let gdt = PRIVATE_GPA + GDT_OFFSET as u64;
        assert_eq!(walk(&buf, cr3, gdt), Some((gdt, false, true)));
    }

    #[test]
    fn io_bitmap_allows_only_the_vima_and_exception_ports() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        build(&mut buf, 16 << 20);
        let base = u16::from_le_bytes([buf[TSS_OFFSET + 0x66], buf[TSS_OFFSET + 0x67]]) as usize;
        let allowed: Vec<usize> = (0..65536)
            .filter(|port| buf[TSS_OFFSET + base + port / 8] & (1 << (port % 8)) == 0)
            .collect();
        assert_eq!(allowed, vec![0xca, 0xcb]);
        assert_eq!(buf[TSS_OFFSET + base + 8192], 0xff);
        assert_eq!(TSS_BYTES as usize, base + 8193);
    }

    #[test]
    fn exception_gates_point_at_their_stubs_only_for_linux_programs() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        build(&mut buf, 16 << 20);
        assert!(buf[IDT_OFFSET..IDT_OFFSET + usize::from(IDT_BYTES)]
            .iter()
            .all(|&b| b == 0));
        map_syscall_trampoline(&mut buf);
        for vector in 0..32u64 {
            let at = IDT_OFFSET + usize::try_from(vector).unwrap() * 16;
            let low = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
            let high = u64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap());
            let offset = (low & 0xffff) | ((low >> 48) << 16) | (high << 32);
            assert_eq!(offset, 0x208 + vector * 8);
            assert_eq!((low >> 16) & 0xffff, u64::from(selector::USER_CODE));
            // Present, DPL 3, 64-bit trap gate.
            assert_eq!((low >> 40) & 0xff, 0xef);
            let stub = TRAMPOLINE + usize::try_from(offset).unwrap();
            assert_eq!(buf[stub..stub + 4], [0xe6, 0xcb, 0x0f, 0x0b]);
        }
    }

    #[test]
    fn small_memory_maps_only_what_exists() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        let cr3 = build(&mut buf, 8 << 20);
        assert!(walk(&buf, cr3, (8 << 20) - 1).is_some());
        assert_eq!(walk(&buf, cr3, 8 << 20), None);
    }

    #[test]
    fn trampoline_page_is_mapped_at_zero_read_only() {
        let mut buf = vec![0u8; PRIVATE_BYTES];
        build(&mut buf, 16 << 20);
        let entry =
            |buf: &[u8]| u64::from_le_bytes(buf[PT_FIRST_2M..PT_FIRST_2M + 8].try_into().unwrap());
        assert_eq!(entry(&buf), 0, "the null page is unmapped by default");
        map_syscall_trampoline(&mut buf);
        let e = entry(&buf);
        assert_eq!(e & (PRESENT | WRITABLE | USER), PRESENT | USER);
        assert_eq!(e & !0xfff, PRIVATE_GPA + TRAMPOLINE as u64);
        assert_eq!(buf[TRAMPOLINE + 0x200], 0x65);
    }
}
