//! Image recipes: the TOML files under `images/` that say what goes into an
//! image. Paths on the host are relative to the recipe's directory.
//!
//! ```toml
//! name = "default"
//! kernel = "../target/x86_64-unknown-none/release/k42-kernel"
//! cmdline = "test=all"
//! # Files of `PATH TARGET` lines, each a symbolic link (`#` comments).
//! link_lists = ["busybox-links.txt"]
//!
//! [[modules]]
//! name = "hello"
//! path = "../target/x86_64-unknown-none/release/hello"
//!
//! # A module named fs/PATH is the file /PATH of the guest's file server.
//! [[modules]]
//! name = "fs/etc/motd"
//! path = "fs/etc/motd"
//!
//! # A symbolic link /bin/sh holding `busybox`.
//! [[links]]
//! path = "/bin/sh"
//! target = "busybox"
//!
//! # A host file or directory tree at a guest path (as `k42-mkimage --add`).
//! [[add]]
//! host = "rootfs/usr"
//! guest = "/usr"
//!
//! # A dynamically linked Linux program at a guest path, with what it
//! # needs to run: its interpreter (ld.so) and the libraries `ldd` lists,
//! # each at its host path (symbolic links on the way, such as Debian's
//! # /lib -> usr/lib, become links), and the host's /etc/ld.so.cache.
//! [[linux_programs]]
//! host = "/usr/bin/postmark"
//! guest = "/bin/postmark"
//! ```
//!
//! Files become `fs/PATH` modules and links one [`LINKS_MODULE`] module
//! (its format is there). Every problem is reported as one line naming
//! where it comes from (`recipe.toml:12`, `links.txt:3`, `--add A:B`), and
//! nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use k42_abi::boot::{FS_PREFIX, LINKS_MODULE, MAX_MODULE_NAME, MAX_MODULES};
use k42_abi::fs::{MAX_NAME, MAX_PATH};
use serde::Deserialize;
use toml::Spanned;

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
    /// Files of `PATH TARGET` lines, each a link.
    #[serde(default)]
    pub link_lists: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    pub modules: Vec<RecipeModule>,
    #[serde(default)]
    pub links: Vec<RecipeLink>,
    #[serde(default)]
    pub add: Vec<RecipeAdd>,
    #[serde(default)]
    pub linux_programs: Vec<RecipeAdd>,
}

/// A module in a recipe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeModule {
    pub name: Spanned<String>,
    pub path: PathBuf,
}

/// A symbolic link in a recipe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeLink {
    pub path: Spanned<String>,
    pub target: String,
}

/// A host file or tree in a recipe (`[[add]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeAdd {
    pub host: Spanned<PathBuf>,
    pub guest: String,
}

/// `--add HOST:GUEST`: host file or directory `host` at guest path `guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    pub host: PathBuf,
    pub guest: String,
}

impl Add {
    /// Parse `HOST:GUEST`, split at the last `:` (a host path may hold
    /// one; a guest path may not).
    pub fn parse(arg: &str) -> Result<Self, String> {
        match arg.rsplit_once(':') {
            Some((host, guest)) if !host.is_empty() && !guest.is_empty() => Ok(Self {
                host: PathBuf::from(host),
                guest: guest.to_string(),
            }),
            _ => Err(format!(
                "--add {arg}: expected HOST:GUEST (a host file or directory, then an absolute guest path)"
            )),
        }
    }
}

/// Read the recipe at `path`, with its text (for line numbers).
pub fn load(path: &Path) -> Result<(Recipe, String), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("recipe {}: {e}", path.display()))?;
    let recipe = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(":{}", line_of(&text, s.start)))
            .unwrap_or_default();
        format!("recipe {}{at}: {}", path.display(), e.message())
    })?;
    Ok((recipe, text))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// What [`build`] wrote.
#[derive(Clone, Debug)]
pub struct Built {
    pub manifest: Manifest,
    /// `fs/` files among the modules.
    pub files: usize,
    /// Links in the [`LINKS_MODULE`].
    pub links: usize,
}

