//! `cvmm run -- PATH`: Linux programs from the host, through the real `cvmm` binary.
//!
//! Test programs are built here with Debian's own compilers (scripts/ensure-deps.sh
//! installs them) and every run inside the virtual server is compared with the same
//! binary run natively: stdout and stderr byte for byte, and the exit status.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn cvmm_run(program: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--nodes", "1", "--mem-mib", "32", "--", program])
        .output()
        .expect("cvmm runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_dynamic_executable_is_refused_with_one_sentence() {
    // /bin/true on Debian is a dynamically linked PIE.
    let (code, stderr) = cvmm_run("/bin/true");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "cvmm: /bin/true: dynamically linked executables are not supported; link it statically"
    );
}

#[test]
fn a_file_that_is_not_an_elf_is_refused_with_one_sentence() {
    let dir = std::env::temp_dir().join(format!("cvmm-notelf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("script.sh");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let (code, stderr) = cvmm_run(path.to_str().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with(": not an x86-64 ELF executable"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_missing_program_is_one_sentence() {
    let (code, stderr) = cvmm_run("/nonexistent/prog");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("cvmm: /nonexistent/prog: cannot read the program"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A scratch directory for built programs, removed at drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cvmm-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds `source` (in tests/linux/) with `compiler` and `flags` into `dir`.
fn build(dir: &Path, source: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/linux")
        .join(source);
    let out = dir.join(format!(
        "{}-{compiler}{}",
        source.replace('.', "-"),
        flags.join("")
    ));
    let status = Command::new(compiler)
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .args(flags)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!("{compiler} is missing ({e}); scripts/ensure-deps.sh installs it")
        });
    assert!(status.success(), "{compiler} {flags:?} {source} failed");
    out
}

const ENV: [(&str, &str); 2] = [("A", "1"), ("LONG", "a value with spaces = and more")];

fn native(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(ENV)
        .output()
        .expect("the program runs natively")
}

fn in_cvmm(program: &Path, args: &[&str], vps: u32, flags: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvmm"));
    cmd.args(["run", "--vps-per-node", &vps.to_string()]);
    if !flags.contains(&"--mem-mib") {
        cmd.args(["--mem-mib", "64"]);
    }
    cmd.args(flags);
    for (k, v) in ENV {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg("--").arg(program).args(args);
    cmd.output().expect("cvmm runs")
}

fn assert_same(program: &Path, args: &[&str], vps: u32) {
    assert_same_with(program, args, vps, &[]);
}

fn assert_same_with(program: &Path, args: &[&str], vps: u32, flags: &[&str]) {
    let want = native(program, args);
    let got = in_cvmm(program, args, vps, flags);
    let show = |o: &Output| {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        want.stdout == got.stdout
            && want.stderr == got.stderr
            && want.status.code() == got.status.code(),
        "{} {args:?} on {vps} VPs {flags:?} differs from native\n--- native: {}\n--- cvmm: {}",
        program.display(),
        show(&want),
        show(&got)
    );
}

#[test]
fn static_c_programs_match_native_with_glibc_and_musl() {
    let dir = Scratch::new("abi");
    let builds = [
        ("gcc", &["-static"][..]),
        ("gcc", &["-static-pie"][..]),
        ("musl-gcc", &["-static"][..]),
    ];
    for (compiler, flags) in builds {
        let program = build(&dir.0, "abi.c", compiler, flags);
        assert_same(&program, &["one", "two words", ""], 1);
    }
    // The other VPs idle while the program runs on VP 0.
    let program = build(&dir.0, "abi.c", "gcc", &["-static"]);
    assert_same(&program, &[], 2);
    // Every system call through the trap, none rewritten: the same result.
    assert_same_with(&program, &["trapped"], 1, &["--trap-syscalls"]);
}

#[test]
fn a_program_runs_the_same_on_several_nodes_and_both_fabrics() {
    let dir = Scratch::new("nodes");
    let program = build(&dir.0, "abi.c", "musl-gcc", &["-static"]);
    assert_same_with(&program, &["two", "nodes"], 1, &["--nodes", "2"]);
    // Node 1 runs the offload fabric over a lossy wire; the program's pages are homed
    // on node 0 either way.
    let flags = [
        "--nodes",
        "2",
        "--fabric",
        "software,offload",
        "--wire-loss",
        "0.05",
    ];
    assert_same_with(&program, &["mixed"], 1, &flags);
}

/// Threads of C programs, glibc and musl, over VPs of one node, of two and of four
/// nodes, on both fabrics and a lossy wire. glibc reserves 64 MiB of address space per
/// malloc arena (and logical memory is the address space: docs/linux-abi.md), hence the
/// larger `--mem-mib` for it.
#[test]
fn c_threads_match_native_on_one_two_and_four_nodes() {
    let dir = Scratch::new("threads");
    let glibc = build(&dir.0, "threads.c", "gcc", &["-static", "-pthread"]);
    assert_same_with(&glibc, &[], 2, &["--mem-mib", "1024"]);
    assert_same_with(&glibc, &[], 1, &["--nodes", "2", "--mem-mib", "256"]);
    let musl = build(&dir.0, "threads.c", "musl-gcc", &["-static"]);
    let lossy = [
        "--nodes",
        "2",
        "--fabric",
        "software,offload",
        "--wire-loss",
        "0.05",
        "--mem-mib",
        "128",
    ];
    assert_same_with(&musl, &[], 2, &lossy);
    assert_same_with(&musl, &[], 1, &["--nodes", "4", "--mem-mib", "128"]);
    // Placement by load alone (the measurement baseline of memory weighting) runs the
    // same program just as correctly.
    let by_load = ["--nodes", "2", "--mem-mib", "128", "--placement", "load"];
    assert_same_with(&musl, &[], 1, &by_load);
}

/// std::thread, std::mutex and std::condition_variable from g++ -static.
#[test]
fn cpp_threads_match_native() {
    let dir = Scratch::new("cpp");
    let program = build(&dir.0, "threads.cpp", "g++", &["-static", "-pthread"]);
    assert_same_with(&program, &[], 2, &["--nodes", "2", "--mem-mib", "256"]);
}

/// std::thread, Mutex, Condvar and channels from rustc with a static C runtime (a
/// static-pie on the GNU target).
#[test]
fn rust_threads_match_native() {
    let dir = Scratch::new("rust");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux/threads.rs");
    let program = dir.0.join("threads-rust");
    let status = Command::new("rustc")
        .args([
            "-O",
            "--edition",
            "2021",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&program)
        .arg(&src)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc {} failed", src.display());
    let bytes = std::fs::read(&program).unwrap();
    // ELF type 3 (ET_DYN) without an interpreter: a static-pie.
    assert_eq!(bytes[16], 3, "rustc made a fixed-address executable");
    assert_same_with(&program, &[], 2, &["--mem-mib", "1024"]);
    assert_same_with(&program, &[], 1, &["--nodes", "2", "--mem-mib", "256"]);
}

/// The program's own handlers: faults caught and left with siglongjmp, raise(), an
/// alternate stack, SIG_IGN; glibc and musl, on two nodes.
#[test]
fn signal_handlers_run_as_on_linux() {
    let dir = Scratch::new("signals");
    for compiler in ["gcc", "musl-gcc"] {
        let program = build(&dir.0, "signals.c", compiler, &["-static"]);
        assert_same_with(&program, &[], 1, &["--nodes", "2"]);
    }
}

/// sched_setaffinity moves a thread to the VP it names, children inherit it; the test
/// machine has two CPUs and the virtual server two VPs (on one node, then on two), so
/// the native run prints the same numbers.
#[test]
fn affinity_pins_threads_to_vps() {
    let dir = Scratch::new("affinity");
    let program = build(&dir.0, "affinity.c", "gcc", &["-static", "-pthread"]);
    if std::thread::available_parallelism().map_or(0, |n| n.get()) != 2 {
        // The native run names CPUs 0 and 1 only where there are exactly two.
        eprintln!("skipped: this machine does not have exactly two CPUs");
        return;
    }
    assert_same_with(&program, &[], 2, &["--mem-mib", "512"]);
    assert_same_with(&program, &[], 1, &["--nodes", "2", "--mem-mib", "256"]);
}

/// pthread_kill to a thread spinning in program code and to one asleep in a condition
/// variable: each handler runs in its thread; on one VP, two VPs and two nodes.
#[test]
fn signals_reach_other_threads_on_any_node() {
    let dir = Scratch::new("thread-signals");
    let program = build(&dir.0, "thread_signals.c", "gcc", &["-static", "-pthread"]);
    assert_same_with(&program, &[], 1, &["--mem-mib", "512"]);
    assert_same_with(&program, &[], 1, &["--nodes", "2", "--mem-mib", "256"]);
}

/// Faults the program does not handle end it with Linux's status (128 + the signal,
/// checked against a native run of the same binary), and one line on stderr naming the
/// signal, the faulting address and the instruction. A null write faults even though
/// the trampoline page is mapped at 0 (read-only).
#[test]
fn unhandled_faults_end_the_program_as_on_linux() {
    let dir = Scratch::new("faults");
    let program = build(&dir.0, "faults.c", "gcc", &["-static"]);
    let cases = [
        ("null", "SIGSEGV", Some("at address 0x0,")),
        ("wild", "SIGSEGV", Some("at address 0x7fff00000000,")),
        ("div", "SIGFPE", None),
        ("ud2", "SIGILL", None),
        ("int3", "SIGTRAP", None),
        ("stack", "SIGSEGV", None),
    ];
    for (what, signal, address) in cases {
        let want = native(&program, &[what]);
        let got = in_cvmm(&program, &[what], 1, &[]);
        assert!(
            want.status.code().is_none(),
            "{what} did not kill the native run"
        );
        let stderr = String::from_utf8_lossy(&got.stderr);
        assert_eq!(
            got.status.code(),
            want.status.signal().map(|s| 128 + s),
            "{what}: {stderr}"
        );
        assert!(got.stdout.is_empty(), "{what} went on running");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains(signal), "{what}: {stderr}");
        if let Some(address) = address {
            assert!(
                stderr.contains(address) && stderr.contains("rip 0x"),
                "{what}: {stderr}"
            );
        }
    }
    // abort() raises SIGABRT, whose default action ends the program with 134.
    let got = in_cvmm(&program, &["abort"], 2, &["--nodes", "2"]);
    assert_eq!(got.status.code(), Some(134));
    // An alarm nobody handles ends the program with 142, silently.
    let want = native(&program, &["alarm"]);
    let got = in_cvmm(&program, &["alarm"], 1, &[]);
    assert_eq!(want.status.signal(), Some(14));
    assert_eq!(got.status.code(), Some(142));
    assert!(got.stdout.is_empty() && got.stderr.is_empty());
    // A write to a pipe nobody reads: SIGPIPE's default action, 141, silently (as the
    // shell sees `yes | head -1`).
    let want = native(&program, &["sigpipe"]);
    let got = in_cvmm(&program, &["sigpipe"], 1, &[]);
    assert_eq!(want.status.signal(), Some(13));
    assert_eq!(got.status.code(), Some(141));
    assert!(got.stdout.is_empty() && got.stderr.is_empty());
}

/// Runs `program args` natively and in cvmm (with `flags`) with `input` on stdin, written
/// in two parts with a pause between them (so the program waits for the second), and
/// asserts the same stdout, stderr and status.
fn assert_same_with_input(program: &Path, args: &[&str], flags: &[&str], input: &[u8]) {
    use std::io::Write;
    let run = |mut cmd: Command| {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let half = input.len() / 2;
            // A reader that stops reading is not an error here.
            let _ = stdin.write_all(&input[..half]);
            std::thread::sleep(std::time::Duration::from_millis(300));
            let _ = stdin.write_all(&input[half..]);
        });
        let out = child.wait_with_output().expect("runs");
        writer.join().unwrap();
        out
    };
    let mut native = Command::new(program);
    native.args(args).env_clear().envs(ENV);
    let want = run(native);
    let mut cvmm = Command::new(env!("CARGO_BIN_EXE_cvmm"));
    cvmm.args(["run", "--mem-mib", "64"]).args(flags);
    for (k, v) in ENV {
        cvmm.arg("--env").arg(format!("{k}={v}"));
    }
    cvmm.arg("--").arg(program).args(args);
    let got = run(cvmm);
    assert_eq!(
        (want.status.code(), &want.stderr),
        (got.status.code(), &got.stderr),
        "{} {args:?} {flags:?}: status or stderr differ: cvmm said {}",
        program.display(),
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        want.stdout == got.stdout,
        "{} {args:?} {flags:?}: stdout differs ({} bytes native, {} in cvmm)",
        program.display(),
        want.stdout.len(),
        got.stdout.len()
    );
}

#[test]
fn stdin_is_the_programs_to_its_end_on_any_node() {
    let busybox = Path::new("/bin/busybox");
    let numbers: String = (1..=100_000).rev().map(|n| format!("{n}\n")).collect();
    assert_same_with_input(busybox, &["sort", "-n"], &[], numbers.as_bytes());
    assert_same_with_input(busybox, &["wc", "-l"], &[], numbers.as_bytes());
    // Binary bytes, on a two-node server (node 0 serves stdin).
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 31).to_le_bytes()[0]).collect();
    assert_same_with_input(busybox, &["md5sum"], &["--nodes", "2"], &bytes);
    assert_same_with_input(busybox, &["cat"], &[], b"");
}

