//! k42vmm boot images.
//!
//! An image is one file: a cpio archive in the SVR4 "newc" format (so that
//! `cpio -t < default.img` lists it) whose entries are
//!
//! ```text
//! manifest.toml      what the image holds (see [`Manifest`]); first entry
//! kernel             the kernel, an x86_64 ELF carrying a k42 ABI note
//! modules/NAME       boot modules, loaded into guest memory for the kernel
//! ```
//!
//! [`Image::open`] reads and checks an image; [`recipe`] builds one from a
//! recipe file; [`kernel::inspect`] checks a kernel ELF.

pub mod kernel;
pub mod manifest;
pub mod recipe;

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use manifest::{Manifest, ModuleEntry};

/// Name of the manifest entry inside an image.
pub const MANIFEST_NAME: &str = "manifest.toml";

/// Everything that can be wrong with an image, each naming the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0}: no such file")]
    NotFound(PathBuf),
    #[error("image {0} is a directory, not an image file")]
    IsDirectory(PathBuf),
    #[error("image {0}: cannot read it: {1}")]
    Unreadable(PathBuf, io::Error),
    #[error("{0} is not a k42 image: {1}")]
    NotAnImage(PathBuf, String),
    #[error("image {0}: bad manifest: {1}")]
    BadManifest(PathBuf, String),
    #[error("image {0} has no kernel: the manifest names '{1}' but the archive lacks it")]
    NoKernel(PathBuf, String),
    #[error("image {0}: the manifest names module '{1}' at '{2}' but the archive lacks it")]
    MissingModule(PathBuf, String, String),
    #[error("image {0}: {1}")]
    BadKernel(PathBuf, kernel::KernelError),
}

/// A boot module: a named file the kernel receives in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

/// A checked image, read into memory once; the kernel and the modules
/// are slices of the file's bytes (copying them would cost page faults for
/// every megabyte at each start of k42vmm).
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub kernel_info: kernel::KernelInfo,
    bytes: Vec<u8>,
    kernel: Range<usize>,
    modules: Vec<(String, Range<usize>)>,
}

/// A boot module of an [`Image`].
#[derive(Clone, Copy, Debug)]
pub struct ModuleData<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

impl Image {
    /// Read the image at `path` and check everything k42vmm relies on: the
    /// archive, the manifest, the kernel (x86_64 ELF with a matching ABI
    /// note) and every module the manifest lists.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let p = path.to_path_buf();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(p.clone()),
            _ => ImageError::Unreadable(p.clone(), e),
        })?;
        if meta.is_dir() {
            return Err(ImageError::IsDirectory(p));
        }
        let bytes = std::fs::read(path).map_err(|e| ImageError::Unreadable(p.clone(), e))?;
        Self::parse(path, bytes)
    }

    /// Check an image already in memory; `path` is used in messages only.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, ImageError> {
        let p = path.to_path_buf();
        let entries = read_archive(&bytes).map_err(|why| ImageError::NotAnImage(p.clone(), why))?;
        let Some((first, manifest_range)) = entries.first() else {
            return Err(ImageError::NotAnImage(p, "the archive is empty".into()));
        };
        if first != MANIFEST_NAME {
            return Err(ImageError::NotAnImage(
                p,
                format!("its first entry is '{first}', not {MANIFEST_NAME}"),
            ));
        }
        let text = std::str::from_utf8(&bytes[manifest_range.clone()])
            .map_err(|_| ImageError::BadManifest(p.clone(), "not UTF-8".into()))?;
        let manifest =
            Manifest::parse(text).map_err(|why| ImageError::BadManifest(p.clone(), why))?;
        let find = |name: &str| {
            entries
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.clone())
        };
        let kernel = find(&manifest.kernel)
            .ok_or_else(|| ImageError::NoKernel(p.clone(), manifest.kernel.clone()))?;
        let kernel_info = kernel::inspect(&bytes[kernel.clone()])
            .map_err(|e| ImageError::BadKernel(p.clone(), e))?;
        let mut modules = Vec::with_capacity(manifest.modules.len());
        for m in &manifest.modules {
            let range = find(&m.file).ok_or_else(|| {
                ImageError::MissingModule(p.clone(), m.name.clone(), m.file.clone())
            })?;
            modules.push((m.name.clone(), range));
        }
        Ok(Self {
            path: p,
            manifest,
            kernel_info,
            bytes,
            kernel,
            modules,
        })
    }

    /// The kernel ELF.
    pub fn kernel(&self) -> &[u8] {
        &self.bytes[self.kernel.clone()]
    }

    /// The boot modules, in manifest order.
    pub fn modules(&self) -> impl ExactSizeIterator<Item = ModuleData<'_>> {
        self.modules.iter().map(|(name, r)| ModuleData {
            name,
            data: &self.bytes[r.clone()],
        })
    }
}

