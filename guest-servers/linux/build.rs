//! Link the personality position-dependent at
//! `k42_abi::linux::PERSONALITY_BASE` with `linux.ld`, its system-call
//! entry first.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/linux.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linux.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-znoexecstack");
}
