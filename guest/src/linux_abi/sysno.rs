//! Linux x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) and names,
//! for dispatch, `--strace` and the count of calls that are not implemented.

/// `(number, name)` of every call this table knows, in number order.
pub const NAMES: &[(u64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (4, "stat"),
    (5, "fstat"),
    (6, "lstat"),
    (7, "poll"),
    (8, "lseek"),
    (9, "mmap"),
    (10, "mprotect"),
    (11, "munmap"),
    (12, "brk"),
    (13, "rt_sigaction"),
    (14, "rt_sigprocmask"),
    (15, "rt_sigreturn"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (21, "access"),
    (22, "pipe"),
    (23, "select"),
    (24, "sched_yield"),
    (25, "mremap"),
    (26, "msync"),
    (27, "mincore"),
    (28, "madvise"),
    (32, "dup"),
    (33, "dup2"),
    (34, "pause"),
    (35, "nanosleep"),
    (36, "getitimer"),
    (37, "alarm"),
    (38, "setitimer"),
    (39, "getpid"),
    (40, "sendfile"),
    (41, "socket"),
    (56, "clone"),
    (57, "fork"),
    (58, "vfork"),
    (59, "execve"),
    (60, "exit"),
    (61, "wait4"),
    (62, "kill"),
    (63, "uname"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (77, "ftruncate"),
    (78, "getdents"),
    (79, "getcwd"),
    (80, "chdir"),
    (81, "fchdir"),
    (82, "rename"),
    (83, "mkdir"),
    (84, "rmdir"),
    (87, "unlink"),
    (89, "readlink"),
    (90, "chmod"),
    (95, "umask"),
    (96, "gettimeofday"),
    (97, "getrlimit"),
    (98, "getrusage"),
    (99, "sysinfo"),
    (100, "times"),
    (102, "getuid"),
    (104, "getgid"),
    (105, "setuid"),
    (106, "setgid"),
    (107, "geteuid"),
    (108, "getegid"),
    (109, "setpgid"),
    (110, "getppid"),
    (111, "getpgrp"),
    (112, "setsid"),
    (115, "getgroups"),
    (121, "getpgid"),
    (124, "getsid"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (131, "sigaltstack"),
    (157, "prctl"),
    (158, "arch_prctl"),
    (160, "setrlimit"),
    (186, "gettid"),
    (200, "tkill"),
    (201, "time"),
    (202, "futex"),
    (203, "sched_setaffinity"),
    (204, "sched_getaffinity"),
    (217, "getdents64"),
    (218, "set_tid_address"),
    (228, "clock_gettime"),
    (229, "clock_getres"),
    (230, "clock_nanosleep"),
    (231, "exit_group"),
    (234, "tgkill"),
    (257, "openat"),
    (258, "mkdirat"),
    (262, "newfstatat"),
    (263, "unlinkat"),
    (264, "renameat"),
    (267, "readlinkat"),
    (269, "faccessat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (273, "set_robust_list"),
    (274, "get_robust_list"),
    (280, "utimensat"),
    (292, "dup3"),
    (293, "pipe2"),
    (302, "prlimit64"),
    (309, "getcpu"),
    (316, "renameat2"),
    (318, "getrandom"),
    (319, "memfd_create"),
    (332, "statx"),
    (334, "rseq"),
    (435, "clone3"),
    (439, "faccessat2"),
];

/// `read`.
pub const READ: u64 = 0;
/// `write`.
pub const WRITE: u64 = 1;
/// `open`.
pub const OPEN: u64 = 2;
/// `close`.
pub const CLOSE: u64 = 3;
/// `stat`.
pub const STAT: u64 = 4;
/// `fstat`.
pub const FSTAT: u64 = 5;
/// `lstat`.
pub const LSTAT: u64 = 6;
/// `poll`.
pub const POLL: u64 = 7;
/// `lseek`.
pub const LSEEK: u64 = 8;
/// `mmap`.
pub const MMAP: u64 = 9;
/// `mprotect`.
pub const MPROTECT: u64 = 10;
/// `munmap`.
pub const MUNMAP: u64 = 11;
/// `brk`.
pub const BRK: u64 = 12;
/// `rt_sigaction`.
pub const RT_SIGACTION: u64 = 13;
/// `rt_sigprocmask`.
pub const RT_SIGPROCMASK: u64 = 14;
/// `rt_sigreturn`.
pub const RT_SIGRETURN: u64 = 15;
/// `ioctl`.
pub const IOCTL: u64 = 16;
/// `pread64`.
pub const PREAD64: u64 = 17;
/// `pwrite64`.
pub const PWRITE64: u64 = 18;
/// `readv`.
pub const READV: u64 = 19;
/// `writev`.
pub const WRITEV: u64 = 20;
/// `access`.
pub const ACCESS: u64 = 21;
/// `pipe`.
pub const PIPE: u64 = 22;
/// `select`.
pub const SELECT: u64 = 23;
/// `sched_yield`.
pub const SCHED_YIELD: u64 = 24;
/// `mremap`.
pub const MREMAP: u64 = 25;
/// `msync`.
pub const MSYNC: u64 = 26;
/// `mincore`.
pub const MINCORE: u64 = 27;
/// `madvise`.
pub const MADVISE: u64 = 28;
/// `dup`.
pub const DUP: u64 = 32;
/// `dup2`.
pub const DUP2: u64 = 33;
/// `nanosleep`.
pub const NANOSLEEP: u64 = 35;
/// `getpid`.
pub const GETPID: u64 = 39;
/// `sendfile`.
pub const SENDFILE: u64 = 40;
/// `socket`.
pub const SOCKET: u64 = 41;
/// `clone`.
pub const CLONE: u64 = 56;
/// `fork`.
pub const FORK: u64 = 57;
/// `vfork`.
pub const VFORK: u64 = 58;
/// `execve`.
pub const EXECVE: u64 = 59;
/// `exit`.
pub const EXIT: u64 = 60;
/// `wait4`.
pub const WAIT4: u64 = 61;
/// `kill`.
pub const KILL: u64 = 62;
/// `uname`.
pub const UNAME: u64 = 63;
/// `fcntl`.
pub const FCNTL: u64 = 72;
/// `flock`.
pub const FLOCK: u64 = 73;
/// `fsync`.
pub const FSYNC: u64 = 74;
/// `fdatasync`.
pub const FDATASYNC: u64 = 75;
/// `ftruncate`.
pub const FTRUNCATE: u64 = 77;
/// `getdents`.
pub const GETDENTS: u64 = 78;
/// `getcwd`.
pub const GETCWD: u64 = 79;
/// `chdir`.
pub const CHDIR: u64 = 80;
/// `rename`.
pub const RENAME: u64 = 82;
/// `pause`.
pub const PAUSE: u64 = 34;
/// `getitimer`.
pub const GETITIMER: u64 = 36;
/// `alarm`.
pub const ALARM: u64 = 37;
/// `setitimer`.
pub const SETITIMER: u64 = 38;
/// `fchdir`.
pub const FCHDIR: u64 = 81;
/// `mkdir`.
pub const MKDIR: u64 = 83;
/// `rmdir`.
pub const RMDIR: u64 = 84;
/// `unlink`.
pub const UNLINK: u64 = 87;
/// `readlink`.
pub const READLINK: u64 = 89;
/// `chmod`.
pub const CHMOD: u64 = 90;
/// `umask`.
pub const UMASK: u64 = 95;
/// `gettimeofday`.
pub const GETTIMEOFDAY: u64 = 96;
/// `getrlimit`.
pub const GETRLIMIT: u64 = 97;
/// `getrusage`.
pub const GETRUSAGE: u64 = 98;
/// `sysinfo`.
pub const SYSINFO: u64 = 99;
/// `times`.
pub const TIMES: u64 = 100;
/// `getuid`.
pub const GETUID: u64 = 102;
/// `getgid`.
pub const GETGID: u64 = 104;
/// `setuid`.
pub const SETUID: u64 = 105;
/// `setgid`.
pub const SETGID: u64 = 106;
/// `geteuid`.
pub const GETEUID: u64 = 107;
/// `getegid`.
pub const GETEGID: u64 = 108;
/// `setpgid`.
pub const SETPGID: u64 = 109;
/// `getppid`.
pub const GETPPID: u64 = 110;
/// `getpgrp`.
pub const GETPGRP: u64 = 111;
/// `setsid`.
pub const SETSID: u64 = 112;
/// `getgroups`.
pub const GETGROUPS: u64 = 115;
/// `getpgid`.
pub const GETPGID: u64 = 121;
/// `getsid`.
pub const GETSID: u64 = 124;
/// `sigaltstack`.
pub const SIGALTSTACK: u64 = 131;
/// `prctl`.
pub const PRCTL: u64 = 157;
/// `arch_prctl`.
pub const ARCH_PRCTL: u64 = 158;
/// `setrlimit`.
pub const SETRLIMIT: u64 = 160;
/// `gettid`.
pub const GETTID: u64 = 186;
/// `tkill`.
pub const TKILL: u64 = 200;
/// `time`.
pub const TIME: u64 = 201;
/// `futex`.
pub const FUTEX: u64 = 202;
/// `sched_setaffinity`.
pub const SCHED_SETAFFINITY: u64 = 203;
/// `sched_getaffinity`.
pub const SCHED_GETAFFINITY: u64 = 204;
/// `getdents64`.
pub const GETDENTS64: u64 = 217;
/// `set_tid_address`.
pub const SET_TID_ADDRESS: u64 = 218;
/// `clock_gettime`.
pub const CLOCK_GETTIME: u64 = 228;
/// `clock_getres`.
pub const CLOCK_GETRES: u64 = 229;
/// `clock_nanosleep`.
pub const CLOCK_NANOSLEEP: u64 = 230;
/// `exit_group`.
pub const EXIT_GROUP: u64 = 231;
/// `tgkill`.
pub const TGKILL: u64 = 234;
/// `openat`.
pub const OPENAT: u64 = 257;
/// `mkdirat`.
pub const MKDIRAT: u64 = 258;
/// `renameat`.
pub const RENAMEAT: u64 = 264;
/// `renameat2`.
pub const RENAMEAT2: u64 = 316;
/// `newfstatat`.
pub const NEWFSTATAT: u64 = 262;
/// `unlinkat`.
pub const UNLINKAT: u64 = 263;
/// `readlinkat`.
pub const READLINKAT: u64 = 267;
/// `faccessat`.
pub const FACCESSAT: u64 = 269;
/// `pselect6`.
pub const PSELECT6: u64 = 270;
/// `ppoll`.
pub const PPOLL: u64 = 271;
/// `rt_sigtimedwait`.
pub const RT_SIGTIMEDWAIT: u64 = 128;
/// `rt_sigsuspend`.
pub const RT_SIGSUSPEND: u64 = 130;
/// `set_robust_list`.
pub const SET_ROBUST_LIST: u64 = 273;
/// `get_robust_list`.
pub const GET_ROBUST_LIST: u64 = 274;
/// `utimensat`.
pub const UTIMENSAT: u64 = 280;
/// `dup3`.
pub const DUP3: u64 = 292;
/// `pipe2`.
pub const PIPE2: u64 = 293;
/// `prlimit64`.
pub const PRLIMIT64: u64 = 302;
/// `getcpu`.
pub const GETCPU: u64 = 309;
/// `getrandom`.
pub const GETRANDOM: u64 = 318;
/// `memfd_create`.
pub const MEMFD_CREATE: u64 = 319;
/// `statx`.
pub const STATX: u64 = 332;
/// `rseq`.
pub const RSEQ: u64 = 334;
/// `clone3`.
pub const CLONE3: u64 = 435;
/// `faccessat2`.
pub const FACCESSAT2: u64 = 439;

/// The name of system call `nr`, if this table knows it.
pub fn name(nr: u64) -> Option<&'static str> {
    NAMES
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()
        .map(|i| NAMES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_names_match_numbers() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(name(WRITE), Some("write"));
        assert_eq!(name(EXIT_GROUP), Some("exit_group"));
        assert_eq!(name(231), Some("exit_group"));
        assert_eq!(name(9999), None);
    }
}
