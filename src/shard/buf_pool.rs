//! A shard's pool of read and write buffers. A connection takes one only while it has bytes to
//! read or send and gives it back after, so an idle session holds none; the pool keeps the
//! returned ones for the next reader. It grows with a burst (up to `KEEP`) and gives back what the
//! last second did not need, so the memory of a connect storm or a flood does not stay with the
//! process once it is over.

/// Size of a pooled buffer.
pub const BUF: usize = 16 * 1024;
/// Buffers the pool keeps at most; more are allocated under load and freed when returned.
const KEEP: usize = 256;
/// Buffers kept through a quiet spell, so that light steady traffic does not allocate.
const FLOOR: usize = 16;
/// `trim` calls (shard ticks of 250 ms) between two trims: about a second.
const TRIM_EVERY: u32 = 4;

#[derive(Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// The fewest buffers lying in the pool since the last trim: that many no one needed.
    low: usize,
    ticks: u32,
}

impl BufPool {
    /// An empty buffer with `BUF` capacity.
    pub fn take(&mut self) -> Vec<u8> {
        let buf = self.free.pop().unwrap_or_else(|| Vec::with_capacity(BUF));
        self.low = self.low.min(self.free.len());
        buf
    }

    /// Keeps a returned buffer; one that a large message grew, or one past `KEEP`, is freed.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == BUF && self.free.len() < KEEP {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Called on every shard tick: about once a second, frees the buffers that lay unused all
    /// that time, down to `FLOOR`.
    pub fn trim(&mut self) {
        self.ticks += 1;
        if self.ticks < TRIM_EVERY {
            return;
        }
        self.ticks = 0;
        let unused = self.low.min(self.free.len());
        let keep = (self.free.len() - unused).max(FLOOR);
        self.free.truncate(keep);
        self.low = self.free.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` connections take a buffer at the same moment, then all give theirs back.
    fn read_at_once(p: &mut BufPool, n: usize) {
        let held: Vec<_> = (0..n).map(|_| p.take()).collect();
        for b in held {
            p.give(b);
        }
    }

    fn trim_once(p: &mut BufPool) {
        for _ in 0..TRIM_EVERY {
            p.trim();
        }
    }

    #[test]
    fn a_burst_is_given_back_once_it_is_over() {
        let mut p = BufPool::default();
        // A burst: 200 connections read at once, then all give their buffers back.
        read_at_once(&mut p, 200);
        assert_eq!(p.free.len(), 200);
        // The trim that ends the burst's own second keeps them: every one was in use in it.
        trim_once(&mut p);
        assert_eq!(p.free.len(), 200, "the burst's buffers were all in use");
        // The next second takes none, so everything above the floor goes.
        trim_once(&mut p);
        assert_eq!(p.free.len(), FLOOR);
    }

    #[test]
    fn what_a_steady_load_uses_is_kept() {
        let mut p = BufPool::default();
        read_at_once(&mut p, 100);
        trim_once(&mut p);
        // Each second, 60 connections read at the same moment, then give back.
        for _ in 0..3 {
            read_at_once(&mut p, 60);
            trim_once(&mut p);
            assert_eq!(
                p.free.len(),
                60,
                "the 40 never needed go, the 60 in use stay"
            );
        }
    }

    #[test]
    fn grown_buffers_and_buffers_past_the_bound_are_freed() {
        let mut p = BufPool::default();
        let mut grown = p.take();
        grown.reserve(BUF * 2);
        p.give(grown);
        assert_eq!(p.free.len(), 0);
        read_at_once(&mut p, KEEP + 10);
        assert_eq!(p.free.len(), KEEP);
        let b = p.take();
        assert!(b.is_empty() && b.capacity() == BUF);
    }
}
