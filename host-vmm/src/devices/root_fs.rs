//! `--root DIR`: a host directory as the Linux program's read-only `/`, served by node
//! 0's VMM through the `File*` ViMA calls (docs/vima.md, docs/linux-abi.md).
//!
//! Every path is opened with `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
//! the kernel resolves `..` and symbolic links (absolute ones too) as if DIR were `/`,
//! so no path the program gives reaches a host file outside DIR, and `/proc` magic links
//! are refused. Files are opened read-only; the program only ever gets handles (small
//! numbers into this table), never host descriptors. Errors are Linux errno values,
//! which the guest kernel hands to the program unchanged.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

/// Most files open at once.
pub const MAX_HANDLES: usize = 4096;
/// Longest path accepted (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Bytes of the Linux x86-64 `struct stat`.
pub const STAT_BYTES: usize = 144;

/// The root and the files the program has open in it.
#[derive(Debug)]
pub struct RootFs {
    root: OwnedFd,
    handles: Mutex<Vec<Option<OwnedFd>>>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl RootFs {
    /// Opens `dir` as the root.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(dir)?;
        if !file.metadata()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(Self {
            root: file.into(),
            handles: Mutex::new(Vec::new()),
        })
    }

    fn with<R>(&self, handle: u64, f: impl FnOnce(&OwnedFd) -> Result<R, i32>) -> Result<R, i32> {
        let handles = self.handles.lock().expect("root fs lock");
        let fd = usize::try_from(handle)
            .ok()
            .and_then(|h| handles.get(h))
            .and_then(Option::as_ref)
            .ok_or(libc::EBADF)?;
        f(fd)
    }

