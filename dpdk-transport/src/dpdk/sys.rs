//! The only unsafe code of the DPDK backend: hand-written declarations of the C shim
//! (`csrc/cvmm_dpdk.h`, keep the two in step) and of the three libdpdk functions called
//! directly, wrapped in types whose safe methods cannot break DPDK's rules.
//!
//! The rules, and which type keeps each:
//! - The EAL initialises once per process and everything else needs it: [`eal_init`] is
//!   only called by `eal.rs`, which enforces once; the other wrappers are reachable only
//!   through values (`Pool`, `Port`) that exist after a successful init.
//! - A port id names a configured and started port: [`Port`] values are made by
//!   [`Port::configure`] and handed out (by the datagram) only after [`Port::start`]
//!   succeeded; dropping one stops and closes the port.
//! - One queue is used by one thread at a time: [`Port`] holds a lock per direction, so
//!   [`Port::send`] and [`Port::recv_burst`] may be called from any thread.
//! - An mbuf is owned by exactly one [`Mbuf`], which frees it once.
//!
//! No bindgen (it needs libclang, which a fresh machine lacks): the surface is twenty
//! functions.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::Mutex;

use thiserror::Error;

use super::frame::MacAddr;

/// Counters the driver keeps for a port (`struct cvmm_dpdk_port_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortCounters {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Frames the hardware dropped because the receive queue was full.
    pub imissed: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Frames that failed to send.
    pub oerrors: u64,
    /// Receive buffer allocation failures.
    pub rx_nombuf: u64,
}

// Declared by hand from csrc/cvmm_dpdk.h (ours) and rte_eal.h / rte_log.h (DPDK 22.11).
extern "C" {
    fn cvmm_dpdk_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    fn cvmm_dpdk_pool_create(
        name: *const c_char,
        count: u32,
        data_room: u16,
        err: *mut c_int,
    ) -> *mut c_void;
    fn cvmm_dpdk_pool_free(pool: *mut c_void);
    fn cvmm_dpdk_port_by_name(name: *const c_char, port: *mut u16) -> c_int;
    fn cvmm_dpdk_port_configure(
        port: u16,
        pool: *mut c_void,
        mtu: u16,
        mac: *mut u8,
        mtu_out: *mut u16,
    ) -> c_int;
    fn cvmm_dpdk_port_start(port: u16) -> c_int;
    fn cvmm_dpdk_port_restart_async(port: u16) -> c_int;
    fn cvmm_dpdk_link_up(port: u16) -> c_int;
    fn cvmm_dpdk_port_close(port: u16);
    fn cvmm_dpdk_tx(
        port: u16,
        pool: *mut c_void,
        head: *const c_void,
        head_len: u32,
        body: *const c_void,
        body_len: u32,
    ) -> c_int;
    fn cvmm_dpdk_rx(port: u16, mbufs: *mut *mut c_void, max: u16) -> u16;
    fn cvmm_dpdk_mbuf_len(mbuf: *const c_void) -> u32;
    fn cvmm_dpdk_mbuf_read(mbuf: *const c_void, offset: u32, dst: *mut c_void, len: u32) -> u32;
    fn cvmm_dpdk_mbuf_free(mbuf: *mut c_void);
    fn cvmm_dpdk_port_stats(port: u16, out: *mut PortCounters) -> c_int;
    fn cvmm_dpdk_strerror(errnum: c_int) -> *const c_char;
    fn rte_eal_get_runtime_dir() -> *const c_char;
    fn rte_log_get_global_level() -> u32;
    fn rte_log_set_global_level(level: u32);
}

/// A failed DPDK call: its (positive) errno value and DPDK's text for it. DPDK's own
/// codes start at 1000, which `io::Error` would print as "Unknown error".
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{call} failed: {text} (errno {errno})")]
pub struct DpdkCallError {
    /// The function.
    pub call: &'static str,
    /// The errno value.
    pub errno: i32,
    /// DPDK's description.
    pub text: String,
}

