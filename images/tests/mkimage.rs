//! `k42-mkimage` end to end: a recipe with links and link lists, `--add`
//! of a host tree, `--list`, and errors that leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k42_abi::boot::LINKS_MODULE;
use k42_image::Image;

fn mkimage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k42-mkimage"))
        .args(args)
        .output()
        .expect("k42-mkimage runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The smallest kernel `k42_image::kernel::inspect` accepts: an x86_64
/// executable with one PT_LOAD segment and the k42 ABI note section.
fn tiny_kernel() -> Vec<u8> {
    let mut f = vec![0u8; 352];
    let put =
        |f: &mut Vec<u8>, at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &0x20_0000u64.to_le_bytes()); // entry
    put(&mut f, 32, &64u64.to_le_bytes()); // phoff
    put(&mut f, 40, &160u64.to_le_bytes()); // shoff
    for (at, v) in [(52, 64u16), (54, 56), (56, 1), (58, 64), (60, 3), (62, 2)] {
        put(&mut f, at, &v.to_le_bytes());
    }
    // PT_LOAD: 4 KiB of memory at 2 MiB, nothing from the file.
    put(&mut f, 64, &1u32.to_le_bytes());
    put(&mut f, 68, &5u32.to_le_bytes());
    for (at, v) in [
        (80, 0x20_0000u64),
        (88, 0x20_0000),
        (104, 0x1000),
        (112, 0x1000),
    ] {
        put(&mut f, at, &v.to_le_bytes());
    }
    // The note (magic, ABI version, zero) and the section names.
    put(&mut f, 120, &k42_abi::note::MAGIC);
    put(&mut f, 128, &k42_abi::ABI_VERSION.to_le_bytes());
    put(&mut f, 136, b"\0.k42_abi\0.shstrtab\0");
    // Section headers: null, .k42_abi, .shstrtab.
    let section = |f: &mut Vec<u8>, i: usize, name: u32, ty: u32, off: u64, size: u64| {
        let at = 160 + 64 * i;
        put(f, at, &name.to_le_bytes());
        put(f, at + 4, &ty.to_le_bytes());
        put(f, at + 24, &off.to_le_bytes());
        put(f, at + 32, &size.to_le_bytes());
        put(f, at + 48, &1u64.to_le_bytes());
    };
    section(&mut f, 1, 1, 1, 120, 16);
    section(&mut f, 2, 10, 3, 136, 20);
    f
}

/// A recipe directory: kernel, a module, a link list, and a host tree.
fn setup(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("kernel"), tiny_kernel()).unwrap();
    std::fs::write(dir.join("prog"), b"a program").unwrap();
    std::fs::write(
        dir.join("links.txt"),
        "# applets\n/bin/ls /bin/busybox\n\n/usr/bin/env /bin/busybox\n",
    )
    .unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("share/doc")).unwrap();
    std::fs::write(tree.join("share/doc/README"), b"read me").unwrap();
    std::fs::write(tree.join("top"), b"top").unwrap();
    std::os::unix::fs::symlink("share/doc/README", tree.join("readme")).unwrap();
    let recipe = dir.join("r.toml");
    std::fs::write(
        &recipe,
        "name = 't'\nkernel = 'kernel'\ncmdline = 'init=init'\nlink_lists = ['links.txt']\n\
         [[modules]]\nname = 'init'\npath = 'prog'\n\
         [[modules]]\nname = 'fs/bin/busybox'\npath = 'prog'\n\
         [[links]]\npath = '/bin/sh'\ntarget = 'busybox'\n\
         [[add]]\nhost = 'prog'\nguest = '/etc/'\n",
    )
    .unwrap();
    recipe
}

#[test]
fn add_links_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recipe = setup(d);
    let out = d.join("out/t.img");
    let tree = format!("{}:/usr/local", d.join("tree").display());
    let r = mkimage(&[
        recipe.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--add",
        &tree,
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("(image 't', 6 module(s): 4 file(s), 4 link(s))"),
        "{}",
        text(&r.stdout)
    );

    let image = Image::open(&out).unwrap();
    let modules: Vec<(&str, &[u8])> = image.modules().map(|m| (m.name, m.data)).collect();
    let links = "/bin/ls\t/bin/busybox\n/bin/sh\tbusybox\n/usr/bin/env\t/bin/busybox\n\
                 /usr/local/readme\tshare/doc/README\n";
    assert_eq!(
        modules,
        [
            ("init", &b"a program"[..]),
            ("fs/bin/busybox", b"a program"),
            ("fs/etc/prog", b"a program"),
            ("fs/usr/local/share/doc/README", b"read me"),
            ("fs/usr/local/top", b"top"),
            (LINKS_MODULE, links.as_bytes()),
        ]
    );

    let r = mkimage(&["--list", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(
        text(&r.stdout),
        format!(
            "image 't': kernel 352 bytes, cmdline 'init=init'\n\
             module init 9\nmodule fs/bin/busybox 9\nmodule fs/etc/prog 9\n\
             module fs/usr/local/share/doc/README 7\nmodule fs/usr/local/top 3\n\
             module fs.links {}\n\
             link /bin/ls /bin/busybox\nlink /bin/sh busybox\nlink /usr/bin/env /bin/busybox\n\
             link /usr/local/readme share/doc/README\n",
            links.len()
        )
    );
}

#[test]
fn bad_adds_fail_in_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recipe = setup(d);
    let out = d.join("t.img");
    let tree = d.join("tree");
    let _sock = std::os::unix::net::UnixListener::bind(tree.join("share/sock")).unwrap();
    let cases = [
        (
            format!("{}:/x", d.join("nope").display()),
            "does not exist".to_string(),
        ),
        (
            format!("{}:etc/motd", d.join("prog").display()),
            "guest path 'etc/motd' is not absolute".into(),
        ),
        (
            format!("{}:/bin/ls", d.join("prog").display()),
            "file /bin/ls: /bin/ls is already a link (from ".into(),
        ),
        (
            format!("{}:/etc/prog", d.join("prog").display()),
            format!(
                "file /etc/prog: /etc/prog is already a file (from {}:15)",
                recipe.display()
            ),
        ),
        (
            format!("{}:/t", tree.display()),
            format!(
                "{} is a socket, not a file, directory or symbolic link",
                tree.join("share/sock").display()
            ),
        ),
        ("no-guest-path".into(), "expected HOST:GUEST".into()),
    ];
    for (add, needle) in cases {
        let r = mkimage(&[
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--add",
            &add,
        ]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "--add {add}: {err}");
        assert!(
            err.starts_with("k42-mkimage: ") && err.contains(&needle),
            "--add {add}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "--add {add}: {err}");
        assert!(!out.exists(), "--add {add} wrote {}", out.display());
    }
}
