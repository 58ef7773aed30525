//! Making a pool: which supplies of workers it holds (local closure
//! workers, exec'd programs, remote hosts, any mix), then starting them.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::chunk::{IdMap, Sizer};
use super::queue::{Origin, Queue};
use super::router::Router;
use super::supply::{HostsSupply, Local, Started};
use super::{Hosts, Place, Pool, PoolOptions, PoolStats};
use crate::error::{Error, Result};
use crate::frame::FRAMES_ENV;
use crate::process::{deadline_after, ChildKind};
use crate::reactor::Reactor;
use crate::serve::{self, Fallible, Infallible, WithRegions};
use crate::task::calls::{Calls, Proto};
use crate::worker::Exec;

/// A supply as it will be started.
enum Planned {
    Local(Local),
    Hosts(Box<HostsSupply>),
}

/// A pool being put together ([`Pool::builder`]): add supplies of workers,
/// then [`PoolBuilder::build`]. One pool may mix local workers and remote
/// hosts; each task runs wherever a worker is free.
///
/// ```no_run
/// use miniray::pool::{Hosts, Pool, PoolOptions};
/// # fn main() -> miniray::Result<()> {
/// let opts = PoolOptions::new().chunk_size_auto();
/// let mut pool: Pool<u64, u64> = Pool::builder(&opts)
///     .local(4, |n: u64| n * n) // four forked workers here
///     .hosts(&Hosts::new(["10.0.0.5:7000"])?.per_host(8)) // and eight connections there
///     .build()?;
/// # let _ = pool.map(0..10u64).count();
/// # Ok(())
/// # }
/// ```
pub struct PoolBuilder<Req, Rep> {
    opts: PoolOptions,
    planned: Vec<Planned>,
    error: Option<Error>,
    types: PhantomData<fn(Req) -> Rep>,
}

impl<Req, Rep> fmt::Debug for PoolBuilder<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("supplies", &self.planned.len())
            .finish_non_exhaustive()
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// A pool made of the supplies added to the builder (see
    /// [`PoolBuilder`]); `opts` applies to all of them.
    pub fn builder(opts: &PoolOptions) -> PoolBuilder<Req, Rep> {
        PoolBuilder {
            opts: opts.clone(),
            planned: Vec::new(),
            error: None,
            types: PhantomData,
        }
    }
}

