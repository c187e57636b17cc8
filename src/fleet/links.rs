//! What the rules need from the runtime that runs them: reaching sessions on any shard, and the
//! admin subscribers. Implemented by the runtime's hub; unit tests implement it with a recorder.

use std::sync::Arc;

/// Where a live session runs: its shard and its connection id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRef {
    pub shard: usize,
    pub conn: u64,
}

pub trait Links: Send + Sync {
    /// Whether any admin subscriber is connected: broadcasts are only built when one is.
    fn has_admins(&self) -> bool;
    /// A frame for every admin subscriber on every shard.
    fn broadcast(&self, frame: Arc<str>);
    /// Tells a device's live session that its command queue has commands it may deliver now.
    fn commands_pending(&self, session: SessionRef);
    /// Asks a live session to close (a newer session of its device wants the claim, or the device
    /// was deleted or its token rotated).
    fn close_session(&self, session: SessionRef, code: u16, reason: &'static str);
}