/// `--root DIR` is the program's `/`, read-only: busybox reads, lists, sorts and hashes
/// its files exactly as the same busybox chrooted into DIR does natively, and no path
/// (`..`, an absolute symbolic link) reaches a host file outside DIR.
#[test]
fn the_root_is_a_host_directory_and_nothing_outside_it() {
    let dir = Scratch::new("root");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let words: String = ["zeta", "alpha", "mu", "beta", "alpha"]
        .iter()
        .map(|w| format!("{w}\n"))
        .collect();
    std::fs::write(root.join("words.txt"), words).unwrap();
    std::fs::write(root.join("sub/inner"), b"inner\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
    std::os::unix::fs::symlink("sub/inner", root.join("link")).unwrap();
    let busybox = root.join("busybox");
    std::fs::copy("/bin/busybox", &busybox).expect("busybox-static is installed");
    let cases: [&[&str]; 10] = [
        &["cat", "/words.txt"],
        &["wc", "-l", "/words.txt"],
        &["sort", "-u", "/words.txt"],
        &["md5sum", "/words.txt", "/link"],
        &["ls", "-la", "/", "/sub"],
        &["readlink", "/escape"],
        &["cat", "/escape"],
        &["cat", "/../../etc/hostname"],
        &["cat", "/sub/../../../etc/hostname"],
        &["cat", "words.txt", "sub/../link"],
    ];
    for args in cases {
        let want = Command::new("/usr/sbin/chroot")
            .arg(&root)
            .arg("/busybox")
            .args(args)
            .env_clear()
            .output()
            .expect("chroot runs");
        let got = Command::new(env!("CARGO_BIN_EXE_cvmm"))
            .args(["run", "--mem-mib", "64", "--root"])
            .arg(&root)
            .arg("--")
            .arg(&busybox)
            .args(args)
            .output()
            .expect("cvmm runs");
        assert_eq!(
            (want.status.code(), String::from_utf8_lossy(&want.stdout)),
            (got.status.code(), String::from_utf8_lossy(&got.stdout)),
            "{args:?}: cvmm said {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(want.stderr, got.stderr, "{args:?}");
    }
    // The root is read-only: nothing is created or changed in DIR.
    let touch = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--mem-mib", "64", "--root"])
        .arg(&root)
        .arg("--")
        .arg(&busybox)
        .args(["touch", "/new", "/words.txt"])
        .output()
        .expect("cvmm runs");
    assert_eq!(touch.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&touch.stderr)
    );
    assert!(!root.join("new").exists());
}

/// /tmp is written by one thread and read by another (on another node with two nodes),
/// the root is read, /tmp listed, descriptors duplicated: the same output as the same
/// binary run natively chrooted into the same root (with a /tmp of its own).
#[test]
fn files_in_tmp_and_the_root_match_a_chrooted_native_run() {
    let dir = Scratch::new("files");
    for (compiler, flags) in [
        ("gcc", &["-static", "-pthread"][..]),
        ("musl-gcc", &["-static"][..]),
    ] {
        let root = dir.0.join(format!("root-{compiler}"));
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("words.txt"), b"one\ntwo\nthree\nfour\n").unwrap();
        let built = build(&dir.0, "files.c", compiler, flags);
        let program = root.join("files");
        std::fs::copy(&built, &program).unwrap();
        let want = Command::new("/usr/sbin/chroot")
            .arg(&root)
            .arg("/files")
            .env_clear()
            .output()
            .expect("chroot runs");
        assert_eq!(
            want.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&want.stderr)
        );
        for shape in [
            &["--nodes", "1"][..],
            &["--nodes", "2", "--vps-per-node", "2"][..],
        ] {
            let got = Command::new(env!("CARGO_BIN_EXE_cvmm"))
                .args(["run", "--mem-mib", "64"])
                .args(shape)
                .arg("--root")
                .arg(&root)
                .arg("--")
                .arg(&program)
                .output()
                .expect("cvmm runs");
            assert_eq!(
                (got.status.code(), String::from_utf8_lossy(&got.stdout)),
                (want.status.code(), String::from_utf8_lossy(&want.stdout)),
                "{compiler} {shape:?}: {}",
                String::from_utf8_lossy(&got.stderr)
            );
        }
    }
}

