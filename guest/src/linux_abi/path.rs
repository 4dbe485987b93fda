//! Path names as the Linux personality resolves them: an absolute path, or one relative
//! to the working directory, made absolute and normal (no `.`, `..` or repeated `/`),
//! so the kernel can pick the file system by prefix. `..` of `/` is `/`, as on Linux.

use crate::linux_abi::errno::{ENAMETOOLONG, ENOENT};

/// Longest normalized path kept.
pub const PATH_BYTES: usize = 512;

/// A normalized absolute path.
#[derive(Clone, Copy)]
pub struct AbsPath {
    bytes: [u8; PATH_BYTES],
    len: usize,
}

impl core::fmt::Debug for AbsPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:?}",
            core::str::from_utf8(self.as_bytes()).unwrap_or("?")
        )
    }
}

impl AbsPath {
    /// `/`.
    pub const fn root() -> Self {
        let mut bytes = [0u8; PATH_BYTES];
        bytes[0] = b'/';
        Self { bytes, len: 1 }
    }

    /// The path's bytes (starting with `/`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// True when the path is `prefix` or lies under it (`prefix` without a trailing `/`).
    pub fn is_under(&self, prefix: &[u8]) -> bool {
        let p = self.as_bytes();
        p == prefix || (p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/'))
    }

    fn push(&mut self, component: &[u8]) -> Result<(), i64> {
        let sep = usize::from(self.len > 1);
        if self.len + sep + component.len() > PATH_BYTES {
            return Err(ENAMETOOLONG);
        }
        if sep == 1 {
            self.bytes[self.len] = b'/';
            self.len += 1;
        }
        self.bytes[self.len..self.len + component.len()].copy_from_slice(component);
        self.len += component.len();
        Ok(())
    }

    fn pop(&mut self) {
        while self.len > 1 && self.bytes[self.len - 1] != b'/' {
            self.len -= 1;
        }
        if self.len > 1 {
            self.len -= 1;
        }
    }
}

/// `path` resolved against the working directory `cwd`; an empty path is ENOENT.
pub fn resolve(cwd: &AbsPath, path: &[u8]) -> Result<AbsPath, i64> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    let mut out = if path[0] == b'/' {
        AbsPath::root()
    } else {
        *cwd
    };
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => out.pop(),
            name => out.push(name)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cwd: &str, path: &str) -> String {
        let cwd = resolve(&AbsPath::root(), cwd.as_bytes()).unwrap();
        let out = resolve(&cwd, path.as_bytes()).unwrap();
        String::from_utf8(out.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn paths_become_absolute_and_normal() {
        assert_eq!(r("/", "/tmp//a/./b/"), "/tmp/a/b");
        assert_eq!(r("/", "../../etc"), "/etc");
        assert_eq!(r("/home/u", "x/../y"), "/home/u/y");
        assert_eq!(r("/home/u", "../.."), "/");
        assert_eq!(r("/a", "."), "/a");
        assert!(resolve(&AbsPath::root(), b"").is_err());
        let long = "x/".repeat(300);
        assert_eq!(
            resolve(&AbsPath::root(), long.as_bytes()).err(),
            Some(ENAMETOOLONG)
        );
    }

    #[test]
    fn prefixes_match_whole_components() {
        let p = resolve(&AbsPath::root(), b"/proc/self/exe").unwrap();
        assert!(p.is_under(b"/proc") && p.is_under(b"/proc/self"));
        assert!(!p.is_under(b"/pro"));
        let q = resolve(&AbsPath::root(), b"/procx").unwrap();
        assert!(!q.is_under(b"/proc"));
    }
}