/// Write an image: the manifest first, then the kernel and module files.
pub fn write_image(
    out: &mut impl io::Write,
    manifest: &Manifest,
    kernel: &[u8],
    modules: &[Module],
) -> io::Result<()> {
    let manifest_text = manifest.to_toml();
    let mut files: Vec<(&str, &[u8])> = vec![
        (MANIFEST_NAME, manifest_text.as_bytes()),
        (&manifest.kernel, kernel),
    ];
    for (entry, module) in manifest.modules.iter().zip(modules) {
        files.push((&entry.file, &module.data));
    }
    let mut w = out;
    for (ino, (name, data)) in files.into_iter().enumerate() {
        let len = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is over 4 GiB"))
        })?;
        let mut fw = cpio::NewcBuilder::new(name)
            .ino(ino as u32)
            .mode(0o100644)
            .nlink(1)
            .write(w, len);
        fw.write_all(data)?;
        w = fw.finish()?;
    }
    cpio::newc::trailer(w)?;
    Ok(())
}

/// Every regular entry of a newc archive, in order, as (name, where its
/// contents lie in `bytes`).
fn read_archive(bytes: &[u8]) -> Result<Vec<(String, Range<usize>)>, String> {
    let mut cursor = io::Cursor::new(bytes);
    let mut entries: Vec<(String, Range<usize>)> = Vec::new();
    loop {
        if cursor.position() as usize >= bytes.len() {
            return Err("the archive ends without a cpio trailer (truncated?)".into());
        }
        let mut reader = cpio::NewcReader::new(cursor).map_err(|e| {
            if entries.is_empty() {
                "not a cpio newc archive".to_string()
            } else {
                format!("damaged cpio archive: {e}")
            }
        })?;
        if reader.entry().is_trailer() {
            return Ok(entries);
        }
        let name = reader.entry().name().trim_start_matches("./").to_string();
        let size = reader.entry().file_size() as usize;
        let start = reader
            .offset()
            .map_err(|e| format!("damaged entry '{name}': {e}"))? as usize;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                format!("entry '{name}' claims {size} bytes, more than the file holds (truncated?)")
            })?;
        cursor = reader
            .skip()
            .map_err(|e| format!("damaged entry '{name}': {e}"))?;
        if cursor.position() as usize > bytes.len() {
            return Err(format!("entry '{name}' is truncated"));
        }
        if entries.iter().any(|(n, _)| *n == name) {
            return Err(format!("entry '{name}' appears twice"));
        }
        entries.push((name, start..end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_manifest() -> Manifest {
        Manifest {
            format: manifest::FORMAT,
            name: "t".into(),
            kernel: "kernel".into(),
            cmdline: "test=all".into(),
            modules: vec![ModuleEntry {
                name: "m".into(),
                file: "modules/m".into(),
            }],
        }
    }

    #[test]
    fn archive_round_trip() {
        let manifest = sample_manifest();
        let mut buf = Vec::new();
        write_image(
            &mut buf,
            &manifest,
            b"not really an elf",
            &[Module {
                name: "m".into(),
                data: vec![1, 2, 3],
            }],
        )
        .unwrap();
        let entries = read_archive(&buf).unwrap();
        let data = |i: usize| buf[entries[i].1.clone()].to_vec();
        assert_eq!(entries[0].0, MANIFEST_NAME);
        assert_eq!(
            (entries[1].0.as_str(), data(1)),
            ("kernel", b"not really an elf".to_vec())
        );
        assert_eq!(
            (entries[2].0.as_str(), data(2)),
            ("modules/m", vec![1, 2, 3])
        );
        // The kernel is not an ELF, so opening fails on the kernel check.
        let err = Image::parse(Path::new("x.img"), buf.clone()).unwrap_err();
        assert!(matches!(err, ImageError::BadKernel(..)), "{err}");
    }

    #[test]
    fn rejects_non_archives_and_truncation() {
        let err =
            Image::parse(Path::new("x.img"), b"hello world, this is text".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.img is not a k42 image: not a cpio newc archive"
        );
        let mut buf = Vec::new();
        write_image(
            &mut buf,
            &sample_manifest(),
            b"kernel bytes",
            &[Module {
                name: "m".into(),
                data: vec![9; 100],
            }],
        )
        .unwrap();
        let err = Image::parse(Path::new("x.img"), buf[..buf.len() - 200].to_vec()).unwrap_err();
        assert!(matches!(err, ImageError::NotAnImage(..)), "{err}");
        let err = Image::parse(Path::new("x.img"), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("not a k42 image"), "{err}");
    }

    #[test]
    fn missing_kernel_and_module_are_named() {
        let manifest = sample_manifest();
        let mut buf = Vec::new();
        let text = manifest.to_toml();
        let w = cpio::NewcBuilder::new(MANIFEST_NAME)
            .mode(0o100644)
            .write(&mut buf, text.len() as u32);
        let mut w = w;
        io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        let out = w.finish().unwrap();
        cpio::newc::trailer(out).unwrap();
        let err = Image::parse(Path::new("x.img"), buf.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image x.img has no kernel: the manifest names 'kernel' but the archive lacks it"
        );
    }

    #[test]
    fn missing_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let err = Image::open(&dir.path().join("nope.img")).unwrap_err();
        assert!(matches!(err, ImageError::NotFound(_)));
        let err = Image::open(dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::IsDirectory(_)));
    }
}
