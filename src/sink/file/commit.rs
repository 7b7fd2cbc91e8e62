//! Group commit for the file sink: a writer thread appends batches while a sync thread
//! fdatasyncs what was written before, then acknowledges every batch that sync covered.
//!
//! A lone batch costs one write and one fdatasync, so an event on a quiet cluster is durable
//! about one disk sync after it arrives. Under load the batches written while a sync runs are
//! covered together by the next one: the disk's sync latency bounds the sink's latency, not its
//! throughput. Acknowledgements stay in the order the batches came.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;

use super::FileSink;
use crate::flow::Batch;
use crate::sink::{Acks, Failure, Next, Policy, SINK_QUEUE, SinkEnd, SinkError, SinkIo, Worker};

/// Batches written and not yet acknowledged, at most. Beyond it the writer waits for the sync
/// thread: this bounds how far the page cache runs ahead of the disk, and the events a crash
/// can make the next run deliver again (the bound in docs/architecture.md counts it).
pub(super) const MAX_UNSYNCED: usize = SINK_QUEUE;

/// A batch in the file, not yet synced.
struct Written {
    batch: Arc<Batch>,
    /// The file it went to: a rotation may have replaced the sink's since.
    file: Arc<File>,
    /// When the writer took it from the queue, for the flush histogram.
    taken: Instant,
}

#[derive(Default)]
struct Group {
    /// Written, waiting for the next sync.
    written: VecDeque<Written>,
    /// Taken by the sync running now, until their acks are sent.
    syncing: usize,
    /// The writer is done: sync what is left, then end.
    closed: bool,
    /// The sync thread ended early (the pipeline stopped listening for acks).
    stopped: bool,
}

/// What the two threads share: the group, and the one retry policy (one health state, one
/// log line per outage, whichever thread meets it).
struct Shared {
    group: Mutex<Group>,
    changed: Condvar,
    policy: Mutex<Policy>,
}

impl Shared {
    fn new(policy: Policy) -> Self {
        Shared {
            group: Mutex::new(Group::default()),
            changed: Condvar::new(),
            policy: Mutex::new(policy),
        }
    }

    fn group(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn policy(&self) -> MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Group>) -> MutexGuard<'a, Group> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until another batch may be written; false when the sync thread has stopped.
    fn wait_for_room(&self) -> bool {
        let mut g = self.group();
        while g.written.len() + g.syncing >= MAX_UNSYNCED && !g.stopped {
            g = self.wait(g);
        }
        !g.stopped
    }

    fn push(&self, written: Written) {
        self.group().written.push_back(written);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.group().closed = true;
        self.changed.notify_all();
    }

    /// Retries `attempt` under the policy until it succeeds; false if the policy says stop.
    /// Only a thread that failed reports the recovery, so the writer's success does not end
    /// an outage of the syncs, or the other way round.
    fn until_ok(&self, mut attempt: impl FnMut() -> Result<(), Failure>) -> bool {
        let mut failed = false;
        loop {
            match attempt() {
                Ok(()) => break,
                Err(failure) => {
                    failed = true;
                    let next = self.policy().failed(&failure);
                    match next {
                        Next::RetryIn(delay) => std::thread::sleep(delay),
                        Next::Stop => return false,
                    }
                }
            }
        }
        if failed {
            self.policy().succeeded();
        }
        true
    }
}

/// Starts the sink's threads: with fsync, a writer and a syncer; without, the writer alone,
/// acknowledging each batch once written.
pub(super) fn spawn(sink: FileSink, io: SinkIo) -> Result<Worker, SinkError> {
    let SinkIo {
        queue,
        acks,
        policy,
    } = io;
    let shared = Arc::new(Shared::new(policy));
    let (writer_acks, syncer) = if sink.fsync {
        let path = sink.path().display().to_string();
        let shared = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("sink-file-sync".into())
            .spawn(move || while sync_next(&shared, &acks, &path).is_some() {})
            .map_err(SinkError::Thread)?;
        (None, Some(syncer))
    } else {
        (Some(acks), None)
    };
    std::thread::Builder::new()
        .name("sink-file".into())
        .spawn(move || {
            let end = write_loop(sink, queue, writer_acks.as_ref(), &shared);
            shared.close();
            if let Some(syncer) = syncer {
                let _ = syncer.join();
            }
            end
        })
        .map(Worker::Thread)
        .map_err(SinkError::Thread)
}

/// Appends each batch of `queue`; without fsync acknowledges it at once, with fsync hands it to
/// the sync thread, waiting first while `MAX_UNSYNCED` batches are unacknowledged.
fn write_loop(
    mut sink: FileSink,
    mut queue: mpsc::Receiver<Arc<Batch>>,
    acks: Option<&Acks>,
    shared: &Shared,
) -> SinkEnd {
    while let Some(batch) = queue.blocking_recv() {
        let taken = Instant::now();
        shared.policy().queue_depth(queue.len());
        if acks.is_none() && !shared.wait_for_room() {
            break;
        }
        if !shared.policy().may_write() {
            return SinkEnd::Fenced;
        }
        if !shared.until_ok(|| sink.append_batch(&batch)) {
            return shared.policy().stopped();
        }
        match acks {
            Some(acks) => {
                shared.policy().delivered(batch.events, taken.elapsed());
                if !acks.ack(batch) {
                    break;
                }
            }
            None => shared.push(Written {
                batch,
                file: sink.file().clone(),
                taken,
            }),
        }
    }
    SinkEnd::Drained
}