fn strerror(errno: c_int) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated
    // string that stays valid at least until the next call on this thread; it is copied
    // at once.
    let text = unsafe { cvmm_dpdk_strerror(errno) };
    if text.is_null() {
        return format!("error {errno}");
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

fn check(call: &'static str, ret: c_int) -> Result<c_int, DpdkCallError> {
    if ret >= 0 {
        return Ok(ret);
    }
    let errno = ret.checked_neg().unwrap_or(c_int::MAX);
    Err(DpdkCallError {
        call,
        errno,
        text: strerror(errno),
    })
}

fn c_string(call: &'static str, text: &str) -> Result<CString, DpdkCallError> {
    CString::new(text).map_err(|_| DpdkCallError {
        call,
        errno: libc::EINVAL,
        text: format!("{text:?} contains a NUL byte"),
    })
}

/// Initialises the EAL with `args` (`args[0]` is the program name). Only `eal.rs` calls
/// this, once per process.
pub(super) fn eal_init(args: &[String]) -> Result<(), DpdkCallError> {
    let strings: Vec<CString> = args
        .iter()
        .map(|a| c_string("rte_eal_init", a))
        .collect::<Result<_, _>>()?;
    // The EAL permutes argv (getopt) and may keep pointers into it for the life of the
    // process, so the strings and the array are leaked on purpose (a few hundred bytes,
    // once per process).
    let mut argv: Vec<*mut c_char> = strings.into_iter().map(CString::into_raw).collect();
    argv.push(std::ptr::null_mut());
    let argv = argv.leak();
    let argc = c_int::try_from(argv.len() - 1).map_err(|_| DpdkCallError {
        call: "rte_eal_init",
        errno: libc::E2BIG,
        text: "too many arguments".into(),
    })?;
    // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL, all leaked
    // so they outlive the EAL. The shim restores this thread's CPU affinity afterwards.
    let ret = unsafe { cvmm_dpdk_eal_init(argc, argv.as_mut_ptr()) };
    check("rte_eal_init", ret).map(drop)
}

/// The EAL's runtime directory (`/var/run/dpdk/<file-prefix>` for root).
pub(super) fn runtime_dir() -> Option<PathBuf> {
    // SAFETY: returns a pointer to a static NUL-terminated buffer of the EAL (empty
    // before init), copied at once.
    let dir = unsafe { rte_eal_get_runtime_dir() };
    if dir.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, per the EAL's contract.
    let text = unsafe { CStr::from_ptr(dir) }
        .to_string_lossy()
        .into_owned();
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Runs `f` with the EAL's log level lowered to critical: a memif client retrying
/// `start` while its server comes up would otherwise log an error per attempt.
pub(super) fn with_quiet_logs<T>(f: impl FnOnce() -> T) -> T {
    /// RTE_LOG_CRIT.
    const CRITICAL: u32 = 2;
    // SAFETY: plain getter and setter of an integer in the EAL; no pointers.
    let before = unsafe { rte_log_get_global_level() };
    // SAFETY: as above.
    unsafe { rte_log_set_global_level(CRITICAL.min(before)) };
    let out = f();
    // SAFETY: as above.
    unsafe { rte_log_set_global_level(before) };
    out
}

/// A pool of packet buffers.
pub struct Pool {
    raw: NonNull<c_void>,
    data_room: u16,
}

// SAFETY: a DPDK mempool is safe to use from any thread (its ring is multi-producer,
// multi-consumer and the pool has no per-lcore cache: see cvmm_dpdk_pool_create).
unsafe impl Send for Pool {}
// SAFETY: as above; all operations through &Pool are thread safe.
unsafe impl Sync for Pool {}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("data_room", &self.data_room)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `count` buffers of `data_room` bytes each. Needs an initialised EAL
    /// (`eal.rs` makes the only pool after init).
    pub(super) fn create(name: &str, count: u32, data_room: u16) -> Result<Self, DpdkCallError> {
        let cname = c_string("rte_pktmbuf_pool_create", name)?;
        let mut err: c_int = 0;
        // SAFETY: name is NUL-terminated and lives across the call; err is a valid int.
        let raw = unsafe { cvmm_dpdk_pool_create(cname.as_ptr(), count, data_room, &mut err) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw, data_room }),
            None => Err(check("rte_pktmbuf_pool_create", err.min(-1))
                .expect_err("a negative value is an error")),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the pool was created by cvmm_dpdk_pool_create and is freed once; the
        // ports that used it were dropped first (field order of the datagram) and every
        // Mbuf of it was freed before them.
        unsafe { cvmm_dpdk_pool_free(self.raw.as_ptr()) };
    }
}

