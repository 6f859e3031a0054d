//! The architecture boundary: everything above this module is portable and
//! reaches the CPU only through the names re-exported here.
pub mod x86_64;

pub use self::x86_64::platform::*;
