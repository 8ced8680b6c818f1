//! The process's mappings, as `/proc/self/maps` lists them (Linux).

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Permissions, e.g. `r-xp` or `rw-s`.
    pub perms: String,
    /// The whole line, for messages.
    pub line: String,
}

/// Every mapping of the process, in address order.
///
/// # Panics
/// If `/proc/self/maps` cannot be read (not Linux).
pub fn proc_maps() -> Vec<Mapping> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps is readable");
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                perms: perms.to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

/// The permissions of the mapping holding `addr`, if any.
pub fn perms_at(addr: usize) -> Option<String> {
    proc_maps()
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| m.perms)
}
