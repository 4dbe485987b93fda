//! The `File*` calls: a Linux program's read-only root (`--root DIR`,
//! [`crate::devices::root_fs`]), served on the node that has it (node 0). A host error
//! comes back as status `HostError` with the Linux errno, which the guest kernel gives
//! the program unchanged; a bad argument is a ViMA error as for every call.

use vima::call::{Call, UncheckedRange, FILE_PATH_MAX, FILE_READ_MAX};
use vima::Status;

use super::calls::Reply;
use crate::server::VirtualServer;

/// Serves `call` (one of the `File*` calls) with arguments `a`.
pub(super) fn handle(server: &VirtualServer, call: Call, a: &[u64; 5]) -> Result<Reply, Status> {
    let logical = server.logical_bytes;
    let Some(fs) = server.root_fs.as_ref() else {
        let errno = if call == Call::FileOpen {
            libc::ENOENT
        } else {
            libc::EBADF
        };
        return Ok(host_error(errno));
    };
    let len_of = |len: u64| -> Result<usize, Status> {
        if len > FILE_READ_MAX {
            return Err(Status::BadArgument);
        }
        Ok(usize::try_from(len).expect("bounded"))
    };
    let result = match call {
        Call::FileOpen => {
            if a[1] == 0 || a[1] > FILE_PATH_MAX {
                return Err(Status::BadArgument);
            }
            let range = UncheckedRange::new(a[0], a[1]).check(logical, 1)?;
            let path = server.read_guest(range)?;
            fs.open_path(&path, a[2] & vima::call::FILE_OPEN_NOFOLLOW != 0)
        }
        Call::FileStat => {
            let range = UncheckedRange::new(a[1], 144).check(logical, 1)?;
            fs.stat(a[0])
                .and_then(|st| write(server, range, &st).map(|()| 0))
        }
        Call::FileRead | Call::FileReadDir => {
            let len = len_of(a[3])?;
            let range = UncheckedRange::new(a[2], a[3]).check(logical, 1)?;
            let read = if call == Call::FileRead {
                fs.read(a[0], a[1], len)
            } else {
                fs.read_dir(a[0], a[1], len)
            };
            read.and_then(|bytes| read_into(server, range.addr(), &bytes))
        }
        Call::FileClose => fs.close(a[0]).map(|()| 0),
        Call::FileReadLink => {
            if a[2] > FILE_PATH_MAX {
                return Err(Status::BadArgument);
            }
            let range = UncheckedRange::new(a[1], a[2]).check(logical, 1)?;
            let len = usize::try_from(a[2]).expect("bounded");
            fs.read_link(a[0], len)
                .and_then(|bytes| read_into(server, range.addr(), &bytes))
        }
        _ => return Err(Status::UnknownCall),
    };
    Ok(match result {
        Ok(value) => Reply::Value(value),
        Err(errno) => host_error(errno),
    })
}

fn host_error(errno: i32) -> Reply {
    Reply::Failed(Status::HostError, u64::try_from(errno).unwrap_or(5))
}

fn write(server: &VirtualServer, range: vima::call::LogicalRange, bytes: &[u8]) -> Result<(), i32> {
    server.write_guest(range, bytes).map_err(|_| libc::EFAULT)
}

fn read_into(server: &VirtualServer, addr: u64, bytes: &[u8]) -> Result<u64, i32> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let range = UncheckedRange::new(addr, bytes.len() as u64)
        .check(server.logical_bytes, 1)
        .map_err(|_| libc::EFAULT)?;
    write(server, range, bytes)?;
    Ok(bytes.len() as u64)
}
