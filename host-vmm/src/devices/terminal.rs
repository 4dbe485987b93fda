//! The terminal side of the console for a Linux program: `ioctl`s on `cvmm`'s own
//! standard streams (`TermIoctl`), so a program run from a terminal sees one (isatty,
//! line-buffered stdout, raw mode, the window size) and one run with redirected streams
//! gets ENOTTY, as on Linux. Only the requests of [`vima::call::term`] pass; the buffer
//! is a fixed-size copy, never a pointer the host follows.

use vima::call::term::{
    TCGETS, TCSETS, TCSETSF, TCSETSW, TERMIOS_BYTES, TIOCGWINSZ, WINSIZE_BYTES,
};

/// Bytes `request` moves, and whether they go to the terminal (a set) or come from it.
pub fn transfer(request: u64) -> Option<(usize, bool)> {
    // Both sizes are small constants.
    #[allow(clippy::cast_possible_truncation)]
    match request {
        TCGETS => Some((TERMIOS_BYTES as usize, false)),
        TCSETS | TCSETSW | TCSETSF => Some((TERMIOS_BYTES as usize, true)),
        TIOCGWINSZ => Some((WINSIZE_BYTES as usize, false)),
        _ => None,
    }
}

/// Performs `request` on this process's stream `stream` (0, 1, 2) with `buf` (exactly
/// [`transfer`]'s size); the errno on failure (ENOTTY for a stream that is not a
/// terminal, EBADF for another stream number).
pub fn ioctl(stream: u64, request: u64, buf: &mut [u8]) -> Result<(), i32> {
    let fd = match stream {
        0..=2 => i32::try_from(stream).map_err(|_| libc::EBADF)?,
        _ => return Err(libc::EBADF),
    };
    match transfer(request) {
        Some((len, _)) if len == buf.len() => {}
        _ => return Err(libc::EINVAL),
    }
    let request = libc::c_ulong::try_from(request).map_err(|_| libc::EINVAL)?;
    // SAFETY: `request` is one of the terminal ioctls above, each of which reads or
    // writes at most `buf.len()` bytes (the kernel's struct termios or struct winsize),
    // and `buf` is that long; the fd is one of this process's standard streams.
    let rc = unsafe { libc::ioctl(fd, request, buf.as_mut_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOTTY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_terminal_requests_pass_with_their_sizes() {
        assert_eq!(transfer(0x5401), Some((36, false)));
        assert_eq!(transfer(0x5404), Some((36, true)));
        assert_eq!(transfer(0x5413), Some((8, false)));
        assert_eq!(transfer(0x5414), None, "TIOCSWINSZ is not passed on");
        assert_eq!(transfer(0x541b), None, "FIONREAD is not passed on");
    }

    #[test]
    fn a_pipe_is_not_a_terminal_and_bad_arguments_are_refused() {
        let mut buf = [0u8; 36];
        assert_eq!(ioctl(3, TCGETS, &mut buf), Err(libc::EBADF));
        assert_eq!(ioctl(0, TCGETS, &mut buf[..8]), Err(libc::EINVAL));
        assert_eq!(ioctl(0, 0x541b, &mut buf), Err(libc::EINVAL));
    }
}
