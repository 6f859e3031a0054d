//! The image manifest (`manifest.toml`): which archive entry is the kernel,
//! the default kernel command line, and the boot modules.
//!
//! ```toml
//! format = 1
//! name = "default"
//! kernel = "kernel"
//! cmdline = "test=all"
//!
//! [[modules]]
//! name = "hello"
//! file = "modules/hello"
//! ```

use k42_abi::boot::{MAX_CMDLINE, MAX_MODULE_NAME, MAX_MODULES};
use serde::{Deserialize, Serialize};

/// The manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;

/// What an image holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version ([`FORMAT`]).
    pub format: u32,
    /// Image name, for messages and reports.
    pub name: String,
    /// Archive entry holding the kernel ELF.
    pub kernel: String,
    /// Default kernel command line (`k42vmm run --cmdline` overrides it).
    #[serde(default)]
    pub cmdline: String,
    /// Boot modules, in the order the kernel sees them.
    #[serde(default)]
    pub modules: Vec<ModuleEntry>,
}

/// One boot module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Name the kernel sees (at most 48 bytes).
    pub name: String,
    /// Archive entry holding the contents.
    pub file: String,
}

impl Manifest {
    /// Parse and check a manifest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.message().to_string())?;
        m.check()?;
        Ok(m)
    }

    /// Check the limits the boot ABI imposes.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format {} is not supported (this k42vmm reads format {FORMAT})",
                self.format
            ));
        }
        if self.kernel.is_empty() {
            return Err("the kernel entry name is empty".into());
        }
        if self.cmdline.len() > MAX_CMDLINE {
            return Err(format!(
                "the command line is {} bytes, over the limit of {MAX_CMDLINE}",
                self.cmdline.len()
            ));
        }
        if self.modules.len() > MAX_MODULES {
            return Err(format!(
                "{} modules, over the limit of {MAX_MODULES}",
                self.modules.len()
            ));
        }
        for (i, m) in self.modules.iter().enumerate() {
            if m.name.is_empty() || m.name.len() > MAX_MODULE_NAME || m.name.contains('\0') {
                return Err(format!(
                    "module name '{}' must be 1 to {MAX_MODULE_NAME} bytes without NUL",
                    m.name
                ));
            }
            if self.modules[..i].iter().any(|o| o.name == m.name) {
                return Err(format!("module name '{}' appears twice", m.name));
            }
        }
        Ok(())
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Manifest {
            format: FORMAT,
            name: "x".into(),
            kernel: "kernel".into(),
            cmdline: "a b".into(),
            modules: vec![ModuleEntry {
                name: "m".into(),
                file: "modules/m".into(),
            }],
        };
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn rejects_unknown_fields_formats_and_limits() {
        assert!(
            Manifest::parse("format = 1\nname='x'\nkernel='k'\nbogus=1")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(
            Manifest::parse("format = 2\nname='x'\nkernel='k'")
                .unwrap_err()
                .contains("format 2")
        );
        let long = format!(
            "format = 1\nname='x'\nkernel='k'\ncmdline='{}'",
            "a".repeat(MAX_CMDLINE + 1)
        );
        assert!(
            Manifest::parse(&long)
                .unwrap_err()
                .contains("over the limit")
        );
        let dup = "format = 1\nname='x'\nkernel='k'\n[[modules]]\nname='a'\nfile='f'\n[[modules]]\nname='a'\nfile='g'";
        assert!(Manifest::parse(dup).unwrap_err().contains("twice"));
    }
}
