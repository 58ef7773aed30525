//! Clusters: where hosts come from while a pool runs, and the program
//! that runs on them.
//!
//! A cluster engine (Slurm, Kubernetes) places, starts, time-limits and
//! cleans up the workers; miniray learns their addresses and follows the
//! membership. The pieces:
//!
//! * **The seam**: a host source sends [`HostChange::Add`] and
//!   [`HostChange::Drain`] through a [`Feed`] (an `mpsc` sender and a
//!   wake-up). Every source runs on threads of its own, never on the
//!   consumer's (a reactor must never wait for `getaddrinfo`), and stops
//!   when its handle is dropped or its feed's receiver is gone.
//! * **Sources**: [`DnsSource`] re-resolves a name (a Kubernetes headless
//!   Service) every few seconds; [`SlurmLauncher`] starts worker programs
//!   as `srun` steps and reads their addresses from `srun --label`'s
//!   output. A fixed list needs no source.
//! * **The pool**: [`Hosts::dns`](crate::pool::Hosts::dns),
//!   [`Hosts::slurm`](crate::pool::Hosts::slurm) and
//!   [`Hosts::source`](crate::pool::Hosts::source) give a
//!   [`Pool`](crate::pool::Pool) hosts that such a source feeds while it
//!   runs: the pool owns the source, its feed wakes the pool's reactor, an
//!   added host is connected to, a drained one gets no new task, finishes
//!   its tries in flight and is closed.
//! * **The worker program**: [`serve_worker`], called from your own
//!   binary's `main`, serves a function like
//!   [`Reactor::listen`](crate::Reactor::listen), binds and advertises the
//!   node's address ([`advertised`]), prints `listening on HOST:PORT`,
//!   drains on a signal and exits when idle or when its driver is gone.
//!
//! ```no_run
//! use std::time::Duration;
//! use miniray::cluster::SlurmLauncher;
//! use miniray::pool::{Hosts, Pool, PoolOptions};
//!
//! # fn main() -> miniray::Result<()> {
//! // A program whose main is `miniray::cluster::serve_worker(|n: u64| n * n)`,
//! // started as one step of 4 tasks; each task's connections are workers.
//! let hosts = Hosts::slurm(["-N4", "-n4", "--signal=USR1@120"], |feed| {
//!     SlurmLauncher::new("./my-worker", ["--exit-when-idle", "600"], feed)
//! })
//! .per_host(4);
//! let opts = PoolOptions::new().timeout(Duration::from_secs(60)).chunk_size_auto();
//! let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts)?;
//! let total: u64 = pool.map(0..1_000_000u64).map(|r| r.expect("no task failed")).sum();
//! // Scale up while it runs: another step through the pool's launcher.
//! if let Some(slurm) = pool.host_source::<SlurmLauncher>() {
//!     let _ = slurm.start_step(["-N2", "-n2"]);
//! }
//! # let _ = total;
//! # Ok(())
//! # }
//! ```
//!
//! The seam alone, read by a consumer of your own:
//!
//! ```no_run
//! use std::time::Duration;
//! use miniray::cluster::{Feed, HostChange, SlurmLauncher};
//!
//! # fn main() -> Result<(), miniray::cluster::ClusterError> {
//! let (feed, changes) = Feed::channel();
//! let slurm = SlurmLauncher::new("./my-worker", ["--exit-when-idle", "600"], feed);
//! slurm.start_step(["-N4", "-n4", "--signal=USR1@120"])?;
//! while let Ok(change) = changes.recv_timeout(Duration::from_secs(30)) {
//!     match change {
//!         HostChange::Add(addr) => println!("serving: {addr}"),
//!         HostChange::Drain(addr) => println!("leaving: {addr}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod advertise;
mod dns;
mod error;
mod feed;
mod idle;
mod lines;
mod slurm;
mod worker;

pub use advertise::{advertised, node_address, SLURM_NODE_ENV};
pub use dns::{DnsSource, DnsStatus, DEFAULT_DNS_INTERVAL};
pub use error::ClusterError;
pub use feed::{Feed, HostChange, Wake};
pub use idle::IdleExit;
pub use lines::{DRAINING, LISTENING, SLURM_STEP};
pub use slurm::{SlurmLauncher, Step, StepStatus, DEFAULT_TEARDOWN};
pub use worker::{serve_worker, serve_worker_with, WorkerConfig, DRAIN_SIGNALS};