/// A hostile program (it trashes all of its own writable memory, then makes thousands
/// of system calls with random numbers and arguments) ends with a status, never a hang
/// or a crash of the VMM, and a virtual server running next to it is not disturbed.
#[test]
fn a_hostile_program_ends_cleanly_and_disturbs_nobody() {
    let dir = Scratch::new("chaos");
    let chaos = build(&dir.0, "chaos.c", "gcc", &["-static"]);
    let good = build(&dir.0, "abi.c", "musl-gcc", &["-static"]);
    let neighbour = std::thread::spawn({
        let good = good.clone();
        move || {
            let want = native(&good, &["neighbour"]);
            let got = in_cvmm(&good, &["neighbour"], 2, &["--nodes", "2"]);
            (want, got)
        }
    });
    let runs: [(&str, &[&str]); 6] = [
        ("a", &[]),
        ("b", &[]),
        ("c", &["--vps-per-node", "2"]),
        ("d", &[]),
        ("e", &["--nodes", "2"]),
        ("f", &["--nodes", "2", "--fabric", "offload"]),
    ];
    for (seed, flags) in runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cvmm"))
            .args(["run", "--mem-mib", "64"])
            .args(flags)
            .arg("--")
            .arg(&chaos)
            .arg(seed)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cvmm runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("seed {seed} {flags:?}: the hostile program did not end");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // An exit status, not a signal: the VMM itself did not crash.
        assert!(
            status.code().is_some(),
            "seed {seed}: cvmm was killed: {status:?}"
        );
        assert!(stderr.lines().count() <= 2, "seed {seed}: {stderr}");
        assert!(!stderr.contains("panicked"), "seed {seed}: {stderr}");
    }
    let (want, got) = neighbour.join().unwrap();
    assert_eq!(
        want.stdout, got.stdout,
        "the neighbouring server was disturbed"
    );
    assert_eq!(want.status.code(), got.status.code());
}

