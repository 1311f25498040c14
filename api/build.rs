//! Puts the git commit the binary is built from into `rollout --version`
//! (`ROLLOUT_COMMIT`; "unknown commit" outside a git checkout, e.g. from a source tarball).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| format!("commit {}", s.trim()))
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=ROLLOUT_COMMIT={commit}");
    // Rebuilt when HEAD moves (a new commit, a checkout, a ref packed away); watching a
    // file that does not exist would rebuild every time, so only those that do.
    let mut watched = vec!["build.rs".to_owned()];
    watched.extend(["../.git/HEAD".to_owned(), "../.git/packed-refs".to_owned()]);
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            watched.push(format!("../.git/{reference}"));
        }
    }
    for path in watched {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