/// An image's contents before writing: the kernel, the modules in order.
#[derive(Clone, Debug)]
pub struct Assembled {
    pub manifest: Manifest,
    pub kernel: Vec<u8>,
    pub modules: Vec<Module>,
    pub files: usize,
    pub links: usize,
}

/// Build the image a recipe describes, plus `adds`, and write it to `out`
/// atomically (a temporary file renamed into place), so a failed build
/// never leaves a half-written image behind.
pub fn build(recipe_path: &Path, adds: &[Add], out: &Path) -> Result<Built, String> {
    let a = assemble(recipe_path, adds)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = out.with_extension("img.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write_image(&mut f, &a.manifest, &a.kernel, &a.modules)?;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", out.display()));
    }
    Ok(Built {
        manifest: a.manifest,
        files: a.files,
        links: a.links,
    })
}

/// Read and check everything a recipe and `adds` put in an image.
pub fn assemble(recipe_path: &Path, adds: &[Add]) -> Result<Assembled, String> {
    let (recipe, text) = load(recipe_path)?;
    let base = recipe_path.parent().unwrap_or(Path::new("."));
    let at = |offset: usize| format!("{}:{}", recipe_path.display(), line_of(&text, offset));
    let read = |p: &Path, origin: &str| {
        let full = base.join(p);
        std::fs::read(&full).map_err(|e| format!("{origin}: {}: {e}", full.display()))
    };
    let mut c = Contents::default();
    for m in &recipe.modules {
        let origin = at(m.name.span().start);
        let name = m.name.get_ref();
        let data = read(&m.path, &origin)?;
        match name.strip_prefix(FS_PREFIX) {
            Some(rest) => c.file(&format!("/{rest}"), data, &origin)?,
            None => c.module(name, data, &origin)?,
        }
    }
    for l in &recipe.links {
        c.link(l.path.get_ref(), &l.target, &at(l.path.span().start))?;
    }
    for list in &recipe.link_lists {
        let full = base.join(list.get_ref());
        let text = std::fs::read_to_string(&full).map_err(|e| {
            format!(
                "{}: link list {}: {e}",
                at(list.span().start),
                full.display()
            )
        })?;
        for (path, target, line) in parse_link_list(&text)
            .map_err(|(line, why)| format!("{}:{line}: {why}", full.display()))?
        {
            c.link(path, target, &format!("{}:{line}", full.display()))?;
        }
    }
    for a in &recipe.add {
        let origin = at(a.host.span().start);
        c.add(&base.join(a.host.get_ref()), &a.guest, &origin)?;
    }
    for a in adds {
        let origin = format!("--add {}:{}", a.host.display(), a.guest);
        c.add(&a.host, &a.guest, &origin)?;
    }
    for p in &recipe.linux_programs {
        let origin = at(p.host.span().start);
        let host = base.join(p.host.get_ref());
        c.add(&host, &p.guest, &origin)?;
        for lib in libraries(&host).map_err(|e| format!("{origin}: {e}"))? {
            c.host_path(&lib, &origin)?;
        }
        c.host_path(Path::new(LD_SO_CACHE), &origin)?;
    }
    let (modules, files, links) = c
        .finish()
        .map_err(|e| format!("recipe {}: {e}", recipe_path.display()))?;
    let kernel_path = base.join(&recipe.kernel);
    let kernel =
        std::fs::read(&kernel_path).map_err(|e| format!("{}: {e}", kernel_path.display()))?;
    kernel::inspect(&kernel).map_err(|e| format!("{}: {e}", kernel_path.display()))?;
    let manifest = Manifest {
        format: FORMAT,
        name: recipe.name.clone(),
        kernel: "kernel".into(),
        cmdline: recipe.cmdline.clone(),
        modules: modules
            .iter()
            .map(|m| ModuleEntry {
                name: m.name.clone(),
                file: format!("modules/{}", m.name),
            })
            .collect(),
    };
    manifest
        .check()
        .map_err(|e| format!("recipe {}: {e}", recipe_path.display()))?;
    Ok(Assembled {
        manifest,
        kernel,
        modules,
        files,
        links,
    })
}

