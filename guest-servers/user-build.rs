//! The build script every user program shares (each program's Cargo.toml
//! names it with `build = "../user-build.rs"`): link as a static user
//! program at USER_BASE with `user.ld`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../user.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/../user.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-znoexecstack");
}
