//! The plugin's memory allocator: one call's short-lived blocks come from a bump arena that
//! starts over whenever everything in it has been freed; anything else goes to the system one.
//!
//! A translation allocates a dozen or two small blocks (the topic and payload the host copies
//! in, the parsed tree, the answer's strings and list) and all of them are freed by the time the
//! call is over (the answer in its post-return). dlmalloc spent about a sixth of the guest's time
//! on them; a bump arena hands each out in a few instructions and frees them all at once.
//! A block that outlives its call (state a plugin keeps) only stops the arena from starting over:
//! it then fills up once and every later block comes from the system allocator, as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

/// The arena's size: a message of a few kilobytes with its tree and answer fits many times.
const ARENA_BYTES: usize = 64 * 1024;

/// A bump arena over `N` bytes: `top` is the next free offset, `live` the blocks not yet freed.
pub struct Arena<const N: usize> {
    bytes: UnsafeCell<Aligned<N>>,
    top: Cell<usize>,
    live: Cell<usize>,
}

#[repr(C, align(16))]
struct Aligned<const N: usize>([u8; N]);

impl<const N: usize> Arena<N> {
    pub const fn new() -> Self {
        Arena { bytes: UnsafeCell::new(Aligned([0; N])), top: Cell::new(0), live: Cell::new(0) }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    /// Whether `ptr` came from this arena.
    pub fn owns(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + N).contains(&(ptr as usize))
    }

    /// A block for `layout` from the arena, or `None` when it does not fit in what is left.
    pub fn alloc(&self, layout: Layout) -> Option<*mut u8> {
        let start = (self.base() + self.top.get()).checked_next_multiple_of(layout.align())? - self.base();
        let end = start.checked_add(layout.size())?;
        if end > N {
            return None;
        }
        self.top.set(end);
        self.live.set(self.live.get() + 1);
        // Derived from the cell's pointer, so it keeps the arena's provenance.
        Some(self.bytes.get().cast::<u8>().wrapping_add(start))
    }

    /// Frees a block of this arena; the last one freed makes the whole arena free again.
    pub fn free(&self) {
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            self.top.set(0);
        }
    }

    /// Grows or shrinks the block at `ptr` in place when it can: a smaller size, or the arena's
    /// newest block with room behind it.
    pub fn resize_in_place(&self, ptr: *mut u8, old: Layout, new_size: usize) -> bool {
        if new_size <= old.size() {
            return true;
        }
        let offset = ptr as usize - self.base();
        if offset + old.size() != self.top.get() || offset + new_size > N {
            return false;
        }
        self.top.set(offset + new_size);
        true
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The arena in front of the system allocator.
pub struct ArenaAllocator(Arena<ARENA_BYTES>);

// SAFETY: installed only on wasm32 without threads (see lib.rs), where there is one thread.
unsafe impl Sync for ArenaAllocator {}

impl ArenaAllocator {
    pub const fn new() -> Self {
        ArenaAllocator(Arena::new())
    }
}

impl Default for ArenaAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block is either the arena's (never handed out twice until freed: `top` only
// moves back once no block is live) or the system allocator's, told apart by its address.
unsafe impl GlobalAlloc for ArenaAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.0.alloc(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's layout, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.0.owns(ptr) {
            self.0.free();
        } else {
            // SAFETY: not the arena's, so the system allocator's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.0.owns(ptr) {
            // SAFETY: the system allocator's block, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if self.0.resize_in_place(ptr, layout, new_size) {
            return ptr;
        }
        // SAFETY: the new layout has the old alignment and a size the caller vouches for.
        unsafe {
            let grown = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !grown.is_null() {
                std::ptr::copy_nonoverlapping(ptr, grown, layout.size());
                self.dealloc(ptr, layout);
            }
            grown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn starts_over_once_every_block_is_freed() {
        let arena = Arena::<256>::new();
        let a = arena.alloc(layout(10, 1)).unwrap();
        let b = arena.alloc(layout(8, 8)).unwrap();
        assert_eq!(b as usize % 8, 0, "aligned");
        assert!(b as usize >= a as usize + 10, "no overlap");
        arena.free();
        let c = arena.alloc(layout(4, 4)).unwrap();
        assert!(c as usize > b as usize, "a live block keeps the arena from starting over");
        arena.free();
        arena.free();
        assert_eq!(arena.alloc(layout(4, 4)), Some(a), "all freed: from the start again");
    }

    #[test]
    fn a_block_that_does_not_fit_is_refused() {
        let arena = Arena::<64>::new();
        assert!(arena.alloc(layout(65, 1)).is_none());
        let a = arena.alloc(layout(60, 1)).unwrap();
        assert!(arena.alloc(layout(8, 1)).is_none());
        assert!(arena.owns(a) && !arena.owns(std::ptr::null_mut()));
    }

    #[test]
    fn the_newest_block_grows_in_place_and_an_older_one_does_not() {
        let arena = Arena::<64>::new();
        let a = arena.alloc(layout(8, 1)).unwrap();
        assert!(arena.resize_in_place(a, layout(8, 1), 32));
        assert!(!arena.resize_in_place(a, layout(32, 1), 65), "past the end");
        let b = arena.alloc(layout(8, 1)).unwrap();
        assert_eq!(b as usize, a as usize + 32);
        assert!(!arena.resize_in_place(a, layout(32, 1), 40), "not the newest");
        assert!(arena.resize_in_place(a, layout(32, 1), 16), "shrinking always fits");
    }

    #[test]
    fn the_allocator_keeps_arena_and_system_blocks_apart() {
        let alloc = ArenaAllocator::new();
        unsafe {
            let small = alloc.alloc(layout(16, 8));
            let big = alloc.alloc(layout(ARENA_BYTES, 8));
            assert!(alloc.0.owns(small) && !alloc.0.owns(big));
            small.write_bytes(7, 16);
            let moved = alloc.realloc(small, layout(16, 8), 64);
            assert_eq!(moved, small, "the newest arena block grows in place");
            let other = alloc.alloc(layout(8, 8));
            let moved = alloc.realloc(small, layout(64, 8), 128);
            assert_ne!(moved, small);
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[7; 16], "contents moved with it");
            alloc.dealloc(moved, layout(128, 8));
            alloc.dealloc(other, layout(8, 8));
            alloc.dealloc(big, layout(ARENA_BYTES, 8));
            assert_eq!(alloc.0.top.get(), 0, "all arena blocks freed");
        }
    }
}