/// The dynamic linker's cache of library paths, which goes into an image
/// with a dynamically linked program.
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// The interpreter and libraries dynamically linked program `host`
/// needs, as `ldd` lists them (absolute host paths; the vDSO, which has
/// none, left out).
fn libraries(host: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(host)
        .output()
        .map_err(|e| format!("ldd {}: {e}", host.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: not a dynamically linked program (ldd: {})",
            host.display(),
            text.trim()
        ));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `NAME => PATH (ADDRESS)`, `PATH (ADDRESS)` or `NAME (ADDRESS)`.
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(format!("{}: ldd: {line}", host.display()));
        }
        let path = line.rsplit_once("=> ").map_or(line, |(_, p)| p);
        let path = path.split(" (").next().unwrap_or(path);
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A link of a link list: `(path, target, line number from 1)`.
pub type ListedLink<'a> = (&'a str, &'a str, usize);

/// The links of a link list: `(path, target, line)` for each line
/// `PATH TARGET` (whitespace between; blank lines and lines starting with
/// `#` skipped); `Err((line, why))` for a line of another shape. The paths
/// and targets are checked where they are added.
pub fn parse_link_list(text: &str) -> Result<Vec<ListedLink<'_>>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        match fields[..] {
            [path, target] => out.push((path, target, line_no)),
            _ => {
                return Err((
                    line_no,
                    format!(
                        "expected 'PATH TARGET', got {} field(s): '{t}'",
                        fields.len()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Check a guest path of a file or link (`what` names it in messages):
/// absolute, no empty, `.` or `..` names, within the file server's
/// limits, and nothing the [`LINKS_MODULE`] format cannot carry.
pub fn check_guest_path(what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} '{p}' is not absolute"));
    }
    if p == "/" {
        return Err(format!("{what} '/' is the root directory"));
    }
    if p.contains(['\t', '\n', '\r', '\0']) {
        return Err(format!(
            "{what} '{}' holds a tab, newline or NUL",
            p.escape_debug()
        ));
    }
    if p.len() > MAX_PATH {
        return Err(format!(
            "{what} '{p}' is {} bytes, over the file server's limit of {MAX_PATH}",
            p.len()
        ));
    }
    for name in p[1..].split('/') {
        match name {
            "" => {
                return Err(format!(
                    "{what} '{p}' has an empty name (a '//' or a trailing '/')"
                ));
            }
            "." | ".." => return Err(format!("{what} '{p}' has a '{name}' name")),
            _ if name.len() > MAX_NAME => {
                return Err(format!(
                    "{what} '{p}' has a name of {} bytes, over the file server's limit of {MAX_NAME}",
                    name.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check a link's target: what the link holds, relative or absolute.
pub fn check_link_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("the link target is empty".into());
    }
    if target.contains(['\t', '\n', '\r', '\0']) {
        return Err(format!(
            "link target '{}' holds a tab, newline or NUL",
            target.escape_debug()
        ));
    }
    if target.len() > MAX_PATH {
        return Err(format!(
            "link target '{target}' is {} bytes, over the file server's limit of {MAX_PATH}",
            target.len()
        ));
    }
    Ok(())
}

/// Whether a guest path is a file or a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Link,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Link => "link",
        }
    }
}

/// An image's modules, files and links as they are gathered, each with
/// where it came from, for messages.
#[derive(Default)]
struct Contents {
    modules: Vec<Module>,
    /// Module name → origin.
    names: HashMap<String, String>,
    /// Guest path of every file and link → (kind, origin).
    paths: BTreeMap<String, (Kind, String)>,
    /// Link path → target.
    links: BTreeMap<String, String>,
    files: usize,
}

impl Contents {
    fn module(&mut self, name: &str, data: Vec<u8>, origin: &str) -> Result<(), String> {
        if name == LINKS_MODULE {
            return Err(format!(
                "{origin}: module name '{LINKS_MODULE}' is reserved for the image's links (give them as [[links]] or link_lists)"
            ));
        }
        if name.is_empty() || name.len() > MAX_MODULE_NAME || name.contains('\0') {
            return Err(format!(
                "{origin}: module name '{}' must be 1 to {MAX_MODULE_NAME} bytes without NUL (k42_abi::boot::MAX_MODULE_NAME)",
                name.escape_debug()
            ));
        }
        if let Some(other) = self.names.get(name) {
            return Err(format!(
                "{origin}: module '{name}' is already in the image (from {other})"
            ));
        }
        self.names.insert(name.to_string(), origin.to_string());
        self.modules.push(Module {
            name: name.to_string(),
            data,
        });
        Ok(())
    }

    fn claim(&mut self, path: &str, kind: Kind, origin: &str) -> Result<(), String> {
        check_guest_path(&format!("{} path", kind.noun()), path)
            .map_err(|e| format!("{origin}: {e}"))?;
        if let Some((k, other)) = self.paths.get(path) {
            return Err(format!(
                "{origin}: {} {path}: {path} is already a {} (from {other})",
                kind.noun(),
                k.noun()
            ));
        }
        self.paths
            .insert(path.to_string(), (kind, origin.to_string()));
        Ok(())
    }

    /// File `path` (absolute): module `fs/PATH`.
    fn file(&mut self, path: &str, data: Vec<u8>, origin: &str) -> Result<(), String> {
        check_guest_path("file path", path).map_err(|e| format!("{origin}: {e}"))?;
        let name = format!("{}{}", FS_PREFIX.trim_end_matches('/'), path);
        if name.len() > MAX_MODULE_NAME {
            return Err(format!(
                "{origin}: file path {path} is {} bytes, over the limit of {} for files (its module name {name} would be over the boot ABI's {MAX_MODULE_NAME}, k42_abi::boot::MAX_MODULE_NAME)",
                path.len(),
                MAX_MODULE_NAME - FS_PREFIX.len() + 1
            ));
        }
        self.claim(path, Kind::File, origin)?;
        self.module(&name, data, origin)?;
        self.files += 1;
        Ok(())
    }

    fn link(&mut self, path: &str, target: &str, origin: &str) -> Result<(), String> {
        check_link_target(target).map_err(|e| format!("{origin}: link {path}: {e}"))?;
        self.claim(path, Kind::Link, origin)?;
        self.links.insert(path.to_string(), target.to_string());
        Ok(())
    }

    /// Host file or tree `host` at guest path `guest`. A file at a guest
    /// path ending in `/` goes into that directory under its own name. In
    /// a tree, symbolic links become links (not followed); anything but
    /// files, directories and links is an error.
    fn add(&mut self, host: &Path, guest: &str, origin: &str) -> Result<(), String> {
        if !guest.starts_with('/') {
            return Err(format!("{origin}: guest path '{guest}' is not absolute"));
        }
        let meta = std::fs::metadata(host).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{origin}: host path {} does not exist", host.display())
            }
            _ => format!("{origin}: host path {}: {e}", host.display()),
        })?;
        if meta.is_dir() {
            let root = guest.trim_end_matches('/');
            if !root.is_empty() {
                check_guest_path("guest path", root).map_err(|e| format!("{origin}: {e}"))?;
            }
            self.add_tree(host, root, origin)
        } else if meta.is_file() {
            let path = if guest.ends_with('/') {
                let name = host_name(host, origin)?;
                format!("{guest}{name}")
            } else {
                guest.to_string()
            };
            let data = std::fs::read(host)
                .map_err(|e| format!("{origin}: host file {}: {e}", host.display()))?;
            self.file(&path, data, origin)
        } else {
            Err(format!(
                "{origin}: host path {} is {}, not a file or directory",
                host.display(),
                special_kind(&meta.file_type())
            ))
        }
    }

    /// Host file `path` (absolute) at the same guest path, each symbolic
    /// link met on the way there a link in the image (so that both the
    /// path and the file's real path name it); nothing if already there.
    fn host_path(&mut self, path: &Path, origin: &str) -> Result<(), String> {
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{origin}: host path {} is not UTF-8", p.display()))
        };
        let mut todo: Vec<String> = utf8(path)?
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut at = String::new();
        let mut links_met = 0;
        while let Some(name) = todo.pop() {
            if name == "." {
                continue;
            }
            if name == ".." {
                at.truncate(at.rfind('/').unwrap_or(0));
                continue;
            }
            let next = format!("{at}/{name}");
            let meta = std::fs::symlink_metadata(&next)
                .map_err(|e| format!("{origin}: host path {next}: {e}"))?;
            if !meta.file_type().is_symlink() {
                at = next;
                continue;
            }
            links_met += 1;
            if links_met > 40 {
                return Err(format!(
                    "{origin}: host path {}: too many links",
                    path.display()
                ));
            }
            let target =
                utf8(&std::fs::read_link(&next).map_err(|e| format!("{origin}: {next}: {e}"))?)?;
            if self.links.get(&next) != Some(&target) {
                self.link(&next, &target, origin)?;
            }
            if target.starts_with('/') {
                at.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        }
        if matches!(self.paths.get(&at), Some((Kind::File, _))) {
            return Ok(());
        }
        self.add(Path::new(&at), &at, origin)
    }

    /// Every entry of host directory `dir` under guest directory `guest`
    /// (`""` for the root), in name order.
    fn add_tree(&mut self, dir: &Path, guest: &str, origin: &str) -> Result<(), String> {
        let read_err =
            |e: std::io::Error| format!("{origin}: host directory {}: {e}", dir.display());
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let host = e.path();
            let name = host_name(&host, origin)?;
            let path = format!("{guest}/{name}");
            let ty = e
                .file_type()
                .map_err(|err| format!("{origin}: {}: {err}", host.display()))?;
            let inner = format!("{origin}: {}", host.display());
            if ty.is_dir() {
                check_guest_path("guest path", &path).map_err(|e| format!("{inner}: {e}"))?;
                self.add_tree(&host, &path, origin)?;
            } else if ty.is_symlink() {
                let target = std::fs::read_link(&host).map_err(|e| format!("{inner}: {e}"))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| format!("{inner}: the link's target is not UTF-8"))?;
                self.link(&path, target, &inner)?;
            } else if ty.is_file() {
                let data = std::fs::read(&host).map_err(|e| format!("{inner}: {e}"))?;
                self.file(&path, data, &inner)?;
            } else {
                return Err(format!(
                    "{inner} is {}, not a file, directory or symbolic link",
                    special_kind(&ty)
                ));
            }
        }
        Ok(())
    }

    /// The modules, with the [`LINKS_MODULE`] last when there are links,
    /// and the numbers of files and links; checks that no file or link
    /// lies under another and the module count.
    fn finish(mut self) -> Result<(Vec<Module>, usize, usize), String> {
        for (path, (kind, origin)) in &self.paths {
            let mut at = path.len();
            while let Some(slash) = path[..at].rfind('/').filter(|&s| s > 0) {
                at = slash;
                if let Some((k, other)) = self.paths.get(&path[..at]) {
                    return Err(format!(
                        "{origin}: {} {path} lies under {}, which is a {} (from {other}), not a directory",
                        kind.noun(),
                        &path[..at],
                        k.noun()
                    ));
                }
            }
        }
        let links = self.links.len();
        if links > 0 {
            let mut text = String::new();
            for (path, target) in &self.links {
                text.push_str(path);
                text.push('\t');
                text.push_str(target);
                text.push('\n');
            }
            self.modules.push(Module {
                name: LINKS_MODULE.into(),
                data: text.into_bytes(),
            });
        }
        if self.modules.len() > MAX_MODULES {
            return Err(format!(
                "the image would have {} modules ({} of them fs/ files), over the boot ABI's limit of {MAX_MODULES} (k42_abi::boot::MAX_MODULES); links take no module of their own",
                self.modules.len(),
                self.files
            ));
        }
        Ok((self.modules, self.files, links))
    }
}

