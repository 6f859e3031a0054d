//! Image recipes: the TOML files under `images/` that say what goes into an
//! image. Paths are relative to the recipe's directory.
//!
//! ```toml
//! name = "default"
//! kernel = "../target/x86_64-unknown-none/release/k42-kernel"
//! cmdline = "test=all"
//!
//! [[modules]]
//! name = "hello"
//! path = "../target/x86_64-unknown-none/release/hello"
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::{FORMAT, Manifest, ModuleEntry};
use crate::{Module, kernel, write_image};

/// A parsed recipe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub kernel: PathBuf,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub modules: Vec<RecipeModule>,
}

/// A module in a recipe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeModule {
    pub name: String,
    pub path: PathBuf,
}

/// Read the recipe at `path`.
pub fn load(path: &Path) -> Result<Recipe, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("recipe {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("recipe {}: {}", path.display(), e.message()))
}

/// Build the image a recipe describes and write it to `out` atomically (a
/// temporary file renamed into place), so a failed build never leaves a
/// half-written image behind.
pub fn build(recipe_path: &Path, out: &Path) -> Result<Manifest, String> {
    let recipe = load(recipe_path)?;
    let base = recipe_path.parent().unwrap_or(Path::new("."));
    let read = |p: &Path| {
        let full = base.join(p);
        std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))
    };
    let kernel_bytes = read(&recipe.kernel)?;
    kernel::inspect(&kernel_bytes)
        .map_err(|e| format!("{}: {e}", base.join(&recipe.kernel).display()))?;
    let mut modules = Vec::new();
    let mut entries = Vec::new();
    for m in &recipe.modules {
        modules.push(Module {
            name: m.name.clone(),
            data: read(&m.path)?,
        });
        entries.push(ModuleEntry {
            name: m.name.clone(),
            file: format!("modules/{}", m.name),
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        name: recipe.name.clone(),
        kernel: "kernel".into(),
        cmdline: recipe.cmdline.clone(),
        modules: entries,
    };
    manifest
        .check()
        .map_err(|e| format!("recipe {}: {e}", recipe_path.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = out.with_extension("img.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write_image(&mut f, &manifest, &kernel_bytes, &modules)?;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", out.display()));
    }
    Ok(manifest)
}
