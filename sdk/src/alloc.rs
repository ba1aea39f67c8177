//! The plugin's memory allocator (feature `allocator`, on by default): small blocks from free lists.
//!
//! When the host hands a plugin a population (the segment batch form), the component model gives every
//! string and list of every profile its own allocation, made by a call into the plugin, and freed when
//! the plugin drops the profile. With the standard allocator (dlmalloc) those allocations and frees
//! were most of the work of a simple rule. Here a block of up to 2 KiB is taken from a free list of its
//! size class (16, 32, … 2048 bytes) or carved from a 64 KiB slab, and a freed one goes back on its
//! list: a few instructions each way. Larger blocks go to the standard allocator. Memory freed to a
//! list is reused for blocks of the same class only; a plugin instance lives for one call, so what it
//! holds goes when the call ends.
//!
//! A plugin that wants another allocator turns the feature off (`default-features = false`) and
//! declares its own `#[global_allocator]`.

// A global allocator is unsafe by nature (raw pointers in and out); this module is the SDK's only
// unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size classes: 16 << k bytes for k in 0..CLASSES (16 … 2048).
const CLASSES: usize = 8;
const MIN_BLOCK: usize = 16;
const MAX_BLOCK: usize = MIN_BLOCK << (CLASSES - 1);
/// What a slab takes from the standard allocator at once.
const SLAB: usize = 64 * 1024;

struct State {
    /// Per class, the first free block; each free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current slab.
    next: *mut u8,
    end: *mut u8,
}

/// The allocator: size-class free lists over slabs, the standard allocator for large blocks.
pub struct SizeClasses {
    state: UnsafeCell<State>,
}

// SAFETY: plugins run on wasm32 without threads (a component has one thread of execution), so the
// state is never touched by two threads. The module is compiled only for such targets (and for its
// own tests, which use an allocator of their own on one thread).
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// An empty allocator (it takes memory on first use).
    pub const fn new() -> Self {
        SizeClasses {
            state: UnsafeCell::new(State { free: [null_mut(); CLASSES], next: null_mut(), end: null_mut() }),
        }
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a block of this layout, if it is small enough for one.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_BLOCK);
    if size > MAX_BLOCK {
        return None;
    }
    // 16 → 0, 17..=32 → 1, … (blocks of a class are aligned to their size, up to 16)
    Some((size.next_power_of_two().trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize)
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout is passed on unchanged.
            return unsafe { System.alloc(layout) };
        };
        // Alignments above 16 are served by classes at least as large as the alignment, whose blocks
        // are carved at multiples of their size within 16-aligned slabs only up to 16: leave those to
        // the standard allocator.
        if layout.align() > MIN_BLOCK {
            // SAFETY: as above.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: single-threaded (see `Sync`), and no other reference to the state is live.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[class];
        if !head.is_null() {
            // SAFETY: a free block holds the address of the next one, written by `dealloc`.
            state.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = MIN_BLOCK << class;
        if (state.end as usize) - (state.next as usize) < size {
            // SAFETY: a non-zero size and a valid alignment.
            let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, MIN_BLOCK)) };
            if slab.is_null() {
                return null_mut();
            }
            state.next = slab;
            // SAFETY: within the slab just taken.
            state.end = unsafe { slab.add(SLAB) };
        }
        let block = state.next;
        // SAFETY: `size` bytes remain before `end`.
        state.next = unsafe { block.add(size) };
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) if layout.align() <= MIN_BLOCK => {
                // SAFETY: single-threaded; `ptr` is a block of this class, at least 16 bytes and
                // 16-aligned, no longer used by the caller.
                let state = unsafe { &mut *self.state.get() };
                unsafe { ptr.cast::<*mut u8>().write(state.free[class]) };
                state.free[class] = ptr;
            }
            // SAFETY: a large block came from the standard allocator with this layout.
            _ => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with this alignment makes a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (old, new) = (class_of(layout), class_of(new_layout));
        if layout.align() > MIN_BLOCK || (old.is_none() && new.is_none()) {
            // Both large (or over-aligned): the standard allocator's own realloc.
            // SAFETY: the block came from the standard allocator with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if old.is_some() && old == new {
            return ptr;
        }
        // SAFETY: a valid layout; the copy stays within both blocks.
        unsafe {
            let block = self.alloc(new_layout);
            if !block.is_null() {
                std::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            block
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_up_to_2k() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(l(1, 1)), Some(0));
        assert_eq!(class_of(l(16, 8)), Some(0));
        assert_eq!(class_of(l(17, 1)), Some(1));
        assert_eq!(class_of(l(2048, 16)), Some(7));
        assert_eq!(class_of(l(2049, 1)), None);
    }

    #[test]
    fn blocks_are_reused_and_kept_apart() {
        let a = SizeClasses::new();
        let l = |size| Layout::from_size_align(size, 8).unwrap();
        // SAFETY: blocks are used within their sizes and freed with their layouts.
        unsafe {
            let x = a.alloc(l(24));
            let y = a.alloc(l(24));
            assert_ne!(x, y);
            x.write_bytes(1, 24);
            y.write_bytes(2, 24);
            assert_eq!(*x.add(23), 1);
            a.dealloc(x, l(24));
            assert_eq!(a.alloc(l(30)), x, "a freed block is reused by its class");
            let z = a.realloc(y, l(24), 500);
            assert_eq!(*z.add(23), 2, "realloc keeps the contents");
            let big = a.alloc(l(10_000));
            big.write_bytes(3, 10_000);
            a.dealloc(big, l(10_000));
            a.dealloc(z, l(500));
            a.dealloc(x, l(30));
        }
    }
}