/// The kernel's own files describe the virtual server: one /proc/cpuinfo entry and one
/// /sys online CPU per VP of every node, the program's mappings in /proc/self/maps.
#[test]
fn kernel_files_describe_the_virtual_server() {
    let busybox = Path::new("/bin/busybox");
    let cat = |file: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
            .args([
                "run",
                "--nodes",
                "2",
                "--vps-per-node",
                "2",
                "--mem-mib",
                "64",
                "--",
            ])
            .arg(busybox)
            .args(["cat", file])
            .output()
            .expect("cvmm runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let cpuinfo = cat("/proc/cpuinfo");
    assert_eq!(cpuinfo.matches("processor\t:").count(), 4, "{cpuinfo}");
    assert_eq!(cpuinfo.matches("node\t\t: 1").count(), 2, "{cpuinfo}");
    assert_eq!(cat("/sys/devices/system/cpu/online"), "0-3\n");
    let maps = cat("/proc/self/maps");
    assert!(
        maps.contains("r-xp 00000000 00:00 0 /usr/bin/busybox") || maps.contains("/bin/busybox"),
        "{maps}"
    );
    assert!(
        maps.contains("[heap]") && maps.contains("[stack]"),
        "{maps}"
    );
    let meminfo = cat("/proc/meminfo");
    assert!(meminfo.starts_with("MemTotal:"), "{meminfo}");
}

/// A system call the guest kernel does not implement returns ENOSYS and is counted in
/// `--stats-json` by number and name.
#[test]
fn unimplemented_system_calls_are_enosys_and_counted_by_name() {
    let dir = Scratch::new("enosys");
    let program = build(&dir.0, "enosys.c", "gcc", &["-static"]);
    let stats = dir.0.join("stats.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cvmm"))
        .args(["run", "--mem-mib", "64", "--stats-json"])
        .arg(&stats)
        .arg("--")
        .arg(&program)
        .output()
        .expect("cvmm runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "memfd_create -1 errno 38\nsyscall 1000 -1 errno 38\nmemfd_create -1 errno 38\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let counted = json["nodes"][0]["unimplemented_syscalls"]
        .as_array()
        .unwrap();
    let find = |number: u64| {
        counted
            .iter()
            .find(|e| e["number"] == number)
            .unwrap_or_else(|| panic!("{number} not counted in {counted:?}"))
    };
    assert_eq!(find(319)["name"], "memfd_create");
    assert_eq!(find(319)["count"], 2);
    assert_eq!(find(1000)["name"], "");
    assert_eq!(find(1000)["count"], 1);
}

#[test]
fn busybox_runs_unmodified() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "busybox-static is missing; scripts/ensure-deps.sh installs it"
    );
    for args in [
        &["echo", "hello", "from", "busybox"][..],
        &["seq", "1", "2000"][..],
        &["printf", "%s\\0%d\\n", "binary", "7"][..],
        &["false"][..],
    ] {
        assert_same(busybox, args, 1);
    }
}

