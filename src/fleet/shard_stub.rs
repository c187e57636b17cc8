//! For the unit tests of the rules: a shard's batcher and its committer thread over a store, run
//! the way a shard runs them (a current-thread runtime, a `LocalSet`, the batcher's loop as a task).

use std::rc::Rc;
use std::sync::Arc;

use crate::store::Store;
use crate::store::commit::{Batcher, spawn_committer};
use crate::store::temp::run_local;

/// Runs `f` with a batcher on `store`; when `f` is done the batcher is closed (what it staged is
/// committed first) and the committer joined.
pub fn with_batcher<R>(store: &Arc<Store>, f: impl AsyncFnOnce(&Rc<Batcher>) -> R) -> R {
    let (committer, thread) = spawn_committer(store.clone(), "t".into()).expect("committer thread");
    let batcher = Rc::new(Batcher::new(store.clone(), committer, 1 << 20));
    let out = run_local(async {
        let run = tokio::task::spawn_local({
            let b = batcher.clone();
            async move { b.run().await }
        });
        let out = f(&batcher).await;
        batcher.close();
        run.await.expect("batcher loop");
        out
    });
    drop(batcher);
    thread.join().expect("committer");
    out
}
