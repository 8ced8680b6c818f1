//! The consistency check behind `PageAllocator::check_invariants`.

use codeheap_virtual_alloc::{Os, PageState, VirtualAlloc};

use crate::config::PageAllocatorConfig;
use crate::segment::SegmentList;
use crate::state::State;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// Whether each of the `count` pages from `base` is committed, as the OS layer says (its
/// runs of same-state pages, not a query per page).
fn committed<O: Os>(vm: &VirtualAlloc<O>, base: usize, count: usize) -> Result<Vec<bool>, String> {
    let page = vm.page_size();
    let runs = vm
        .query_range(base, count * page)
        .map_err(|err| format!("page {base:#x} unknown to the OS layer: {err}"))?;
    let mut states = Vec::with_capacity(count);
    for run in runs {
        states.resize(
            states.len() + run.size / page,
            run.state != PageState::Reserved,
        );
    }
    Ok(states)
}

pub(crate) fn check<O: Os>(
    state: &State,
    vm: &VirtualAlloc<O>,
    config: &PageAllocatorConfig,
) -> Result<(), String> {
    let page = vm.page_size();
    let mut free_pages = 0;
    let mut used_pages = 0;
    let mut committed_pages = 0;
    let mut parked_pages = 0;

    for list in SegmentList::ALL {
        for base in &state.lists[list as usize] {
            let segment = state
                .segments
                .get(base)
                .ok_or_else(|| format!("{list:?} lists {base:#x}, which is no segment"))?;
            ensure(segment.list == list, || {
                format!(
                    "segment {base:#x} is on {list:?} but thinks it is on {:?}",
                    segment.list
                )
            })?;
        }
    }
    let listed: usize = state.lists.iter().map(|list| list.len()).sum();
    ensure(listed == state.segments.len(), || {
        format!(
            "{listed} listed segments, {} segments",
            state.segments.len()
        )
    })?;

    let serials: std::collections::BTreeSet<u64> = state
        .segments
        .values()
        .map(|segment| segment.serial)
        .collect();
    ensure(
        serials.len() == state.segments.len()
            && serials
                .last()
                .is_none_or(|&last| last < state.segments_created),
        || {
            format!(
                "segment serials {serials:?} repeat or run past {}",
                state.segments_created
            )
        },
    )?;
    let runs: std::collections::BTreeSet<(usize, u64, usize, usize)> = state
        .segments
        .iter()
        .flat_map(|(&base, segment)| {
            (segment.free.runs()).map(move |(first, len)| (len, segment.serial, base, first))
        })
        .collect();
    ensure(runs == state.free_runs, || {
        format!(
            "the free-run index {:?} is not the segments' free runs {runs:?}",
            state.free_runs
        )
    })?;

    let mut filed = 0;
    for (&base, segment) in &state.segments {
        let longest = segment.available().longest_run();
        let expected = (segment.list == SegmentList::Decommitted).then_some(longest);
        ensure(
            segment.filed.map(|(count, _)| count) == expected
                && segment
                    .filed
                    .is_none_or(|at| state.by_room.at(at) == Some(base)),
            || {
                format!(
                    "segment {base:#x} on the {:?} list with a longest run of {longest} is filed by room at {:?}",
                    segment.list, segment.filed
                )
            },
        )?;
        filed += usize::from(segment.filed.is_some());
        ensure(!segment.free.intersects(&segment.decommitted), || {
            format!("segment {base:#x} has pages both free and decommitted")
        })?;
        let available = segment.free.union(&segment.decommitted);
        ensure(!segment.parked.intersects(&available), || {
            format!("segment {base:#x} has parked pages that are not allocated")
        })?;
        parked_pages += segment.parked.count_ones();
        let expected = segment.classify().unwrap_or(SegmentList::Decommitted);
        ensure(segment.list == expected, || {
            format!(
                "segment {base:#x} is on {:?}, its state says {expected:?}",
                segment.list
            )
        })?;
        free_pages += segment.free.count_ones();
        used_pages += segment.allocated_count();
        let backed = committed(vm, base, segment.code_pages + config.secondary_pages)?;
        for (i, &is_committed) in backed[..segment.code_pages].iter().enumerate() {
            let addr = base + i * page;
            let unbacked = segment.decommitted.get(i) || segment.parked.get(i);
            ensure(is_committed != unbacked, || {
                format!(
                    "page {addr:#x}: committed = {is_committed}, decommitted or parked = {unbacked}"
                )
            })?;
            committed_pages += usize::from(is_committed);
        }
        let area_committed = segment.slots.as_ref().is_some_and(|s| s.committed);
        for (i, &is_committed) in backed[segment.code_pages..].iter().enumerate() {
            let addr = base + (segment.code_pages + i) * page;
            ensure(is_committed == area_committed, || {
                format!("secondary page {addr:#x}: committed should be {area_committed}")
            })?;
            committed_pages += usize::from(area_committed);
        }
    }
    ensure(filed == state.by_room.len(), || {
        format!(
            "{} segments filed by room, {filed} know where",
            state.by_room.len()
        )
    })?;
    for (&base, large) in &state.large {
        used_pages += large.pages;
        if large.parked {
            parked_pages += large.pages;
        }
        let area_committed = large.slots.as_ref().is_some_and(|s| s.committed);
        for (i, is_committed) in committed(vm, base, large.size / page)?
            .into_iter()
            .enumerate()
        {
            let addr = base + i * page;
            // The secondary area is committed from its first slot on; the pages are
            // unless parked.
            let backed = if i >= large.pages {
                area_committed
            } else {
                !large.parked
            };
            ensure(is_committed == backed, || {
                format!("large page {addr:#x}: committed should be {backed}")
            })?;
            committed_pages += usize::from(backed);
        }
    }

    ensure(free_pages == state.free_pages, || {
        format!(
            "free pages: counter {}, bitmaps {free_pages}",
            state.free_pages
        )
    })?;
    ensure(used_pages == state.used_pages, || {
        format!(
            "used pages: counter {}, bitmaps {used_pages}",
            state.used_pages
        )
    })?;
    ensure(parked_pages == state.parked_pages, || {
        format!(
            "parked pages: counter {}, bitmaps {parked_pages}",
            state.parked_pages
        )
    })?;
    ensure(free_pages <= config.max_free_pages, || {
        format!(
            "{free_pages} free pages kept, policy allows {}",
            config.max_free_pages
        )
    })?;
    let vm_stats = vm.stats();
    ensure(vm_stats.committed_bytes == committed_pages * page, || {
        format!(
            "OS layer has {} bytes committed, segments account for {}",
            vm_stats.committed_bytes,
            committed_pages * page
        )
    })?;
    let regions = state.segments.len() + state.large.len();
    ensure(vm_stats.regions == regions, || {
        format!(
            "OS layer has {} regions, allocator {regions}",
            vm_stats.regions
        )
    })
}
