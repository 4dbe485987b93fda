//! Status codes returned in `rax` by every ViMA call.

/// The outcome of a ViMA call, returned in `rax`. `Ok` is 0; every other value names what
/// was wrong with the call. The numbers are ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The call did what it was asked.
    Ok = 0,
    /// `rax` held no known call number.
    UnknownCall = 1,
    /// A guest address argument lies outside logical memory, is misaligned, or the range
    /// overflows.
    BadAddress = 2,
    /// A VP id argument names no VP of this virtual server.
    BadVp = 3,
    /// An argument is out of its documented range (vector, length, mode...).
    BadArgument = 4,
    /// The VP asked to start is already running.
    VpBusy = 5,
    /// A blocking call returned because its timeout expired.
    TimedOut = 6,
    /// The call is valid but cannot be served in the current state (for example the
    /// virtual IDT was not registered yet).
    NotReady = 7,
    /// The host refused (a `File*` call): the value is the Linux errno, for the program.
    HostError = 8,
}

impl Status {
    /// Decodes a raw status; unknown values are `None`.
    pub fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => Self::Ok,
            1 => Self::UnknownCall,
            2 => Self::BadAddress,
            3 => Self::BadVp,
            4 => Self::BadArgument,
            5 => Self::VpBusy,
            6 => Self::TimedOut,
            7 => Self::NotReady,
            8 => Self::HostError,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_and_fixed_numbers() {
        // The numbers are ABI: pin them, not just their round trip.
        let fixed = [
            (Status::Ok, 0u64),
            (Status::UnknownCall, 1),
            (Status::BadAddress, 2),
            (Status::BadVp, 3),
            (Status::BadArgument, 4),
            (Status::VpBusy, 5),
            (Status::TimedOut, 6),
            (Status::NotReady, 7),
            (Status::HostError, 8),
        ];
        for (status, raw) in fixed {
            assert_eq!(status as u64, raw);
            assert_eq!(Status::from_raw(raw), Some(status));
        }
        assert_eq!(Status::from_raw(9), None);
        assert_eq!(Status::from_raw(u64::MAX), None);
    }
}
