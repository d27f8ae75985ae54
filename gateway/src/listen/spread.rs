//! Spreading accepted connections evenly over the worker threads.
//!
//! Every worker accepts on its own copy of each listening socket, and the
//! kernel wakes all of them for a new connection: whichever gets there first
//! takes it, and a worker woken with a burst of pending connections takes
//! the whole burst. Measured with `wrk -c64` (docs/benchmarks.md, session
//! 11), one worker sometimes took all 64 connections and left the other
//! core idle for the whole run. So a worker keeps a connection it accepted
//! only while it serves no more connections than any other worker, and
//! otherwise hands the socket to the least loaded one (what Envoy calls an
//! exact connection balance). A hand-off costs moving one socket between two
//! event loops and one wake-up, once per connection, never per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The connection counts of the workers and the way to reach each of them.
#[derive(Debug)]
pub struct Spread {
    loads: Box<[AtomicUsize]>,
    inboxes: Box<[UnboundedSender<Handed>]>,
}

/// A worker's inbox of connections handed to it.
pub type Inbox = UnboundedReceiver<Handed>;

/// An accepted connection on its way to the worker that will serve it.
#[derive(Debug)]
pub struct Handed {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    /// The listener it came in on, as an index into the worker's listeners.
    pub listener: usize,
    pub permit: OwnedSemaphorePermit,
    pub load: Load,
}

/// One connection counted against a worker while it is alive.
#[derive(Debug)]
pub struct Load {
    spread: Arc<Spread>,
    worker: usize,
}

impl Load {
    /// The worker that serves the connection.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.spread.loads[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// The spread of `workers` workers, with the inbox of each, in order.
    pub fn new(workers: usize) -> (Arc<Spread>, Vec<Inbox>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..workers.max(1)).map(|_| unbounded_channel()).unzip();
        let spread = Spread {
            loads: senders.iter().map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into_boxed_slice(),
        };
        (Arc::new(spread), receivers)
    }

    /// Counts a connection that `worker` has just accepted against the worker
    /// that should serve it: `worker` itself unless another serves fewer.
    /// Two workers placing at once may both see the same counts; the spread
    /// is then off by one, never more.
    pub fn place(self: &Arc<Self>, worker: usize) -> Load {
        let mut best = worker.min(self.loads.len() - 1);
        let mut least = self.loads[best].load(Ordering::Relaxed);
        for (i, load) in self.loads.iter().enumerate() {
            let n = load.load(Ordering::Relaxed);
            if n < least {
                (best, least) = (i, n);
            }
        }
        self.loads[best].fetch_add(1, Ordering::Relaxed);
        Load {
            spread: self.clone(),
            worker: best,
        }
    }

    /// Sends a connection to the worker it was placed on; gives it back when
    /// that worker has stopped.
    pub fn hand(&self, handed: Handed) -> Result<(), Box<Handed>> {
        self.inboxes[handed.load.worker]
            .send(handed)
            .map_err(|e| Box::new(e.0))
    }

    /// The connections each worker serves now, for tests and the log.
    pub fn loads(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_accepted_by_one_worker_is_shared_out_evenly() {
        let (spread, _inboxes) = Spread::new(2);
        let held: Vec<Load> = (0..64).map(|_| spread.place(0)).collect();
        assert_eq!(spread.loads(), vec![32, 32]);
        let kept = held.iter().filter(|l| l.worker() == 0).count();
        assert_eq!(kept, 32);
    }

    #[test]
    fn a_worker_keeps_what_it_accepts_while_it_is_not_busier() {
        let (spread, _inboxes) = Spread::new(3);
        let a = spread.place(1);
        assert_eq!(a.worker(), 1, "all idle: the accepting worker keeps it");
        let b = spread.place(1);
        assert_ne!(b.worker(), 1, "worker 1 is now the busiest");
        drop(a);
        let c = spread.place(1);
        assert_eq!(c.worker(), 1, "a closed connection frees its worker");
        assert_eq!(spread.loads().iter().sum::<usize>(), 2);
    }

    #[test]
    fn closing_connections_brings_the_counts_back_to_zero() {
        let (spread, _inboxes) = Spread::new(4);
        let held: Vec<Load> = (0..10).map(|i| spread.place(i % 4)).collect();
        assert_eq!(spread.loads().iter().sum::<usize>(), 10);
        assert!(spread.loads().iter().all(|&n| n == 2 || n == 3));
        drop(held);
        assert_eq!(spread.loads(), vec![0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn a_handed_connection_reaches_its_worker_inbox() {
        let (spread, mut inboxes) = Spread::new(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let _first = spread.place(0);
        let load = spread.place(0);
        assert_eq!(load.worker(), 1);
        spread
            .hand(Handed {
                stream,
                peer,
                listener: 0,
                permit,
                load,
            })
            .unwrap();
        let got = inboxes[1].recv().await.unwrap();
        assert_eq!(got.peer, peer);
        assert!(inboxes[0].try_recv().is_err());
    }
}