/// What configuring a port found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The device name (`net_memif0`, a PCI address).
    pub name: String,
    /// The DPDK port id.
    pub id: u16,
    /// The port's own (burnt-in or driver-chosen) MAC.
    pub hw_mac: MacAddr,
    /// The MTU in force.
    pub mtu: u16,
}

/// A configured ethdev port with one RX and one TX queue.
pub struct Port {
    id: u16,
    tx: Mutex<()>,
    rx: Mutex<()>,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Port {
    /// Finds the device `name` (created by the EAL from `--vdev` or `-a`), configures
    /// it to receive into `pool` with an MTU of at most `mtu`.
    pub(super) fn configure(
        name: &str,
        pool: &Pool,
        mtu: u16,
    ) -> Result<(Self, PortInfo), DpdkCallError> {
        let cname = c_string("rte_eth_dev_get_port_by_name", name)?;
        let mut id: u16 = 0;
        // SAFETY: cname is NUL-terminated and id a valid u16, both live across the call.
        check("rte_eth_dev_get_port_by_name", unsafe {
            cvmm_dpdk_port_by_name(cname.as_ptr(), &mut id)
        })?;
        let mut mac = [0u8; 6];
        let mut mtu_out: u16 = 0;
        // SAFETY: id names an existing port (just looked up); pool is a live pool;
        // mac has the 6 bytes the shim writes, mtu_out is a valid u16.
        check("configuring the port", unsafe {
            cvmm_dpdk_port_configure(id, pool.raw.as_ptr(), mtu, mac.as_mut_ptr(), &mut mtu_out)
        })?;
        let port = Self {
            id,
            tx: Mutex::new(()),
            rx: Mutex::new(()),
        };
        let info = PortInfo {
            name: name.to_string(),
            id,
            hw_mac: MacAddr(mac),
            mtu: mtu_out,
        };
        Ok((port, info))
    }

    /// Starts the port (a memif client fails while its server is not listening).
    pub(super) fn start(&self) -> Result<(), DpdkCallError> {
        // SAFETY: the port is configured (Port::configure made self).
        check("rte_eth_dev_start", unsafe {
            cvmm_dpdk_port_start(self.id)
        })
        .map(drop)
    }

    /// Has the EAL's interrupt thread stop and start the port if its link is still down
    /// (a memif client whose first connection was refused retries only on start). Not
    /// done from this thread: memif runs its handshake in the interrupt thread, and a
    /// concurrent stop frees the control channel under it.
    pub(super) fn restart_soon(&self) -> Result<(), DpdkCallError> {
        // SAFETY: the port is configured; the alarm callback only calls ethdev functions
        // on this port id, which stays valid until the port is closed, and closing waits
        // for nothing the alarm holds; closing the port cancels a pending alarm and waits
        // for a running one.
        check("rte_eal_alarm_set", unsafe {
            cvmm_dpdk_port_restart_async(self.id)
        })
        .map(drop)
    }

    /// True when the link is up.
    pub fn link_up(&self) -> bool {
        // SAFETY: the port exists; link_get_nowait only reads the device's link state.
        unsafe { cvmm_dpdk_link_up(self.id) == 1 }
    }

    /// The driver's counters (zeros if it has none).
    pub fn counters(&self) -> PortCounters {
        let mut out = PortCounters::default();
        // SAFETY: the port exists; out is a valid struct of the layout the shim writes
        // (repr(C), six u64 as in cvmm_dpdk.h).
        let _ = unsafe { cvmm_dpdk_port_stats(self.id, &mut out) };
        out
    }

    /// Sends `head` then `body` as one frame. `Ok(false)`: dropped (queue full or no
    /// free buffer). Only for started ports (the datagram holds no other).
    pub fn send(&self, pool: &Pool, head: &[u8], body: &[u8]) -> Result<bool, DpdkCallError> {
        let too_long = || DpdkCallError {
            call: "rte_eth_tx_burst",
            errno: libc::EMSGSIZE,
            text: "frame larger than a buffer".into(),
        };
        let head_len = u32::try_from(head.len()).map_err(|_| too_long())?;
        let body_len = u32::try_from(body.len()).map_err(|_| too_long())?;
        let _queue = self.tx.lock().expect("tx queue lock poisoned");
        // SAFETY: the port is started and its TX queue 0 is used by this thread alone
        // (the lock above); pool is live; head and body are valid for their lengths and
        // only read (copied into an mbuf before the call returns).
        let ret = unsafe {
            cvmm_dpdk_tx(
                self.id,
                pool.raw.as_ptr(),
                head.as_ptr().cast(),
                head_len,
                body.as_ptr().cast(),
                body_len,
            )
        };
        check("rte_eth_tx_burst", ret).map(|sent| sent == 1)
    }

    /// Receives what the port has (at most 32 frames) and appends it to `out`; returns
    /// how many came. Only for started ports.
    pub fn recv_burst(&self, out: &mut Vec<Mbuf>) -> usize {
        const BURST_U16: u16 = 32;
        const BURST: usize = BURST_U16 as usize;
        let mut raw = [std::ptr::null_mut::<c_void>(); BURST];
        let _queue = self.rx.lock().expect("rx queue lock poisoned");
        // SAFETY: the port is started and its RX queue 0 is used by this thread alone
        // (the lock above); raw has room for BURST pointers.
        let got = unsafe { cvmm_dpdk_rx(self.id, raw.as_mut_ptr(), BURST_U16) };
        let got = usize::from(got).min(BURST);
        out.extend(raw[..got].iter().filter_map(|&p| NonNull::new(p)).map(Mbuf));
        got
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // memif's close hands the EAL a MAC address it did not allocate, which the EAL
        // refuses to free with an "Invalid memory" error line (DPDK 22.11): harmless,
        // so not shown.
        with_quiet_logs(|| {
            // SAFETY: stops and closes the port once; no other thread uses it any more
            // (dropping needs exclusive ownership).
            unsafe { cvmm_dpdk_port_close(self.id) };
        });
    }
}

/// A received frame, owned: freed when dropped.
pub struct Mbuf(NonNull<c_void>);

// SAFETY: an mbuf is memory of a pool that any thread may free into (see Pool); it is
// owned by this value alone.
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.frame_len())
            .finish()
    }
}

impl Mbuf {
    /// The frame's length (all segments).
    pub fn frame_len(&self) -> usize {
        // SAFETY: self owns a valid received mbuf.
        let len = unsafe { cvmm_dpdk_mbuf_len(self.0.as_ptr()) };
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// Copies frame bytes from `offset` into `dst` (as many as fit); returns how many.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> usize {
        let (Ok(offset), Ok(len)) = (u32::try_from(offset), u32::try_from(dst.len())) else {
            return 0;
        };
        // SAFETY: self owns a valid mbuf; dst is valid for writes of len bytes and the
        // shim writes at most that many.
        let copied =
            unsafe { cvmm_dpdk_mbuf_read(self.0.as_ptr(), offset, dst.as_mut_ptr().cast(), len) };
        usize::try_from(copied).unwrap_or(0).min(dst.len())
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and frees it exactly once.
        unsafe { cvmm_dpdk_mbuf_free(self.0.as_ptr()) };
    }
}
