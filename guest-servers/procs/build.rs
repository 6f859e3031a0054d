//! Link the process programs: static, position-dependent at USER_BASE
//! with `user.ld` (as every user program, see `../user-build.rs`) —
//! except the programs in [`PIE`], linked as the target's default, a
//! static position-independent executable the kernel relocates.
//!
//! The programs are the files `src/bin/*.rs`, not a list kept here, so a
//! new program cannot be left out and silently link as PIE. Each must
//! have its `[[bin]]` in Cargo.toml (with `test = false`, `bench = false`)
//! named as its file, and each `[[bin]]` must have its file: the build
//! fails otherwise.
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Programs linked position-independent.
const PIE: &[&str] = &["hello-pie"];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../user.ld");
    println!("cargo:rerun-if-changed={dir}/Cargo.toml");
    println!("cargo:rerun-if-changed={dir}/src/bin");

    let files = bin_files(&Path::new(&dir).join("src/bin"));
    let manifest = fs::read_to_string(format!("{dir}/Cargo.toml")).expect("read Cargo.toml");
    check(&files, &manifest_bins(&manifest));

    for bin in &files {
        if !PIE.contains(&bin.as_str()) {
            println!("cargo:rustc-link-arg-bin={bin}=-T{dir}/../user.ld");
            println!("cargo:rustc-link-arg-bin={bin}=--no-pie");
        }
        println!("cargo:rustc-link-arg-bin={bin}=-znoexecstack");
    }
}

/// The names of the programs: the stems of the `.rs` files in `src/bin`.
fn bin_files(bin_dir: &Path) -> BTreeSet<String> {
    let entries = fs::read_dir(bin_dir)
        .unwrap_or_else(|e| panic!("k42-procs: cannot list {}: {e}", bin_dir.display()));
    let mut files = BTreeSet::new();
    for entry in entries {
        let path = entry.expect("read src/bin").path();
        if path.extension().is_some_and(|x| x == "rs") {
            let stem = path.file_stem().unwrap().to_str().expect("UTF-8 file name");
            files.insert(stem.to_owned());
        } else if path.is_dir() {
            panic!(
                "k42-procs: {} is a directory: every program here is one file src/bin/NAME.rs \
                 (this build script links each by that name)",
                path.display()
            );
        }
    }
    files
}

/// The `[[bin]]` tables of the manifest, as (name, path) pairs; a missing
/// key is an empty string.
fn manifest_bins(manifest: &str) -> Vec<(String, String)> {
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            if in_bin {
                bins.push((String::new(), String::new()));
            }
        } else if in_bin && let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            let bin = bins.last_mut().unwrap();
            match key.trim() {
                "name" => bin.0 = value,
                "path" => bin.1 = value,
                _ => {}
            }
        }
    }
    bins
}

/// Panic unless the `[[bin]]` tables and the files of `src/bin` are the
/// same programs under the same names.
fn check(files: &BTreeSet<String>, bins: &[(String, String)]) {
    let mut errors = Vec::new();
    let mut declared = BTreeSet::new();
    for (name, path) in bins {
        let want = format!("src/bin/{name}.rs");
        if *path != want {
            errors.push(format!(
                "[[bin]] name = \"{name}\" has path = \"{path}\"; a program's path is \"{want}\""
            ));
        } else if !files.contains(name) {
            errors.push(format!("[[bin]] \"{name}\" has no file {want}"));
        }
        declared.insert(name.clone());
    }
    for name in files.difference(&declared) {
        errors.push(format!(
            "src/bin/{name}.rs has no [[bin]] in Cargo.toml: add name = \"{name}\", \
             path = \"src/bin/{name}.rs\", test = false, bench = false"
        ));
    }
    for name in PIE {
        if !files.contains(*name) {
            errors.push(format!("PIE names {name}, which has no src/bin/{name}.rs"));
        }
    }
    if !errors.is_empty() {
        panic!(
            "k42-procs: the programs in Cargo.toml and src/bin/ differ:\n  {}",
            errors.join("\n  ")
        );
    }
}
