//! The NIC's PCI configuration space (256 bytes, type 0 header, one MSI-X capability), as
//! the device model serves it over vfio-user's trapped config region.
//!
//! Only what a driver touches is writable: the command register, BAR0 (with the usual
//! all-ones size probe) and the MSI-X enable bits. Everything else is read-only, so a
//! driver cannot change the ids it checks.

use crate::layout::{
    BAR0_SIZE, BAR0_USED, CLASS_CODE, DEVICE_ID, MSIX_VECTORS, REVISION, VENDOR_ID,
};

/// Size of the configuration space.
pub const CONFIG_SPACE_BYTES: usize = 256;
/// Offset of the MSI-X capability.
pub const MSIX_CAP_OFFSET: usize = 0x40;
/// Offset of the MSI-X table in BAR0 (past the rings and buffers; vfio-user clients
/// program vectors with eventfds, so the table is never read).
pub const MSIX_TABLE_OFFSET: u64 = BAR0_USED.next_multiple_of(4096);
/// Offset of the MSI-X pending-bit array in BAR0.
pub const MSIX_PBA_OFFSET: u64 = MSIX_TABLE_OFFSET + 16 * MSIX_VECTORS as u64;

const _: () = assert!(MSIX_PBA_OFFSET + 16 <= BAR0_SIZE);

const COMMAND: usize = 0x04;
const CAP_POINTER: u8 = 0x40;
const _: () = assert!(CAP_POINTER as usize == MSIX_CAP_OFFSET);
/// MSI-X "table size" field: vectors minus one (fits its 11 bits).
#[allow(clippy::cast_possible_truncation)] // checked by the assert
const MSIX_TABLE_SIZE_FIELD: u16 = {
    assert!(MSIX_VECTORS <= 2048);
    (MSIX_VECTORS - 1) as u16
};
const _: () = assert!(BAR0_SIZE <= 1 << 31, "a 32-bit BAR");

/// The low 32 bits of an offset known to fit them (BAR0 is a 32-bit BAR).
fn low32(v: u64) -> u32 {
    u32::try_from(v).expect("BAR0 offsets fit 32 bits")
}
const BAR0: usize = 0x10;
const MSIX_CONTROL: usize = MSIX_CAP_OFFSET + 2;
/// Command bits a driver may set: I/O, memory, bus master, interrupt disable.
const COMMAND_WRITABLE: u16 = 0x0007 | 0x0400;
/// MSI-X control bits a driver may set: function mask, enable.
const MSIX_WRITABLE: u16 = 0xc000;

/// A configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_BYTES],
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigSpace {
    /// The NIC's configuration space at reset.
    pub fn new() -> Self {
        let mut bytes = [0u8; CONFIG_SPACE_BYTES];
        let mut put = |at: usize, v: &[u8]| bytes[at..at + v.len()].copy_from_slice(v);
        put(0x00, &VENDOR_ID.to_le_bytes());
        put(0x02, &DEVICE_ID.to_le_bytes());
        put(0x06, &0x0010u16.to_le_bytes()); // status: capability list
        put(0x08, &[REVISION]);
        put(0x09, &CLASS_CODE.to_le_bytes()[..3]);
        put(0x0e, &[0]); // header type 0
        put(BAR0, &0u32.to_le_bytes()); // 32-bit memory BAR, not prefetchable
        put(0x2c, &VENDOR_ID.to_le_bytes()); // subsystem vendor
        put(0x2e, &DEVICE_ID.to_le_bytes()); // subsystem id
        put(0x34, &[CAP_POINTER]);
        // MSI-X: id 0x11, no next, table size N-1, table and PBA in BAR0.
        put(MSIX_CAP_OFFSET, &[0x11, 0]);
        put(MSIX_CONTROL, &MSIX_TABLE_SIZE_FIELD.to_le_bytes());
        put(MSIX_CAP_OFFSET + 4, &low32(MSIX_TABLE_OFFSET).to_le_bytes());
        put(MSIX_CAP_OFFSET + 8, &low32(MSIX_PBA_OFFSET).to_le_bytes());
        Self { bytes }
    }

    /// Reads `out.len()` bytes at `offset`; false (and nothing read) when out of range.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> bool {
        match self.range(offset, out.len()) {
            Some(r) => {
                out.copy_from_slice(&self.bytes[r]);
                true
            }
            None => false,
        }
    }

    /// Writes `data` at `offset`, keeping read-only bits; false when out of range.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(range) = self.range(offset, data.len()) else {
            return false;
        };
        for (i, byte) in range.zip(data) {
            self.write_byte(i, *byte);
        }
        true
    }

    fn range(&self, offset: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= CONFIG_SPACE_BYTES).then_some(start..end)
    }

    fn write_byte(&mut self, at: usize, value: u8) {
        let mask: u8 = match at {
            COMMAND | 0x05 => COMMAND_WRITABLE.to_le_bytes()[at - COMMAND],
            // BAR0: the low 4 bits are the type, the size bits read back as zero.
            BAR0..=0x13 => {
                let writable = !(low32(BAR0_SIZE) - 1) & !0xf;
                writable.to_le_bytes()[at - BAR0]
            }
            MSIX_CONTROL | 0x43 => MSIX_WRITABLE.to_le_bytes()[at - MSIX_CONTROL],
            _ => 0,
        };
        self.bytes[at] = (self.bytes[at] & !mask) | (value & mask);
    }

    /// The vendor and device ids.
    pub fn ids(&self) -> (u16, u16) {
        (
            u16::from_le_bytes([self.bytes[0], self.bytes[1]]),
            u16::from_le_bytes([self.bytes[2], self.bytes[3]]),
        )
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test values are small
mod tests {
    use super::*;

    fn read_u32(c: &ConfigSpace, at: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(c.read(at, &mut b));
        u32::from_le_bytes(b)
    }

    #[test]
    fn ids_class_and_capability_list() {
        let c = ConfigSpace::new();
        assert_eq!(
            read_u32(&c, 0),
            u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID)
        );
        assert_eq!(read_u32(&c, 8) >> 8, CLASS_CODE);
        assert_eq!(c.bytes[0x34] as usize, MSIX_CAP_OFFSET);
        assert_eq!(c.bytes[MSIX_CAP_OFFSET], 0x11);
        let control = u16::from_le_bytes([c.bytes[MSIX_CONTROL], c.bytes[MSIX_CONTROL + 1]]);
        assert_eq!(u32::from(control & 0x7ff) + 1, MSIX_VECTORS);
    }

    #[test]
    fn bar_size_probe_reports_the_bar_size() {
        let mut c = ConfigSpace::new();
        assert!(c.write(BAR0 as u64, &u32::MAX.to_le_bytes()));
        let probed = read_u32(&c, BAR0 as u64) & !0xf;
        assert_eq!(u64::from(!probed) + 1, BAR0_SIZE);
        assert!(c.write(BAR0 as u64, &0xfe00_0000u32.to_le_bytes()));
        assert_eq!(
            read_u32(&c, BAR0 as u64),
            0xfe00_0000 & !(BAR0_SIZE as u32 - 1)
        );
    }

    #[test]
    fn ids_are_read_only_and_out_of_range_is_refused() {
        let mut c = ConfigSpace::new();
        assert!(c.write(0, &[0xff; 4]));
        assert_eq!(c.ids(), (VENDOR_ID, DEVICE_ID));
        assert!(c.write(COMMAND as u64, &[0xff, 0xff]));
        assert_eq!(c.bytes[COMMAND], 0x07);
        assert!(!c.write(255, &[0; 2]));
        assert!(!c.read(u64::MAX, &mut [0; 1]));
    }
}
