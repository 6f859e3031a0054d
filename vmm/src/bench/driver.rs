//! What the stand-alone benchmark drivers (`k42vmm-bench-platform`,
//! `k42vmm-bench-trace`) share: their command line and how they print
//! times.

use std::path::PathBuf;

/// The options every driver takes: `[--image IMAGE] [--samples K]
/// [--vcpus N]`, plus the directory holding the k42vmm binaries.
#[derive(Clone, Debug)]
pub struct DriverArgs {
    /// Directory of the running driver, where `k42vmm` sits too.
    pub bin_dir: PathBuf,
    pub image: PathBuf,
    pub samples: usize,
    pub vcpus: u32,
}

impl DriverArgs {
    /// Parse the process's arguments; on a bad one, the usage line for
    /// `name` as the error.
    pub fn from_env(name: &str, default_samples: usize) -> Result<Self, String> {
        Self::parse(name, default_samples, std::env::args().skip(1))
    }

    /// Parse `args` (without the program name).
    pub fn parse(
        name: &str,
        default_samples: usize,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .unwrap_or_else(|| PathBuf::from("."));
        let mut a = Self {
            bin_dir,
            image: PathBuf::from("target/images/default.img"),
            samples: default_samples,
            vcpus: crate::config::host_cpus(),
        };
        let usage = || format!("usage: {name} [--image IMAGE] [--samples K] [--vcpus N]");
        let args: Vec<String> = args.into_iter().collect();
        let mut it = args.iter();
        while let Some(opt) = it.next() {
            let value = it.next().ok_or_else(usage)?;
            match opt.as_str() {
                "--image" => a.image = PathBuf::from(value),
                "--samples" => {
                    a.samples = value.parse().ok().filter(|&k| k > 0).ok_or_else(usage)?
                }
                "--vcpus" => a.vcpus = value.parse().ok().filter(|&n| n > 0).ok_or_else(usage)?,
                _ => return Err(usage()),
            }
        }
        Ok(a)
    }
}

/// A time in ns, µs or ms, two decimals.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn driver_arguments() {
        let a = DriverArgs::parse("d", 3, args(&["--vcpus", "4", "--samples", "7"])).unwrap();
        assert_eq!((a.vcpus, a.samples), (4, 7));
        assert_eq!(DriverArgs::parse("d", 3, args(&[])).unwrap().samples, 3);
        for bad in [
            &["--vcpus", "0"][..],
            &["--samples"],
            &["--frob", "1"],
            &["--samples", "x"],
        ] {
            let e = DriverArgs::parse("d", 3, args(bad)).unwrap_err();
            assert!(e.starts_with("usage: d "), "{e}");
        }
        assert_eq!(fmt_ns(12.345), "12.35 ns");
        assert_eq!(fmt_ns(2500.0), "2.50 µs");
        assert_eq!(fmt_ns(3.2e6), "3.20 ms");
    }
}
