//! A hashed timer wheel for connection deadlines (header read, register, idle, HTTP-device liveness).
//!
//! Sans-IO: callers pass `now` in milliseconds. Deadlines are re-checked by the caller when they fire
//! (the wheel never holds a reference to a connection, only its id), so pushing a deadline later costs
//! nothing: the entry fires, the caller sees the deadline has moved and schedules it again. That keeps
//! the per-message cost of "this session is alive" at one store to a `Cell`. The wheel is generic
//! over the id: connection ids for connection deadlines, device ids for HTTP-device liveness.

pub struct TimerWheel<T> {
    slots: Vec<Vec<(T, u64)>>,
    tick_ms: u64,
    /// The tick that `advance` has processed up to (exclusive).
    cursor: u64,
    len: usize,
}

impl<T: Copy> TimerWheel<T> {
    /// `tick_ms` is the resolution; `slots` × `tick_ms` is one rotation (longer deadlines wait in
    /// their slot across rotations).
    pub fn new(tick_ms: u64, slots: usize, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        Self {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            tick_ms,
            cursor: now_ms / tick_ms,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `id` to fire at the first `advance` whose `now` is at or past `deadline_ms`.
    pub fn schedule(&mut self, id: T, deadline_ms: u64) {
        // Round up so an entry never fires early; never place it behind the cursor.
        let tick = deadline_ms.div_ceil(self.tick_ms).max(self.cursor);
        let n = self.slots.len() as u64;
        self.slots[(tick % n) as usize].push((id, tick));
        self.len += 1;
    }

    /// Moves time to `now_ms`, appending every id whose deadline has passed to `expired`.
    pub fn advance(&mut self, now_ms: u64, expired: &mut Vec<T>) {
        let target = now_ms / self.tick_ms + 1;
        if target <= self.cursor {
            return;
        }
        let n = self.slots.len() as u64;
        // After a long stall, one pass over every slot is enough.
        let steps = (target - self.cursor).min(n);
        let start = target - steps;
        for tick in start..target {
            let slot = &mut self.slots[(tick % n) as usize];
            let before = slot.len();
            slot.retain(|&(id, due)| {
                if due < target {
                    expired.push(id);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.cursor = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(w: &mut TimerWheel<u64>, now: u64) -> Vec<u64> {
        let mut v = Vec::new();
        w.advance(now, &mut v);
        v.sort();
        v
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut w = TimerWheel::new(100, 8, 0);
        w.schedule(1, 250);
        assert!(fire(&mut w, 199).is_empty());
        assert!(fire(&mut w, 299).is_empty());
        assert_eq!(fire(&mut w, 300), vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_for_their_turn() {
        let mut w = TimerWheel::new(100, 4, 0);
        w.schedule(7, 1_000);
        w.schedule(8, 150);
        assert_eq!(fire(&mut w, 200), vec![8]);
        assert!(fire(&mut w, 900).is_empty());
        assert_eq!(fire(&mut w, 1_000), vec![7]);
    }

    #[test]
    fn a_long_stall_fires_everything_due_once() {
        let mut w = TimerWheel::new(10, 16, 0);
        for id in 0..100 {
            w.schedule(id, id * 7);
        }
        w.schedule(1000, 1_000_000);
        let got = fire(&mut w, 10_000);
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(100, 8, 5_000);
        w.schedule(3, 10);
        assert_eq!(fire(&mut w, 5_000), vec![3]);
    }
}
