//! The virtual server configuration: what the guest reads instead of BIOS and ACPI tables
//! (the paper, 4.1). The VMM encodes it with [`encode`]; the guest reads it with the
//! `ConfigRead` call and parses it with [`Config::parse`], which checks every offset and
//! count, so a guest never trusts a malformed table and the VMM's encoder is tested
//! against the same parser.
//!
//! Layout: a [`ConfigHeader`], then arrays of [`NodeDesc`], [`VpDesc`], [`MemRange`],
//! [`DeviceDesc`] at the offsets the header gives, then the command line (bytes, no NUL).
//!
//! ```
//! use vima::config::*;
//! let nodes = [NodeDesc { node_id: 0, flags: 0 }];
//! let vps = [VpDesc { vp_id: 0, node_id: 0, flags: 0, reserved: 0 }];
//! let mem = [MemRange { base: 0, size: 16 << 20, node_id: 0, flags: 0 }];
//! let mut buf = [0u8; 512];
//! let input = ConfigInput { epoch: 0, tsc_khz: 2_000_000, logical_bytes: 16 << 20, nodes: &nodes,
//!     vps: &vps, mem_ranges: &mem, devices: &[], cmdline: b"hello" };
//! let len = encode(&input, &mut buf).unwrap();
//! let config = Config::parse(&buf[..len]).unwrap();
//! assert_eq!(config.cmdline(), b"hello");
//! assert_eq!(config.vp(0).unwrap().node_id, 0);
//! ```

use bytemuck::{Pod, Zeroable};

use crate::layout::{MAX_NODES, MAX_VPS, PAGE_SIZE};

/// `"VIMA"` little-endian.
pub const CONFIG_MAGIC: u32 = 0x414d_4956;
/// The layout version this crate reads and writes (2: VP flags and the epoch).
pub const CONFIG_VERSION: u32 = 2;
/// [`VpDesc::flags`]: the VP is offline in this configuration (hot-removed, paper 4.10):
/// the guest moves its threads away and parks it with `ConfigAck`.
pub const VP_OFFLINE: u32 = 1;
/// Longest command line.
pub const MAX_CMDLINE: usize = 1024;
/// Most memory ranges.
pub const MAX_MEM_RANGES: usize = 64;
/// Most devices.
pub const MAX_DEVICES: usize = 32;

/// Fixed-size start of the configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ConfigHeader {
    /// [`CONFIG_MAGIC`].
    pub magic: u32,
    /// [`CONFIG_VERSION`].
    pub version: u32,
    /// Bytes of the whole configuration.
    pub total_size: u32,
    /// Entries in the node array.
    pub node_count: u32,
    /// Entries in the VP array.
    pub vp_count: u32,
    /// Entries in the memory range array.
    pub mem_range_count: u32,
    /// Entries in the device array.
    pub device_count: u32,
    /// Bytes of command line.
    pub cmdline_len: u32,
    /// Time stamp counter frequency in kHz (the guest times with `rdtsc`).
    pub tsc_khz: u64,
    /// Bytes of logical memory: valid logical addresses are below this.
    pub logical_bytes: u64,
    /// Offset of the node array.
    pub nodes_offset: u32,
    /// Offset of the VP array.
    pub vps_offset: u32,
    /// Offset of the memory range array.
    pub mem_ranges_offset: u32,
    /// Offset of the device array.
    pub devices_offset: u32,
    /// Offset of the command line.
    pub cmdline_offset: u32,
    /// The configuration epoch: 0 at boot, one more at every configuration change. The
    /// guest acknowledges the epoch it applied (`ConfigAck`).
    pub epoch: u32,
}

/// One node of the virtual computer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeDesc {
    /// Node id (0..MAX_NODES).
    pub node_id: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// One virtual processor and the node it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VpDesc {
    /// VP id: VP ids are `0..vp_count`, in order.
    pub vp_id: u32,
    /// The node whose host runs this VP.
    pub node_id: u32,
    /// [`VP_OFFLINE`] or 0.
    pub flags: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

impl VpDesc {
    /// True when the VP takes part in this configuration.
    pub const fn is_online(&self) -> bool {
        self.flags & VP_OFFLINE == 0
    }
}

/// A range of logical memory whose home is one node (the NUMA view, paper 4.9.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MemRange {
    /// First logical address (page aligned).
    pub base: u64,
    /// Bytes (page aligned, not 0).
    pub size: u64,
    /// Home node.
    pub node_id: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// Kinds of virtual device.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The console (VCON); served by the `ConsoleWrite` call.
    Console = 1,
}