impl<Req, Rep> PoolBuilder<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// `n` forked workers answering each request with `f(request)` (see
    /// [`Pool::new`]).
    pub fn local<F>(mut self, n: usize, f: F) -> Self
    where
        F: Fn(Req) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let wopts = self.opts.worker.clone();
        let spawn = Box::new(move |r: &mut Reactor| {
            let f = f.clone();
            r.spawn_channel(&wopts, move |chan| serve::serve(chan, &mut Infallible(f)))
        });
        self.add_local(n, spawn, Proto::Framed, ChildKind::Closure);
        self
    }

    /// `n` forked workers running a work function that can fail (see
    /// [`Pool::fallible`]).
    pub fn local_fallible<F, E>(mut self, n: usize, f: F) -> Self
    where
        F: Fn(Req) -> std::result::Result<Rep, E> + Clone + 'static,
        E: fmt::Display,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let wopts = self.opts.worker.clone();
        let spawn = Box::new(move |r: &mut Reactor| {
            let f = f.clone();
            r.spawn_channel(&wopts, move |chan| serve::serve(chan, &mut Fallible(f)))
        });
        self.add_local(n, spawn, Proto::Framed, ChildKind::Closure);
        self
    }

    /// `n` forked workers whose work function also gets the regions a task
    /// carries (see [`Pool::with_regions`]).
    pub fn local_regions<F>(mut self, n: usize, f: F) -> Self
    where
        F: Fn(Req, Vec<crate::shm::SharedMemory>) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let wopts = self.opts.worker.clone();
        let spawn = Box::new(move |r: &mut Reactor| {
            let f = f.clone();
            r.spawn_channel(&wopts, move |chan| serve::serve(chan, &mut WithRegions(f)))
        });
        self.add_local(n, spawn, Proto::Framed, ChildKind::Closure);
        self
    }

    /// `n` exec workers running `program` (see [`Pool::exec`]); the pool
    /// sets `MINIRAY_FRAMES=1` in their environment.
    pub fn exec(mut self, n: usize, program: &Exec) -> Self {
        match program.clone().env(FRAMES_ENV, "1") {
            Ok(program) => {
                let wopts = self.opts.worker.clone();
                let spawn = Box::new(move |r: &mut Reactor| r.spawn_exec(&wopts, &program));
                self.add_local(n, spawn, Proto::Announce, ChildKind::Exec);
            }
            Err(e) => self.error = self.error.take().or(Some(e)),
        }
        self
    }

    /// Connections to `hosts` (see [`Pool::remote`] and [`Hosts`]). A
    /// keepalive `user_timeout` ([`Keepalive`](crate::remote::Keepalive))
    /// not above the pool's [`PoolOptions::timeout`] is refused at
    /// [`build`](Self::build) ([`Error::InvalidOption`]): it would abort
    /// live connections to hosts busy with a task the deadline allows.
    pub fn hosts(mut self, hosts: &Hosts) -> Self {
        if let (Some(user), Some(task)) = (hosts.user_timeout(), self.opts.timeout) {
            if task != Duration::MAX && user <= task {
                let reason = format!(
                    "{user:?} is not above the pool's task timeout ({task:?}): a host busy with a \
                     task the deadline allows would have its connection aborted"
                );
                self.error = self.error.take().or(Some(Error::InvalidOption {
                    option: "user_timeout",
                    reason,
                }));
            }
        }
        self.planned
            .push(Planned::Hosts(Box::new(HostsSupply::new(hosts))));
        self
    }

    fn add_local(
        &mut self,
        n: usize,
        spawn: super::supply::LocalSpawner,
        proto: Proto,
        kind: ChildKind,
    ) {
        if n == 0 || n > super::MAX_WORKERS {
            let reason = format!("{n} local workers is not within 1..={}", super::MAX_WORKERS);
            self.error = self.error.take().or(Some(Error::InvalidOption {
                option: "workers",
                reason,
            }));
            return;
        }
        let max = self.opts.max_start_failures;
        self.planned
            .push(Planned::Local(Local::new(spawn, proto, kind, n, max)));
    }

    /// Makes the pool: checks the options, spawns every local worker (the
    /// first that cannot be spawned is the error, and nothing is left
    /// running), starts each host source (its error is the build's),
    /// starts connecting to every host and waits up to the
    /// connect timeout for those connects; with
    /// [`PoolOptions::startup_check`], waits that long for a worker that
    /// ends before it is given work.
    pub fn build(self) -> Result<Pool<Req, Rep>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.opts.check()?;
        if self.planned.is_empty() {
            return Err(Error::InvalidOption {
                option: "supplies",
                reason: "a pool needs workers: add local workers, a program or hosts".to_owned(),
            });
        }
        let mut pool = Pool {
            calls: Calls::new(Reactor::new()?),
            supplies: Vec::new(),
            opts: self.opts,
            queue: Queue::default(),
            running: IdMap::default(),
            router: Router::default(),
            sizer: Sizer::new(Default::default()),
            next_task: 0,
            stats: PoolStats::default(),
            closed: false,
            cancelled: Vec::new(),
            events: Vec::new(),
            takers: Vec::new(),
            progress: None,
        };
        pool.sizer = Sizer::new(pool.opts.chunking);
        let mut connect_for = Duration::ZERO;
        for planned in self.planned {
            let supply = pool.supplies.len();
            match planned {
                Planned::Local(mut l) => {
                    for _ in 0..l.size() {
                        let started = l.spawn_one(pool.calls.reactor_mut())?;
                        pool.adopt(supply, started)?;
                    }
                    pool.supplies.push(Box::new(l));
                }
                Planned::Hosts(mut h) => {
                    h.start(pool.calls.reactor_mut())?;
                    connect_for = connect_for.max(h.connect_timeout());
                    pool.supplies.push(h);
                }
            }
        }
        // The first connections, within the connect timeout.
        let until = deadline_after(connect_for);
        loop {
            pool.top_up();
            let starting = pool.supplies.iter().any(|s| s.starting());
            if !starting || until.is_none_or(|u| Instant::now() >= u) {
                break;
            }
            pool.calls
                .reactor_mut()
                .wait_any(Some(Duration::from_millis(5)))?;
        }
        if let Some(check) = pool.opts.startup_check {
            pool.check_start(check)?;
        }
        Ok(pool)
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// Takes a worker a supply started into the worker set.
    pub(super) fn adopt(&mut self, supply: usize, s: Started) -> Result<()> {
        let place = Place {
            origin: Origin {
                supply,
                host: s.host,
            },
            dispatched: 0,
            recycle: false,
        };
        self.calls.add(s.worker, s.proto, s.kind, place)
    }

    /// Waits `within` for a worker that ends before it is given work.
    fn check_start(&mut self, within: Duration) -> Result<()> {
        let until = deadline_after(within);
        let mut events = Vec::new();
        loop {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            self.calls.wait_into(&mut events, left)?;
            for e in events.drain(..) {
                if let crate::task::calls::Event::Ended(e) = e {
                    return Err(Error::Closed { status: e.status });
                }
            }
            if left == Some(Duration::ZERO) {
                return Ok(());
            }
        }
    }
}
