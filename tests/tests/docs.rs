//! The documentation matches the repository: every relative link in README.md and docs/
//! names a file that exists, and the README's crate map lists every crate of the
//! workspace (and no crate that is not one).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn link_targets_are_found() {
    assert_eq!(
        link_targets("see [a](a.md) and [b](../b.rs#x), not (c)"),
        ["a.md", "../b.rs#x"]
    );
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.expect("readable docs/").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable doc");
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let dir = file.parent().expect("a file has a folder");
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_readme_crate_map_lists_every_workspace_crate() {
    let root = repo();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let members_start = manifest.find("members = [").expect("a members list");
    let members_end = members_start + manifest[members_start..].find(']').expect("closed");
    let mut dirs: Vec<String> = manifest[members_start..members_end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    // The guest is built by host-vmm's build script, outside the workspace.
    dirs.push("guest".into());
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for dir in &dirs {
        let package = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{dir}/Cargo.toml: {e}"));
        let name = package
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{dir}/Cargo.toml has a name"));
        assert!(
            readme.contains(&format!("| `{name}`")),
            "the README's crate map does not list {name} ({dir}/)"
        );
    }
    let listed = readme
        .lines()
        .skip_while(|l| !l.starts_with("| crate |"))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| l.starts_with("| `"))
        .count();
    assert_eq!(
        listed,
        dirs.len(),
        "the crate map lists crates that do not exist"
    );
}
