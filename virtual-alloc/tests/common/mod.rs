//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub perms: String,
}

/// The process's mappings, from `/proc/self/maps`.
#[cfg(target_os = "linux")]
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
            })
        })
        .collect()
}

/// The permissions (`r-xp`, ...) of the mapping holding `addr`, if any.
#[cfg(target_os = "linux")]
pub fn perms_at(addr: usize) -> Option<String> {
    proc_maps()
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| m.perms)
}