/// Waits for written batches, fdatasyncs every file they went to, and acknowledges them in
/// order. Returns how many one sync covered; `None` when the writer is done and nothing is
/// left, or the pipeline no longer listens.
fn sync_next(shared: &Shared, acks: &Acks, path: &str) -> Option<usize> {
    let group: Vec<Written> = {
        let mut g = shared.group();
        while g.written.is_empty() && !g.closed {
            g = shared.wait(g);
        }
        if g.written.is_empty() {
            return None;
        }
        let group: Vec<Written> = g.written.drain(..).collect();
        g.syncing = group.len();
        group
    };
    // More than one file only when a rotation came between the batches.
    let mut files: Vec<&Arc<File>> = Vec::with_capacity(1);
    for w in &group {
        if !files.iter().any(|f| Arc::ptr_eq(f, &w.file)) {
            files.push(&w.file);
        }
    }
    for file in files {
        let synced = shared.until_ok(|| {
            file.sync_data()
                .map_err(|e| Failure::io(&format!("fdatasync of file {path} failed"), &e))
        });
        if !synced {
            return None;
        }
    }
    let covered = group.len();
    for w in group {
        shared.policy().delivered(w.batch.events, w.taken.elapsed());
        if !acks.ack(w.batch) {
            shared.group().stopped = true;
            shared.changed.notify_all();
            return None;
        }
    }
    shared.group().syncing = 0;
    shared.changed.notify_all();
    Some(covered)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use super::*;
    use crate::flow::BatchAck;
    use crate::sink::{Sink, SinkHealth, gate};

    fn batch(seq: u64) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            bytes: format!("{{\"line\":{seq}}}\n").into_bytes(),
            records: None,
            keys: Vec::new(),
            events: 1,
            opened_at: SystemTime::now(),
        })
    }

    fn start(
        path: &Path,
        fsync: bool,
    ) -> (
        mpsc::Sender<Arc<Batch>>,
        mpsc::UnboundedReceiver<BatchAck>,
        Worker,
    ) {
        let file = FileSink::open(path, fsync, Arc::default()).unwrap();
        let sink = Sink::custom("file", "file", "file test".into(), move |io| {
            spawn(file, io)
        });
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let worker = sink
            .start(0, rx, ack_tx, &SinkHealth::default(), gate::open())
            .unwrap();
        (tx, ack_rx, worker)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_batch_is_written_and_acknowledged_in_order_with_or_without_fsync() {
        for fsync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
            let (tx, mut acks, worker) = start(&path, fsync);
            for seq in 0..200 {
                tx.send(batch(seq)).await.unwrap();
            }
            drop(tx);
            for seq in 0..200 {
                let ack = acks.recv().await.expect("an ack per batch");
                assert_eq!((ack.sink, ack.batch.seq), (0, seq), "fsync {fsync}");
            }
            assert!(matches!(worker.join().await, Some(SinkEnd::Drained)));
            assert!(acks.recv().await.is_none(), "one ack per batch");
            let text = std::fs::read_to_string(&path).unwrap();
            let expected: String = (0..200).map(|s| format!("{{\"line\":{s}}}\n")).collect();
            assert_eq!(text, expected, "fsync {fsync}");
        }
    }

    #[test]
    fn one_sync_acknowledges_every_batch_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::open(&path, true, Arc::default()).unwrap();
        let health = SinkHealth::default();
        let shared = Shared::new(Policy::new(
            "file",
            "file test".into(),
            "file",
            health.register("file test"),
        ));
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let acks = Acks {
            sink: 0,
            tx: ack_tx,
        };
        // Three batches written while no sync ran, one of them after a rotation.
        for seq in 0..3 {
            if seq == 2 {
                std::fs::rename(&path, dir.path().join("out.jsonl.1")).unwrap();
            }
            let b = batch(seq);
            sink.append_batch(&b).unwrap();
            shared.push(Written {
                batch: b,
                file: sink.file().clone(),
                taken: Instant::now(),
            });
        }
        assert_eq!(sync_next(&shared, &acks, "out.jsonl"), Some(3));
        let seqs: Vec<u64> = std::iter::from_fn(|| ack_rx.try_recv().ok())
            .map(|a| a.batch.seq)
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
            "{\"line\":0}\n{\"line\":1}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"line\":2}\n");
        // The writer is done and nothing is left: the sync thread ends.
        shared.close();
        assert_eq!(sync_next(&shared, &acks, "out.jsonl"), None);
    }
}
