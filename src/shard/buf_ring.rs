//! A provided-buffer ring: receive buffers the kernel picks from when a receive *completes*, so a
//! receive can wait on a quiet socket without holding memory. The buffers are one allocation of
//! `count × size` bytes; the ring of descriptors the kernel reads is another, page-aligned as the
//! interface requires. Buffers go back to the kernel (`give_back`) once their bytes are copied out.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The interface wants the descriptor ring aligned to a page.
const RING_ALIGN: usize = 4096;

pub struct BufRing {
    /// `count` descriptors; the kernel reads them, we write them and publish the tail.
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    /// Our copy of the tail: the next descriptor slot to fill.
    tail: u16,
    mask: u16,
    size: usize,
    bufs: Box<[u8]>,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes, hands all of them to the kernel and registers
    /// the ring as buffer group `bgid`. `count` must be a power of two (the kernel's rule).
    pub fn new(submitter: &Submitter<'_>, count: u16, size: usize, bgid: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || size == 0 || u32::try_from(size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a buffer ring needs a power-of-two count of non-empty buffers",
            ));
        }
        let layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            RING_ALIGN,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count ≥ 1, 16-byte entries).
        let raw = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        let entries =
            NonNull::new(raw).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let mut ring = BufRing {
            entries,
            layout,
            tail: 0,
            mask: count - 1,
            size,
            bufs: vec![0u8; usize::from(count) * size].into_boxed_slice(),
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        // SAFETY: the descriptors and the buffers they point at live in `ring`, which its owner
        // keeps until the io_uring instance that registered them is closed.
        unsafe { submitter.register_buf_ring(ring.entries.as_ptr() as u64, count, bgid)? };
        Ok(ring)
    }

    /// The size of each buffer: what one receive can deliver.
    pub fn buf_size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes the kernel put into buffer `bid`.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size;
        let end = start + len.min(self.size);
        self.bufs.get(start..end).unwrap_or(&[])
    }

    /// Returns buffer `bid` to the kernel, which may fill it with the next receive that completes.
    pub fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `slot` < count, inside the allocation; the kernel only reads descriptors
        // between its head and the tail we publish below, and this one is past that tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays the first descriptor's reserved field (the interface's
        // layout); the kernel reads it concurrently, so it is published with a release store after
        // the descriptor is written.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // The ring that registered this is dropped first (field order in `uring::Inner`), which
        // unregisters the buffer group.
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.entries.as_ptr().cast(), self.layout) };
    }
}
