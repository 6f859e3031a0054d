//! Link the process programs: static, position-dependent at USER_BASE
//! with `user.ld` (as every user program, see `../user-build.rs`) —
//! except `hello-pie`, which is linked as the target's default, a static
//! position-independent executable the kernel relocates.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../user.ld");
    for bin in [
        "init",
        "hello",
        "proctest",
        "proc-bench",
        "ppctest",
        "nameserver",
        "fileserver",
        "fstest",
        "fs-bench",
        "cat",
    ] {
        println!("cargo:rustc-link-arg-bin={bin}=-T{dir}/../user.ld");
        println!("cargo:rustc-link-arg-bin={bin}=--no-pie");
        println!("cargo:rustc-link-arg-bin={bin}=-znoexecstack");
    }
    println!("cargo:rustc-link-arg-bin=hello-pie=-znoexecstack");
}