    /// Opens `path` (as the program names it; absolute or not, it is taken inside the
    /// root) read-only; returns its handle. `nofollow`: a final symbolic link is opened
    /// itself (`O_PATH | O_NOFOLLOW`: for `lstat`; it cannot be read).
    pub fn open_path(&self, path: &[u8], nofollow: bool) -> Result<u64, i32> {
        if path.len() > MAX_PATH || path.contains(&0) {
            return Err(libc::ENAMETOOLONG);
        }
        let relative = path.strip_prefix(b"/").unwrap_or(path);
        let mut c_path = if relative.is_empty() {
            b".".to_vec()
        } else {
            relative.to_vec()
        };
        c_path.push(0);
        // struct open_how (linux/openat2.h): flags, mode, resolve.
        let flags = if nofollow {
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC
        } else {
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY
        };
        let how: [u64; 3] = [
            u64::try_from(flags).unwrap_or(0),
            0,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        ];
        // SAFETY: the path is NUL-terminated and `how` is a valid open_how of the size
        // passed; the kernel only reads both.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                c_path.as_ptr(),
                how.as_ptr(),
                std::mem::size_of_val(&how),
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(|_| libc::EMFILE)?) };
        let mut handles = self.handles.lock().expect("root fs lock");
        let slot = match handles.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if handles.len() < MAX_HANDLES => {
                handles.push(None);
                handles.len() - 1
            }
            None => return Err(libc::EMFILE),
        };
        handles[slot] = Some(fd);
        Ok(slot as u64)
    }

    /// The Linux `struct stat` of an open file.
    pub fn stat(&self, handle: u64) -> Result<[u8; STAT_BYTES], i32> {
        const _: () = assert!(std::mem::size_of::<libc::stat>() == STAT_BYTES);
        self.with(handle, |fd| {
            let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
            // SAFETY: `st` has room for a struct stat; fstat only writes it.
            if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
                return Err(errno());
            }
            // SAFETY: fstat succeeded and filled it; it was zeroed before anyway.
            let st = unsafe { st.assume_init() };
            let mut bytes = [0u8; STAT_BYTES];
            // SAFETY: a struct stat is plain integers, STAT_BYTES long (checked above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    std::ptr::from_ref(&st).cast::<u8>(),
                    bytes.as_mut_ptr(),
                    STAT_BYTES,
                );
            }
            Ok(bytes)
        })
    }

    /// Up to `len` bytes at `offset` of an open file.
    pub fn read(&self, handle: u64, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.with(handle, |fd| {
            let mut buf = vec![0u8; len];
            let offset = i64::try_from(offset).map_err(|_| libc::EINVAL)?;
            // SAFETY: `buf` has `len` writable bytes.
            let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, offset) };
            if n < 0 {
                return Err(errno());
            }
            buf.truncate(usize::try_from(n).unwrap_or(0));
            Ok(buf)
        })
    }

    /// Directory entries (`linux_dirent64` records, as getdents64 returns them) from
    /// position `cookie` (0, or a `d_off` returned before), at most `len` bytes.
    pub fn read_dir(&self, handle: u64, cookie: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.with(handle, |fd| {
            let at = i64::try_from(cookie).map_err(|_| libc::EINVAL)?;
            // SAFETY: lseek on an owned descriptor (the table lock serialises users).
            if unsafe { libc::lseek(fd.as_raw_fd(), at, libc::SEEK_SET) } < 0 {
                return Err(errno());
            }
            let mut buf = vec![0u8; len];
            // SAFETY: `buf` has `len` writable bytes.
            let n = unsafe {
                libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), len)
            };
            if n < 0 {
                return Err(errno());
            }
            buf.truncate(usize::try_from(n).unwrap_or(0));
            Ok(buf)
        })
    }

    /// The target of a symbolic link opened with `nofollow`, at most `len` bytes.
    pub fn read_link(&self, handle: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.with(handle, |fd| {
            let mut buf = vec![0u8; len];
            // SAFETY: an empty path with a descriptor names the link the descriptor
            // refers to (O_PATH | O_NOFOLLOW); `buf` has `len` writable bytes.
            let n = unsafe {
                libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), len)
            };
            if n < 0 {
                return Err(errno());
            }
            buf.truncate(usize::try_from(n).unwrap_or(0));
            Ok(buf)
        })
    }

    /// Closes a handle.
    pub fn close(&self, handle: u64) -> Result<(), i32> {
        let mut handles = self.handles.lock().expect("root fs lock");
        let slot = usize::try_from(handle)
            .ok()
            .and_then(|h| handles.get_mut(h))
            .ok_or(libc::EBADF)?;
        slot.take().map(drop).ok_or(libc::EBADF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("cvmm-rootfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("words.txt"), b"alpha\nbeta\n").unwrap();
        std::fs::write(dir.join("sub/inner"), b"inner").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("escape")).unwrap();
        std::os::unix::fs::symlink("sub/inner", dir.join("link")).unwrap();
        Dir(dir)
    }

    #[test]
    fn reads_files_and_lists_directories() {
        let dir = tree("read");
        let fs = RootFs::open(&dir.0).unwrap();
        let h = fs.open_path(b"/words.txt", false).unwrap();
        assert_eq!(fs.read(h, 0, 100).unwrap(), b"alpha\nbeta\n");
        assert_eq!(fs.read(h, 6, 100).unwrap(), b"beta\n");
        let st = fs.stat(h).unwrap();
        assert_eq!(
            u64::from_le_bytes(st[48..56].try_into().unwrap()),
            11,
            "st_size"
        );
        fs.close(h).unwrap();
        assert_eq!(fs.read(h, 0, 1), Err(libc::EBADF));
        let link = fs.open_path(b"link", false).unwrap();
        // The link itself: a symlink's stat (S_IFLNK), not readable.
        let itself = fs.open_path(b"escape", true).unwrap();
        let mode = u32::from_le_bytes(fs.stat(itself).unwrap()[24..28].try_into().unwrap());
        assert_eq!(mode & 0o170_000, 0o120_000);
        assert!(fs.read(itself, 0, 1).is_err());
        assert_eq!(fs.read_link(itself, 100).unwrap(), b"/etc/hostname");
        assert_eq!(fs.read(link, 0, 100).unwrap(), b"inner");
        let root = fs.open_path(b"/", false).unwrap();
        let entries = fs.read_dir(root, 0, 4096).unwrap();
        let mut names = Vec::new();
        let mut at = 0;
        while at < entries.len() {
            let reclen = usize::from(u16::from_le_bytes([entries[at + 16], entries[at + 17]]));
            let name = &entries[at + 19..at + reclen];
            let end = name.iter().position(|&b| b == 0).unwrap();
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
            at += reclen;
        }
        names.sort();
        assert_eq!(names, [".", "..", "escape", "link", "sub", "words.txt"]);
    }

    #[test]
    fn no_path_leaves_the_root() {
        let dir = tree("escape");
        let fs = RootFs::open(&dir.0).unwrap();
        // `..` stops at the root; an absolute symlink is resolved inside it.
        assert_eq!(
            fs.open_path(b"/../../etc/hostname", false),
            Err(libc::ENOENT)
        );
        assert_eq!(fs.open_path(b"escape", false), Err(libc::ENOENT));
        let up = fs.open_path(b"/sub/../../words.txt", false).unwrap();
        assert_eq!(fs.read(up, 0, 5).unwrap(), b"alpha");
        assert_eq!(
            fs.open_path(b"/proc/self/root/etc/hostname", false),
            Err(libc::ENOENT)
        );
        assert!(fs.open_path(b"a\0b", false).is_err());
    }
}