/// One virtual device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DeviceDesc {
    /// A [`DeviceKind`] value.
    pub kind: u32,
    /// Device id, unique per kind.
    pub device_id: u32,
    /// The node that serves the device.
    pub node_id: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// Why a configuration could not be encoded or parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The buffer is shorter than the configuration.
    Truncated,
    /// The magic number is wrong.
    BadMagic,
    /// The version is not [`CONFIG_VERSION`].
    BadVersion,
    /// An array or the command line lies outside the configuration.
    BadOffset,
    /// A count exceeds its maximum, or is 0 where at least one entry is needed.
    BadCount,
    /// VP ids are not `0..vp_count` in order, a VP names an unknown node or has unknown
    /// flags, or no VP is online.
    BadVp,
    /// Node ids are not distinct and below [`MAX_NODES`].
    BadNode,
    /// A memory range is not page aligned, empty, overlaps another, ends past logical
    /// memory, or names an unknown node.
    BadMemRange,
}

/// What [`encode`] writes.
#[derive(Clone, Copy, Debug)]
pub struct ConfigInput<'a> {
    /// See [`ConfigHeader::epoch`].
    pub epoch: u32,
    /// See [`ConfigHeader::tsc_khz`].
    pub tsc_khz: u64,
    /// See [`ConfigHeader::logical_bytes`].
    pub logical_bytes: u64,
    /// Nodes.
    pub nodes: &'a [NodeDesc],
    /// VPs, in id order.
    pub vps: &'a [VpDesc],
    /// Memory ranges.
    pub mem_ranges: &'a [MemRange],
    /// Devices.
    pub devices: &'a [DeviceDesc],
    /// Command line.
    pub cmdline: &'a [u8],
}

const HEADER_BYTES: usize = core::mem::size_of::<ConfigHeader>();

fn array_end(offset: usize, count: usize, size: usize) -> Option<usize> {
    count.checked_mul(size)?.checked_add(offset)
}

fn to_u32(value: usize) -> Result<u32, ConfigError> {
    u32::try_from(value).map_err(|_| ConfigError::BadCount)
}

fn put<T: Pod>(buf: &mut [u8], offset: usize, items: &[T]) {
    let bytes: &[u8] = bytemuck::cast_slice(items);
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Encodes `input` into `buf`, returning the bytes written. The result is checked with
/// [`Config::parse`] before it is returned, so the VMM never hands out a table the guest
/// would reject.
pub fn encode(input: &ConfigInput<'_>, buf: &mut [u8]) -> Result<usize, ConfigError> {
    let nodes_offset = HEADER_BYTES;
    let vps_offset = nodes_offset + core::mem::size_of_val(input.nodes);
    let mem_ranges_offset = vps_offset + core::mem::size_of_val(input.vps);
    let devices_offset = mem_ranges_offset + core::mem::size_of_val(input.mem_ranges);
    let cmdline_offset = devices_offset + core::mem::size_of_val(input.devices);
    let total = cmdline_offset + input.cmdline.len();
    if buf.len() < total {
        return Err(ConfigError::Truncated);
    }
    let header = ConfigHeader {
        magic: CONFIG_MAGIC,
        version: CONFIG_VERSION,
        total_size: to_u32(total)?,
        node_count: to_u32(input.nodes.len())?,
        vp_count: to_u32(input.vps.len())?,
        mem_range_count: to_u32(input.mem_ranges.len())?,
        device_count: to_u32(input.devices.len())?,
        cmdline_len: to_u32(input.cmdline.len())?,
        tsc_khz: input.tsc_khz,
        logical_bytes: input.logical_bytes,
        nodes_offset: to_u32(nodes_offset)?,
        vps_offset: to_u32(vps_offset)?,
        mem_ranges_offset: to_u32(mem_ranges_offset)?,
        devices_offset: to_u32(devices_offset)?,
        cmdline_offset: to_u32(cmdline_offset)?,
        epoch: input.epoch,
    };
    put(buf, 0, core::slice::from_ref(&header));
    put(buf, nodes_offset, input.nodes);
    put(buf, vps_offset, input.vps);
    put(buf, mem_ranges_offset, input.mem_ranges);
    put(buf, devices_offset, input.devices);
    buf[cmdline_offset..total].copy_from_slice(input.cmdline);
    Config::parse(&buf[..total])?;
    Ok(total)
}

/// A parsed, checked configuration borrowing its bytes. Entries are read unaligned, so
/// any byte buffer works.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    bytes: &'a [u8],
    header: ConfigHeader,
}