/// Runs `command` with a new pseudo-terminal (40 rows, 100 columns) as its stdin, stdout
/// and stderr; returns what it wrote there and its exit status.
fn on_pty(mut command: Command) -> (String, Option<i32>) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two fds; the name and termios may be null, the window
    // size is read from a valid struct.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty just made both fds, and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    command
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = command.spawn().expect("spawns");
    // The command holds copies of the slave: once it and the child's processes are gone,
    // reading the master ends (EIO).
    drop(command);
    let mut out = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().expect("waits");
    (String::from_utf8_lossy(&out).into_owned(), status.code())
}

/// On a terminal, a program sees one (isatty, termios, the window size, raw mode that
/// takes effect); on pipes it gets ENOTTY: the same as natively, on one and two nodes.
#[test]
fn a_terminal_is_a_terminal_and_a_pipe_is_not() {
    let dir = Scratch::new("tty");
    let program = build(&dir.0, "tty.c", "gcc", &["-static"]);
    let (want, status) = on_pty(Command::new(&program));
    assert_eq!(status, Some(0));
    assert!(
        want.contains("isatty 1 1 1") && want.contains("window 40 x 100"),
        "{want}"
    );
    for nodes in ["1", "2"] {
        let mut cvmm = Command::new(env!("CARGO_BIN_EXE_cvmm"));
        cvmm.args(["run", "--nodes", nodes, "--mem-mib", "64", "--"])
            .arg(&program);
        let (got, status) = on_pty(cvmm);
        assert_eq!(status, Some(0), "{got}");
        assert_eq!(got, want, "on {nodes} node(s)");
    }
    assert_same(&program, &[], 1);
}

