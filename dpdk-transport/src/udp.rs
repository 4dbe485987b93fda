//! The kernel UDP backend: plain Ethernet, always built.
//!
//! One non-blocking `UdpSocket` plus an eventfd. `recv_from` first tries the socket (a
//! busy peer usually has a datagram waiting, which saves the `ppoll`), then sleeps in
//! `ppoll` on both descriptors with nanosecond resolution: millisecond `poll` timeouts
//! would round a 1 ms retransmission timer up to 2 ms. The eventfd is how
//! [`Datagram::interrupt`] wakes the driver. `recvmmsg` batching was not adopted: the
//! driver handles one datagram per wake-up in the request/response traffic the VMM
//! produces, so a batch would hold one datagram (see the crate docs).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::datagram::{Datagram, DatagramError};

/// Socket buffer size asked for, so a burst of page-sized datagrams (a full send window
/// towards several peers) is not dropped by the kernel before the driver reads it.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// A kernel UDP endpoint.
#[derive(Debug)]
pub struct UdpDatagram {
    socket: UdpSocket,
    wake: OwnedFd,
    local: SocketAddr,
}

fn set_buffer(
    socket: &UdpSocket,
    option: libc::c_int,
    what: &'static str,
) -> Result<(), DatagramError> {
    let value = SOCKET_BUFFER_BYTES;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .expect("size of c_int fits socklen_t");
    // SAFETY: the fd is a valid socket owned by `socket`; `value` lives across the call
    // and `len` is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc != 0 {
        return Err(DatagramError::Configure {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl UdpDatagram {
    /// Binds a UDP socket to `addr` (port 0 picks a free port; see
    /// [`Datagram::local_addr`]).
    pub fn bind(addr: SocketAddr) -> Result<Self, DatagramError> {
        let socket = UdpSocket::bind(addr).map_err(|source| DatagramError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| DatagramError::Configure {
                what: "non-blocking mode",
                source,
            })?;
        set_buffer(&socket, libc::SO_RCVBUF, "receive buffer")?;
        set_buffer(&socket, libc::SO_SNDBUF, "send buffer")?;
        let local = socket
            .local_addr()
            .map_err(|source| DatagramError::Configure {
                what: "local address",
                source,
            })?;
        // SAFETY: eventfd has no memory arguments; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(DatagramError::Configure {
                what: "wake-up eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            socket,
            wake,
            local,
        })
    }

    /// Empties the eventfd; true if it had been signalled.
    fn drain_wake(&self) -> bool {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into `value`, which is 8 bytes long; the fd is ours.
        let rc = unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                std::ptr::from_mut(&mut value).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        rc == 8
    }

    /// Sleeps until the socket is readable, the eventfd is signalled, `ready` (if any) is
    /// readable or `wait` passes. Returns true when woken by the eventfd or `ready`.
    fn wait_readable(
        &self,
        wait: Duration,
        ready: Option<BorrowedFd<'_>>,
    ) -> Result<bool, DatagramError> {
        let pollfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            pollfd(self.socket.as_raw_fd()),
            pollfd(self.wake.as_raw_fd()),
            pollfd(ready.map_or(-1, |fd| fd.as_raw_fd())),
        ];
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(wait.subsec_nanos()),
        };
        // SAFETY: `fds` is a valid array of 3 pollfd for the duration of the call (a
        // negative fd is ignored by ppoll), the timeout is a valid timespec and the signal
        // mask pointer may be null.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, &timeout, std::ptr::null()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(DatagramError::Recv(err));
        }
        let woken = fds[1].revents & libc::POLLIN != 0 && self.drain_wake();
        Ok(woken || fds[2].revents & libc::POLLIN != 0)
    }

    fn recv_until(
        &self,
        buf: &mut [u8],
        wait: Duration,
        ready: Option<BorrowedFd<'_>>,
    ) -> Result<Option<(usize, SocketAddr)>, DatagramError> {
        let mut deadline: Option<Instant> = None;
        loop {
            match self.socket.recv_from(buf) {
                Ok((len, from)) => return Ok(Some((len, from))),
                Err(err) => match err.kind() {
                    io::ErrorKind::WouldBlock => {}
                    // An ICMP error for an earlier send: not about this receive.
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused => continue,
                    _ => return Err(DatagramError::Recv(err)),
                },
            }
            if wait.is_zero() {
                return Ok(None);
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + wait);
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() || self.wait_readable(remaining, ready)? {
                return Ok(None);
            }
        }
    }
}

impl Datagram for UdpDatagram {
    type Addr = SocketAddr;

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn send_to(&self, packet: &[u8], to: SocketAddr) -> Result<(), DatagramError> {
        loop {
            match self.socket.send_to(packet, to) {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(DatagramError::Send(err)),
            }
        }
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Result<Option<(usize, SocketAddr)>, DatagramError> {
        self.recv_until(buf, wait, None)
    }

    fn recv_from_or_ready(
        &self,
        buf: &mut [u8],
        wait: Duration,
        ready: BorrowedFd<'_>,
    ) -> Result<Option<(usize, SocketAddr)>, DatagramError> {
        self.recv_until(buf, wait, Some(ready))
    }

    fn interrupt(&self) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one` to our eventfd. A full counter (EAGAIN)
        // means a wake-up is already pending, which is all we want.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                std::ptr::from_ref(&one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> UdpDatagram {
        UdpDatagram::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn sends_and_receives_one_datagram() {
        let a = loopback();
        let b = loopback();
        a.send_to(b"hello", b.local_addr()).unwrap();
        let mut buf = [0u8; 16];
        let got = b.recv_from(&mut buf, Duration::from_secs(10)).unwrap();
        assert_eq!(got, Some((5, a.local_addr())));
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn zero_wait_does_not_block() {
        let a = loopback();
        let mut buf = [0u8; 16];
        assert_eq!(a.recv_from(&mut buf, Duration::ZERO).unwrap(), None);
    }

    #[test]
    fn interrupt_ends_a_wait_and_is_consumed() {
        let a = loopback();
        a.interrupt();
        let mut buf = [0u8; 16];
        // Would wait an hour without the interrupt.
        assert_eq!(
            a.recv_from(&mut buf, Duration::from_secs(3600)).unwrap(),
            None
        );
        // Consumed: a pending datagram is returned by the next call.
        a.send_to(b"x", a.local_addr()).unwrap();
        assert_eq!(
            a.recv_from(&mut buf, Duration::from_secs(10)).unwrap(),
            Some((1, a.local_addr()))
        );
    }

    #[test]
    fn oversize_datagrams_are_clipped_to_the_buffer() {
        let a = loopback();
        a.send_to(&[7u8; 100], a.local_addr()).unwrap();
        let mut buf = [0u8; 10];
        let got = a.recv_from(&mut buf, Duration::from_secs(10)).unwrap();
        assert_eq!(got.map(|(len, _)| len), Some(10));
    }
}
