//! Records the git revision k42vmm is built from, for the provenance of
//! benchmark results (`k42vmm bench`): `K42VMM_GIT_REVISION` (the commit,
//! or "unknown") and `K42VMM_GIT_REVISION_SOURCE` (`env`, `git` or
//! `none`).
//!
//! A build from a tarball or another VCS sets `K42VMM_GIT_REVISION` in the
//! environment; otherwise `git rev-parse HEAD` in this crate's directory
//! gives it. The script reruns when HEAD or the branch it points to moves.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=K42VMM_GIT_REVISION");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (revision, source) = if let Some(r) = std::env::var("K42VMM_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
    {
        (r, "env")
    } else if let Some(r) = git(dir, &["rev-parse", "HEAD"]) {
        // Rerun when HEAD moves (checkout) or its branch moves (commit).
        let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
        if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
            watch.push(branch);
        }
        for p in watch {
            // A watched file that does not exist would rerun the script on
            // every build: watch only those that do.
            if let Some(path) = git(
                dir,
                &["rev-parse", "--path-format=absolute", "--git-path", &p],
            )
            .filter(|path| Path::new(path).exists())
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        (r, "git")
    } else {
        ("unknown".to_string(), "none")
    };
    println!("cargo:rustc-env=K42VMM_GIT_REVISION={revision}");
    println!("cargo:rustc-env=K42VMM_GIT_REVISION_SOURCE={source}");
}
