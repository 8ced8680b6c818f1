//! Page protections, named after the Windows `PAGE_*` constants an engine ported from
//! Windows already passes around.

use crate::error::Access;

/// The protection of a committed page.
///
/// Mirrors `PAGE_NOACCESS`, `PAGE_READONLY`, `PAGE_READWRITE`, `PAGE_EXECUTE_READ` and
/// `PAGE_EXECUTE_READWRITE`. On `MapJit`, `DualMap` and `Rwx` regions this is the logical
/// protection the engine asked for (kept so expected-old checks still catch state
/// corruption); only `Protect` regions carry it into the page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// `PAGE_NOACCESS`
    NoAccess,
    /// `PAGE_READONLY`
    ReadOnly,
    /// `PAGE_READWRITE`
    ReadWrite,
    /// `PAGE_EXECUTE_READ`
    ExecuteRead,
    /// `PAGE_EXECUTE_READWRITE`: refused everywhere except on `Rwx` regions.
    ExecuteReadWrite,
}

impl Protection {
    /// Every protection, for tests and tables.
    pub const ALL: [Protection; 5] = [
        Protection::NoAccess,
        Protection::ReadOnly,
        Protection::ReadWrite,
        Protection::ExecuteRead,
        Protection::ExecuteReadWrite,
    ];

    /// Whether the page can be read.
    pub const fn is_readable(self) -> bool {
        !matches!(self, Protection::NoAccess)
    }

    /// Whether the page can be written.
    pub const fn is_writable(self) -> bool {
        matches!(self, Protection::ReadWrite | Protection::ExecuteReadWrite)
    }

    /// Whether code on the page can run.
    pub const fn is_executable(self) -> bool {
        matches!(self, Protection::ExecuteRead | Protection::ExecuteReadWrite)
    }

    /// Whether `access` is allowed on a page with this protection.
    pub const fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.is_readable(),
            Access::Write => self.is_writable(),
            Access::Execute => self.is_executable(),
        }
    }

    /// The Windows `PAGE_*` flag value.
    pub const fn to_win32(self) -> u32 {
        match self {
            Protection::NoAccess => 0x01,
            Protection::ReadOnly => 0x02,
            Protection::ReadWrite => 0x04,
            Protection::ExecuteRead => 0x20,
            Protection::ExecuteReadWrite => 0x40,
        }
    }

    /// The protection for a Windows `PAGE_*` flag value, if it is one of the five.
    pub const fn from_win32(flag: u32) -> Option<Protection> {
        match flag {
            0x01 => Some(Protection::NoAccess),
            0x02 => Some(Protection::ReadOnly),
            0x04 => Some(Protection::ReadWrite),
            0x20 => Some(Protection::ExecuteRead),
            0x40 => Some(Protection::ExecuteReadWrite),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win32_flags_round_trip() {
        for p in Protection::ALL {
            assert_eq!(Protection::from_win32(p.to_win32()), Some(p));
        }
        assert_eq!(
            Protection::from_win32(0x10),
            None,
            "PAGE_EXECUTE alone is not modelled"
        );
    }

    #[test]
    fn only_rwx_is_both_writable_and_executable() {
        let both: Vec<_> = Protection::ALL
            .into_iter()
            .filter(|p| p.is_writable() && p.is_executable())
            .collect();
        assert_eq!(both, [Protection::ExecuteReadWrite]);
        assert!(!Protection::NoAccess.allows(Access::Read));
        assert!(Protection::ExecuteRead.allows(Access::Read));
    }
}