/// The last name of a host path, as UTF-8.
fn host_name<'a>(host: &'a Path, origin: &str) -> Result<&'a str, String> {
    host.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{origin}: host name {} is not UTF-8", host.display()))
}

/// What a special file is, for messages.
fn special_kind(ty: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_char_device() {
        "a character device"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_arguments_split_at_the_last_colon() {
        let a = Add::parse("dir:/usr/share").unwrap();
        assert_eq!(
            (a.host, a.guest),
            (PathBuf::from("dir"), "/usr/share".into())
        );
        let a = Add::parse("a:b:/c").unwrap();
        assert_eq!((a.host, a.guest), (PathBuf::from("a:b"), "/c".into()));
        for bad in ["nocolon", ":/x", "host:"] {
            assert!(
                Add::parse(bad).unwrap_err().contains("expected HOST:GUEST"),
                "{bad}"
            );
        }
    }

    #[test]
    fn link_lists_skip_blanks_and_comments() {
        let text = "# header\n\n/bin/ls /bin/busybox\n  /usr/bin/env\tbusybox  \n# end\n";
        assert_eq!(
            parse_link_list(text).unwrap(),
            [
                ("/bin/ls", "/bin/busybox", 3),
                ("/usr/bin/env", "busybox", 4)
            ]
        );
        let (line, why) = parse_link_list("/a b\n\n/c\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("expected 'PATH TARGET', got 1 field"), "{why}");
        let (line, _) = parse_link_list("/a b c\n").unwrap_err();
        assert_eq!(line, 1);
    }

    #[test]
    fn guest_paths_are_absolute_and_plain() {
        for ok in ["/bin/sh", "/a", "/usr/share/x.y/..z"] {
            check_guest_path("p", ok).unwrap();
        }
        let err = |p: &str| check_guest_path("link path", p).unwrap_err();
        assert_eq!(err("bin/sh"), "link path 'bin/sh' is not absolute");
        assert!(err("/").contains("root directory"));
        assert!(err("/a/../b").contains("a '..' name"));
        assert!(err("/a/./b").contains("a '.' name"));
        assert!(err("/a//b").contains("empty name"));
        assert!(err("/a/").contains("empty name"));
        assert!(err("/a\tb").contains("tab, newline or NUL"));
        assert!(
            err(&format!("/{}", "n".repeat(MAX_NAME + 1))).contains("over the file server's limit")
        );
        assert!(
            err(&"/abcd".repeat(MAX_PATH / 5 + 1)).contains("over the file server's limit of 200")
        );
        check_link_target("../lib/x").unwrap();
        assert!(check_link_target("").unwrap_err().contains("empty"));
        assert!(check_link_target("a\nb").unwrap_err().contains("newline"));
    }

    #[test]
    fn a_host_path_brings_the_links_on_its_way() {
        // dir/lib -> real, dir/real/x -> ../other/x.so, dir/other/x.so a file.
        let dir = std::env::temp_dir().join(format!("k42-hostpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::write(dir.join("other/x.so"), b"lib").unwrap();
        std::os::unix::fs::symlink("real", dir.join("lib")).unwrap();
        std::os::unix::fs::symlink("../other/x.so", dir.join("real/x")).unwrap();
        let d = dir.to_str().unwrap();
        let mut c = Contents::default();
        c.host_path(&dir.join("lib/x"), "r.toml:4").unwrap();
        // Again, as a second program needing it: nothing new.
        c.host_path(&dir.join("lib/x"), "r.toml:8").unwrap();
        let (modules, files, links) = c.finish().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((files, links), (1, 2));
        assert_eq!(modules[0].name, format!("fs{d}/other/x.so"));
        assert_eq!(modules[0].data, b"lib");
        assert_eq!(
            std::str::from_utf8(&modules[1].data).unwrap(),
            format!("{d}/lib\treal\n{d}/real/x\t../other/x.so\n")
        );
    }

    #[test]
    fn a_static_program_has_no_libraries_to_bring() {
        let err = libraries(Path::new("/bin/busybox")).unwrap_err();
        assert!(err.contains("not a dynamically linked program"), "{err}");
    }

    #[test]
    fn files_links_and_modules_never_collide() {
        let mut c = Contents::default();
        c.module("init", vec![1], "r.toml:3").unwrap();
        c.file("/bin/busybox", vec![2], "r.toml:5").unwrap();
        c.link("/bin/sh", "busybox", "r.toml:9").unwrap();
        assert_eq!(
            c.link("/bin/sh", "/bin/busybox", "l.txt:4").unwrap_err(),
            "l.txt:4: link /bin/sh: /bin/sh is already a link (from r.toml:9)"
        );
        assert_eq!(
            c.link("/bin/busybox", "x", "l.txt:5").unwrap_err(),
            "l.txt:5: link /bin/busybox: /bin/busybox is already a file (from r.toml:5)"
        );
        assert_eq!(
            c.file("/bin/sh", vec![], "--add a:/bin/sh").unwrap_err(),
            "--add a:/bin/sh: file /bin/sh: /bin/sh is already a link (from r.toml:9)"
        );
        assert!(
            c.module("init", vec![], "r.toml:20")
                .unwrap_err()
                .contains("module 'init' is already in the image (from r.toml:3)")
        );
        assert!(
            c.module(LINKS_MODULE, vec![], "r.toml:22")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            c.link("bin/ls", "busybox", "l.txt:6")
                .unwrap_err()
                .contains("l.txt:6: link path 'bin/ls' is not absolute")
        );
        let long = format!("/{}", "x".repeat(MAX_MODULE_NAME - 2));
        let err = c.file(&long, vec![], "--add f:/x").unwrap_err();
        assert!(
            err.contains("is 47 bytes, over the limit of 46 for files"),
            "{err}"
        );
        // Links may be longer: they travel in the links module.
        c.link(&format!("{long}/deeper"), "busybox", "l.txt:7")
            .unwrap();
        let (modules, files, links) = c.finish().unwrap();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["init", "fs/bin/busybox", LINKS_MODULE]);
        assert_eq!((files, links), (1, 2));
        assert_eq!(
            std::str::from_utf8(&modules[2].data).unwrap(),
            format!("/bin/sh\tbusybox\n{long}/deeper\tbusybox\n")
        );
    }

    #[test]
    fn nothing_lies_under_a_file_or_link() {
        let mut c = Contents::default();
        c.file("/etc/motd", vec![], "r.toml:1").unwrap();
        c.link("/etc/motd/x", "y", "l.txt:2").unwrap();
        assert_eq!(
            c.finish().unwrap_err(),
            "l.txt:2: link /etc/motd/x lies under /etc/motd, which is a file (from r.toml:1), not a directory"
        );
        let mut c = Contents::default();
        c.link("/lib", "usr/lib", "r.toml:1").unwrap();
        c.file("/lib/a/b", vec![], "r.toml:2").unwrap();
        assert!(
            c.finish()
                .unwrap_err()
                .contains("lies under /lib, which is a link")
        );
        // No module without links.
        let (modules, _, links) = Contents::default().finish().unwrap();
        assert!(modules.is_empty() && links == 0);
    }

    #[test]
    fn module_count_is_limited() {
        let mut c = Contents::default();
        for i in 0..MAX_MODULES {
            c.file(&format!("/f{i}"), vec![], "--add d:/").unwrap();
        }
        c.link("/l", "f0", "r.toml:1").unwrap();
        let err = c.finish().unwrap_err();
        assert!(
            err.contains("65 modules (64 of them fs/ files), over the boot ABI's limit of 64"),
            "{err}"
        );
    }

    #[test]
    fn trees_become_files_and_links() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tree");
        std::fs::create_dir_all(t.join("sub/empty")).unwrap();
        std::fs::write(t.join("a"), b"A").unwrap();
        std::fs::write(t.join("sub/b"), b"B").unwrap();
        symlink("../a", t.join("sub/l")).unwrap();
        symlink("/nowhere", t.join("dangling")).unwrap();
        let mut c = Contents::default();
        c.add(&t, "/opt/t/", "--add t:/opt/t/").unwrap();
        c.add(&t.join("a"), "/etc/", "--add a:/etc/").unwrap();
        c.add(&t.join("a"), "/", "--add a:/").unwrap();
        c.add(&t, "/", "--add t:/").unwrap_err(); // /a is already a file
        let (modules, files, links) = c.finish().unwrap();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fs/opt/t/a",
                "fs/opt/t/sub/b",
                "fs/etc/a",
                "fs/a",
                LINKS_MODULE
            ]
        );
        assert_eq!((files, links), (4, 2));
        assert_eq!(modules[1].data, b"B");
        assert_eq!(
            modules[4].data,
            b"/opt/t/dangling\t/nowhere\n/opt/t/sub/l\t../a\n"
        );

        let mut c = Contents::default();
        let err = c
            .add(&dir.path().join("nope"), "/x", "--add nope:/x")
            .unwrap_err();
        assert!(err.ends_with("nope does not exist"), "{err}");
        let err = c.add(&t, "x", "--add t:x").unwrap_err();
        assert_eq!(err, "--add t:x: guest path 'x' is not absolute");
        let err = c.add(&t, "/a/../b", "--add t:/a/../b").unwrap_err();
        assert!(err.contains("'..' name"), "{err}");
        let _sock = std::os::unix::net::UnixListener::bind(t.join("sub/sock")).unwrap();
        let err = Contents::default().add(&t, "/t", "--add t:/t").unwrap_err();
        assert!(
            err.starts_with("--add t:/t: ")
                && err.ends_with("sub/sock is a socket, not a file, directory or symbolic link"),
            "{err}"
        );
    }

    /// A recipe in `dir` with `body` after its header; its kernel is no
    /// ELF, so only errors found before the kernel check come back intact.
    fn recipe(dir: &Path, body: &str) -> PathBuf {
        std::fs::write(dir.join("kernel"), b"not an elf").unwrap();
        std::fs::write(dir.join("m"), b"module").unwrap();
        let p = dir.join("r.toml");
        std::fs::write(&p, format!("name = 'r'\nkernel = 'kernel'\n{body}")).unwrap();
        p
    }

    #[test]
    fn recipe_errors_name_the_line_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("out.img");
        let r = recipe(
            d,
            "link_lists = ['l.txt']\n[[modules]]\nname = 'fs/bin/ls'\npath = 'm'\n",
        );
        std::fs::write(d.join("l.txt"), "# c\n/bin/cat busybox\n/bin/ls busybox\n").unwrap();
        let err = build(&r, &[], &out).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}:3: link /bin/ls: /bin/ls is already a file (from {}:5)",
                d.join("l.txt").display(),
                r.display()
            )
        );
        assert!(!out.exists() && !d.join("out.img.tmp").exists());

        let r = recipe(
            d,
            "[[links]]\npath = '/a'\ntarget = 'b'\n\n[[links]]\npath = 'rel'\ntarget = 'b'\n",
        );
        let err = build(&r, &[], &out).unwrap_err();
        assert_eq!(
            err,
            format!("{}:8: link path 'rel' is not absolute", r.display())
        );

        let r = recipe(d, "link_lists = ['missing.txt']\n");
        let err = build(&r, &[], &out).unwrap_err();
        assert!(
            err.starts_with(&format!("{}:3: link list ", r.display())),
            "{err}"
        );

        let r = recipe(d, "[[links]]\npath = '/a'\ntarget = 'b'\nbogus = 1\n");
        let err = build(&r, &[], &out).unwrap_err();
        assert!(
            err.starts_with(&format!("recipe {}:6: unknown field `bogus`", r.display())),
            "{err}"
        );

        let r = recipe(d, "[[add]]\nhost = 'nope'\nguest = '/x'\n");
        let err = build(&r, &[], &out).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}:4: host path {} does not exist",
                r.display(),
                d.join("nope").display()
            )
        );

        // With everything else right, the kernel is the last check.
        let r = recipe(d, "[[links]]\npath = '/a'\ntarget = 'b'\n");
        let adds = [Add::parse(&format!("{}:/etc/m", d.join("m").display())).unwrap()];
        let err = build(&r, &adds, &out).unwrap_err();
        assert!(err.ends_with("the kernel is not an ELF file"), "{err}");
        let err = build(&r, &[Add::parse("m:/a").unwrap()], &out).unwrap_err();
        assert!(err.contains("host path m does not exist"), "{err}");
        assert!(!out.exists());
    }
}