/// Runs `command` with a pipe as stdin that stays open and empty until it exits; returns
/// its stdout.
fn with_open_empty_stdin(mut command: Command) -> String {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stdin = child.stdin.take();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .expect("reads");
    child.wait().expect("waits");
    drop(stdin);
    out
}

/// poll on stdin knows whether input has arrived: it times out on an empty pipe and
/// finds waiting input readable, as natively, on one node and on two (stdin is node
/// 0's).
#[test]
fn poll_on_stdin_waits_for_input() {
    let dir = Scratch::new("poll-stdin");
    let program = build(&dir.0, "poll_stdin.c", "gcc", &["-static"]);
    let want = with_open_empty_stdin({
        let mut c = Command::new(&program);
        c.arg("100");
        c
    });
    assert_eq!(want, "poll 0, readable 0\n");
    for nodes in ["1", "2"] {
        let mut cvmm = Command::new(env!("CARGO_BIN_EXE_cvmm"));
        cvmm.args(["run", "--nodes", nodes, "--mem-mib", "64", "--"])
            .arg(&program)
            .arg("100");
        assert_eq!(with_open_empty_stdin(cvmm), want, "on {nodes} node(s)");
        // One byte: the helper writes nothing, waits, then writes it.
        assert_same_with_input(&program, &["5000"], &["--nodes", nodes], b"x");
    }
}

/// alarm, setitimer/getitimer (ITIMER_REAL) and pause: SIGALRM comes, ends pause and
/// sleeps with EINTR, as natively, on one node and on two.
#[test]
fn interval_timers_send_sigalrm() {
    let dir = Scratch::new("timers");
    let program = build(&dir.0, "timers.c", "gcc", &["-static"]);
    assert_same(&program, &[], 1);
    assert_same_with(&program, &[], 1, &["--nodes", "2"]);
}
