//! `cvmm run -- PATH`: Linux programs from the host, through the real `cvmm` binary.

use std::process::Command;

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