impl<'a> Config<'a> {
    /// Parses and checks a configuration.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ConfigError> {
        let head = bytes.get(..HEADER_BYTES).ok_or(ConfigError::Truncated)?;
        let header: ConfigHeader = bytemuck::pod_read_unaligned(head);
        if header.magic != CONFIG_MAGIC {
            return Err(ConfigError::BadMagic);
        }
        if header.version != CONFIG_VERSION {
            return Err(ConfigError::BadVersion);
        }
        let total = header.total_size as usize;
        if total > bytes.len() {
            return Err(ConfigError::Truncated);
        }
        let counts_ok = (1..=MAX_NODES).contains(&(header.node_count as usize))
            && (1..=MAX_VPS).contains(&(header.vp_count as usize))
            && (1..=MAX_MEM_RANGES).contains(&(header.mem_range_count as usize))
            && header.device_count as usize <= MAX_DEVICES
            && header.cmdline_len as usize <= MAX_CMDLINE;
        if !counts_ok {
            return Err(ConfigError::BadCount);
        }
        let arrays = [
            (
                header.nodes_offset,
                header.node_count,
                core::mem::size_of::<NodeDesc>(),
            ),
            (
                header.vps_offset,
                header.vp_count,
                core::mem::size_of::<VpDesc>(),
            ),
            (
                header.mem_ranges_offset,
                header.mem_range_count,
                core::mem::size_of::<MemRange>(),
            ),
            (
                header.devices_offset,
                header.device_count,
                core::mem::size_of::<DeviceDesc>(),
            ),
            (header.cmdline_offset, header.cmdline_len, 1),
        ];
        for (offset, count, size) in arrays {
            let end =
                array_end(offset as usize, count as usize, size).ok_or(ConfigError::BadOffset)?;
            if (offset as usize) < HEADER_BYTES || end > total {
                return Err(ConfigError::BadOffset);
            }
        }
        let config = Config {
            bytes: &bytes[..total],
            header,
        };
        config.check_entries()?;
        Ok(config)
    }

    fn check_entries(&self) -> Result<(), ConfigError> {
        let mut seen = [false; MAX_NODES];
        for node in self.nodes() {
            let id = node.node_id as usize;
            if id >= MAX_NODES || seen[id] {
                return Err(ConfigError::BadNode);
            }
            seen[id] = true;
        }
        let known = |id: u32| (id as usize) < MAX_NODES && seen[id as usize];
        for (index, vp) in self.vps().enumerate() {
            let flags_known = vp.flags & !VP_OFFLINE == 0 && vp.reserved == 0;
            if vp.vp_id as usize != index || !known(vp.node_id) || !flags_known {
                return Err(ConfigError::BadVp);
            }
        }
        if !self.vps().any(|vp| vp.is_online()) {
            return Err(ConfigError::BadVp);
        }
        let logical = self.header.logical_bytes;
        for (index, range) in self.mem_ranges().enumerate() {
            let end = range
                .base
                .checked_add(range.size)
                .ok_or(ConfigError::BadMemRange)?;
            let aligned = range.base % PAGE_SIZE == 0 && range.size % PAGE_SIZE == 0;
            if !aligned || range.size == 0 || end > logical || !known(range.node_id) {
                return Err(ConfigError::BadMemRange);
            }
            let overlaps = self
                .mem_ranges()
                .take(index)
                .any(|other| range.base < other.base + other.size && other.base < end);
            if overlaps {
                return Err(ConfigError::BadMemRange);
            }
        }
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> &ConfigHeader {
        &self.header
    }

    fn entry<T: Pod>(&self, offset: u32, count: u32, index: usize) -> Option<T> {
        if index >= count as usize {
            return None;
        }
        let size = core::mem::size_of::<T>();
        let start = offset as usize + index * size;
        Some(bytemuck::pod_read_unaligned(
            &self.bytes[start..start + size],
        ))
    }

    /// Node `index` of the node array.
    pub fn node(&self, index: usize) -> Option<NodeDesc> {
        self.entry(self.header.nodes_offset, self.header.node_count, index)
    }
    /// VP `vp`.
    pub fn vp(&self, vp: usize) -> Option<VpDesc> {
        self.entry(self.header.vps_offset, self.header.vp_count, vp)
    }
    /// Memory range `index`.
    pub fn mem_range(&self, index: usize) -> Option<MemRange> {
        self.entry(
            self.header.mem_ranges_offset,
            self.header.mem_range_count,
            index,
        )
    }
    /// Device `index`.
    pub fn device(&self, index: usize) -> Option<DeviceDesc> {
        self.entry(self.header.devices_offset, self.header.device_count, index)
    }
    /// All nodes.
    pub fn nodes(&self) -> impl Iterator<Item = NodeDesc> + '_ {
        (0..self.header.node_count as usize).filter_map(|i| self.node(i))
    }
    /// All VPs, in id order.
    pub fn vps(&self) -> impl Iterator<Item = VpDesc> + '_ {
        (0..self.header.vp_count as usize).filter_map(|i| self.vp(i))
    }
    /// All memory ranges.
    pub fn mem_ranges(&self) -> impl Iterator<Item = MemRange> + '_ {
        (0..self.header.mem_range_count as usize).filter_map(|i| self.mem_range(i))
    }
    /// All devices.
    pub fn devices(&self) -> impl Iterator<Item = DeviceDesc> + '_ {
        (0..self.header.device_count as usize).filter_map(|i| self.device(i))
    }
    /// Number of VPs.
    pub fn vp_count(&self) -> usize {
        self.header.vp_count as usize
    }
    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.header.node_count as usize
    }
    /// The command line.
    pub fn cmdline(&self) -> &'a [u8] {
        let start = self.header.cmdline_offset as usize;
        &self.bytes[start..start + self.header.cmdline_len as usize]
    }
    /// The home node of logical address `addr`, if a range covers it.
    pub fn home_of(&self, addr: u64) -> Option<u32> {
        self.mem_ranges()
            .find(|r| addr >= r.base && addr - r.base < r.size)
            .map(|r| r.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(buf: &mut [u8]) -> usize {
        let nodes = [
            NodeDesc {
                node_id: 0,
                flags: 0,
            },
            NodeDesc {
                node_id: 1,
                flags: 0,
            },
        ];
        let vps = [
            VpDesc {
                vp_id: 0,
                node_id: 0,
                ..VpDesc::default()
            },
            VpDesc {
                vp_id: 1,
                node_id: 1,
                ..VpDesc::default()
            },
            VpDesc {
                vp_id: 2,
                node_id: 1,
                ..VpDesc::default()
            },
        ];
        let mem = [
            MemRange {
                base: 0,
                size: 16 << 20,
                node_id: 0,
                flags: 0,
            },
            MemRange {
                base: 16 << 20,
                size: 16 << 20,
                node_id: 1,
                flags: 0,
            },
        ];
        let devices = [DeviceDesc {
            kind: DeviceKind::Console as u32,
            device_id: 0,
            node_id: 0,
            flags: 0,
        }];
        let input = ConfigInput {
            epoch: 3,
            tsc_khz: 2_500_000,
            logical_bytes: 32 << 20,
            nodes: &nodes,
            vps: &vps,
            mem_ranges: &mem,
            devices: &devices,
            cmdline: b"matmul 64",
        };
        encode(&input, buf).unwrap()
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 1024];
        let len = sample(&mut buf);
        let header_size = core::mem::size_of::<ConfigHeader>();
        assert_eq!(len, header_size + 2 * 8 + 3 * 16 + 2 * 24 + 16 + 9);
        let config = Config::parse(&buf[..len]).unwrap();
        assert_eq!(config.vp_count(), 3);
        assert_eq!(config.node_count(), 2);
        assert_eq!(
            config.vp(2),
            Some(VpDesc {
                vp_id: 2,
                node_id: 1,
                ..VpDesc::default()
            })
        );
        assert_eq!(config.vp(3), None);
        assert_eq!(config.home_of(0x20_0000), Some(0));
        assert_eq!(config.home_of(16 << 20), Some(1));
        assert_eq!(config.home_of(32 << 20), None);
        assert_eq!(config.cmdline(), b"matmul 64");
        assert_eq!(config.header().tsc_khz, 2_500_000);
        assert_eq!(config.header().epoch, 3);
        assert_eq!(config.devices().count(), 1);
    }

    /// Patches VP `vp`'s flags in an encoded table.
    fn set_vp_flags(buf: &mut [u8], vp: usize, flags: u32) {
        let header: ConfigHeader = bytemuck::pod_read_unaligned(&buf[..HEADER_BYTES]);
        let at = header.vps_offset as usize + vp * core::mem::size_of::<VpDesc>() + 8;
        buf[at..at + 4].copy_from_slice(&flags.to_le_bytes());
    }

    #[test]
    fn offline_vps_are_read_and_an_all_offline_table_is_refused() {
        let mut buf = [0u8; 1024];
        let len = sample(&mut buf);
        set_vp_flags(&mut buf, 2, VP_OFFLINE);
        let config = Config::parse(&buf[..len]).unwrap();
        let mut online = [true; 3];
        for (slot, vp) in online.iter_mut().zip(config.vps()) {
            *slot = vp.is_online();
        }
        assert_eq!(online, [true, true, false]);
        set_vp_flags(&mut buf, 1, 0x80);
        assert_eq!(Config::parse(&buf[..len]).err(), Some(ConfigError::BadVp));
        for vp in 0..3 {
            set_vp_flags(&mut buf, vp, VP_OFFLINE);
        }
        assert_eq!(Config::parse(&buf[..len]).err(), Some(ConfigError::BadVp));
    }

    #[test]
    fn parses_unaligned_buffers() {
        let mut buf = [0u8; 1024];
        let len = sample(&mut buf);
        let mut shifted = [0u8; 1025];
        shifted[1..=len].copy_from_slice(&buf[..len]);
        let config = Config::parse(&shifted[1..=len]).unwrap();
        assert_eq!(
            config.vp(1),
            Some(VpDesc {
                vp_id: 1,
                node_id: 1,
                ..VpDesc::default()
            })
        );
    }

    #[test]
    fn rejects_bad_tables() {
        let mut buf = [0u8; 1024];
        let len = sample(&mut buf);
        assert_eq!(
            Config::parse(&buf[..len - 1]).unwrap_err(),
            ConfigError::Truncated
        );
        let mut bad = buf;
        bad[0] ^= 1;
        assert_eq!(
            Config::parse(&bad[..len]).unwrap_err(),
            ConfigError::BadMagic
        );
        let mut bad = buf;
        bad[4] = 9;
        assert_eq!(
            Config::parse(&bad[..len]).unwrap_err(),
            ConfigError::BadVersion
        );
        // VP 1 claims node 7, which is not in the node array.
        let mut bad = buf;
        let vps =
            bytemuck::pod_read_unaligned::<ConfigHeader>(&buf[..HEADER_BYTES]).vps_offset as usize;
        bad[vps + 12] = 7;
        assert_eq!(Config::parse(&bad[..len]).unwrap_err(), ConfigError::BadVp);
        // The command line offset points past the end.
        let mut bad = buf;
        bad[core::mem::offset_of!(ConfigHeader, cmdline_offset)] = 0xff;
        assert_eq!(
            Config::parse(&bad[..len]).unwrap_err(),
            ConfigError::BadOffset
        );
    }

    #[test]
    fn rejects_overlapping_ranges() {
        let nodes = [NodeDesc {
            node_id: 0,
            flags: 0,
        }];
        let vps = [VpDesc {
            vp_id: 0,
            node_id: 0,
            ..VpDesc::default()
        }];
        let mem = [
            MemRange {
                base: 0,
                size: 8 << 20,
                node_id: 0,
                flags: 0,
            },
            MemRange {
                base: 4 << 20,
                size: 8 << 20,
                node_id: 0,
                flags: 0,
            },
        ];
        let input = ConfigInput {
            epoch: 0,
            tsc_khz: 1,
            logical_bytes: 16 << 20,
            nodes: &nodes,
            vps: &vps,
            mem_ranges: &mem,
            devices: &[],
            cmdline: b"",
        };
        let mut buf = [0u8; 512];
        assert_eq!(
            encode(&input, &mut buf).unwrap_err(),
            ConfigError::BadMemRange
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Config::parse(&bytes);
        }

        #[test]
        fn corrupting_one_byte_never_panics(index in 0usize..200, value in any::<u8>()) {
            let mut buf = [0u8; 1024];
            let len = sample(&mut buf);
            buf[index % len] = value;
            if let Ok(config) = Config::parse(&buf[..len]) {
                prop_assert!(config.vps().count() == config.vp_count());
            }
        }
    }
}
