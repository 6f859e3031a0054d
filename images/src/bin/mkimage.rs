//! `k42-mkimage RECIPE -o IMAGE`: build a k42vmm boot image from a recipe.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: k42-mkimage RECIPE.toml -o IMAGE\n\nBuilds a k42vmm boot image (a cpio newc archive with a manifest, the\nkernel and boot modules) from a recipe; see images/README.md.";
    let (mut recipe, mut out) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            "-o" | "--output" => out = it.next().map(PathBuf::from),
            _ if a.starts_with('-') => {
                eprintln!("k42-mkimage: unknown option '{a}'\n{usage}");
                return ExitCode::from(2);
            }
            _ if recipe.is_none() => recipe = Some(PathBuf::from(a)),
            _ => {
                eprintln!("k42-mkimage: unexpected argument '{a}'\n{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(recipe), Some(out)) = (recipe, out) else {
        eprintln!("k42-mkimage: a recipe and -o IMAGE are required\n{usage}");
        return ExitCode::from(2);
    };
    match k42_image::recipe::build(&recipe, &out) {
        Ok(m) => {
            println!(
                "k42-mkimage: wrote {} (image '{}', {} module(s))",
                out.display(),
                m.name,
                m.modules.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("k42-mkimage: {e}");
            ExitCode::from(2)
        }
    }
}
