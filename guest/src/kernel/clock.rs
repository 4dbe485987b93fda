//! The kernel's clock: the time stamp counter (guest TSC = host TSC, read natively at
//! CPL3) and the configuration's `tsc_khz` to convert it.

use crate::machine::kernel;

/// The time stamp counter.
pub fn tsc() -> u64 {
    // SAFETY: rdtsc only reads the counter; it runs natively at CPL3.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn khz() -> u128 {
    u128::from(kernel().config.header().tsc_khz.max(1))
}

/// `ticks` of the TSC in nanoseconds.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    u64::try_from(u128::from(ticks) * 1_000_000 / khz()).unwrap_or(u64::MAX)
}

/// `ns` nanoseconds in TSC ticks.
pub fn ns_to_tsc(ns: u64) -> u64 {
    u64::try_from(u128::from(ns) * khz() / 1_000_000).unwrap_or(u64::MAX)
}
