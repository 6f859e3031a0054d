//! `k42-mkimage RECIPE -o IMAGE [--add HOST:GUEST]...`: build a k42vmm boot
//! image from a recipe; `k42-mkimage --list IMAGE`: what an image holds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k42_abi::boot::LINKS_MODULE;
use k42_image::Image;
use k42_image::recipe::{self, Add};

const USAGE: &str = "usage: k42-mkimage RECIPE.toml -o IMAGE [--add HOST:GUEST]...
       k42-mkimage --list IMAGE

Builds a k42vmm boot image (a cpio newc archive with a manifest, the
kernel and boot modules) from a recipe. --add puts host file or directory
HOST at absolute guest path GUEST in the file server (a directory's files
recursively, its symbolic links as links). --list prints an image's
modules ('module NAME BYTES') and links ('link PATH TARGET'). See the
Images section of README.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut recipe, mut out, mut list) = (None, None, None);
    let mut adds = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |opt: &str| {
            it.next().cloned().ok_or_else(|| {
                eprintln!("k42-mkimage: {opt} needs a value\n{USAGE}");
                ExitCode::from(2)
            })
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-o" | "--output" => match value(a) {
                Ok(v) => out = Some(PathBuf::from(v)),
                Err(code) => return code,
            },
            "--add" => match value(a).map(|v| Add::parse(&v)) {
                Ok(Ok(add)) => adds.push(add),
                Ok(Err(e)) => {
                    eprintln!("k42-mkimage: {e}");
                    return ExitCode::from(2);
                }
                Err(code) => return code,
            },
            "--list" => match value(a) {
                Ok(v) => list = Some(PathBuf::from(v)),
                Err(code) => return code,
            },
            _ if a.starts_with('-') => {
                eprintln!("k42-mkimage: unknown option '{a}'\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if recipe.is_none() => recipe = Some(PathBuf::from(a)),
            _ => {
                eprintln!("k42-mkimage: unexpected argument '{a}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(image) = list {
        if recipe.is_some() || out.is_some() || !adds.is_empty() {
            eprintln!("k42-mkimage: --list takes only an image\n{USAGE}");
            return ExitCode::from(2);
        }
        return match print_list(&image) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("k42-mkimage: {e}");
                ExitCode::from(2)
            }
        };
    }
    let (Some(recipe), Some(out)) = (recipe, out) else {
        eprintln!("k42-mkimage: a recipe and -o IMAGE are required\n{USAGE}");
        return ExitCode::from(2);
    };
    match recipe::build(&recipe, &adds, &out) {
        Ok(b) => {
            println!(
                "k42-mkimage: wrote {} (image '{}', {} module(s): {} file(s), {} link(s))",
                out.display(),
                b.manifest.name,
                b.manifest.modules.len(),
                b.files,
                b.links
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("k42-mkimage: {e}");
            ExitCode::from(2)
        }
    }
}

/// Print an image's modules and links.
fn print_list(path: &Path) -> Result<(), String> {
    let image = Image::open(path).map_err(|e| e.to_string())?;
    println!(
        "image '{}': kernel {} bytes, cmdline '{}'",
        image.manifest.name,
        image.kernel().len(),
        image.manifest.cmdline
    );
    let mut links = Vec::new();
    for m in image.modules() {
        println!("module {} {}", m.name, m.data.len());
        if m.name == LINKS_MODULE {
            let text = std::str::from_utf8(m.data)
                .map_err(|_| format!("image {}: {LINKS_MODULE} is not UTF-8", path.display()))?;
            for l in k42_abi::boot::links(text) {
                links.push(l.map_err(|line| {
                    format!(
                        "image {}: {LINKS_MODULE} line {line} is not PATH<tab>TARGET",
                        path.display()
                    )
                })?);
            }
        }
    }
    for (path, target) in links {
        println!("link {path} {target}");
    }
    Ok(())
}
