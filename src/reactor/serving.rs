//! The public face of the TCP servers: `listen` and its kin, a server's
//! address and connections, its events, `stop_server`. [`Servers`](crate::server::Servers)
//! does the work.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use super::Reactor;
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::listener::{Server, ServerEvent, ServerOptions, ServerWork};
use crate::serve::{self, Infallible};
use crate::worker::Exec;

impl Reactor {
    /// Starts a [`Server`] on `addr` (port 0 picks a free port; see
    /// [`Reactor::server_addr`]): every accepted connection gets a forked
    /// child that answers each message with `f(message)`, with the same
    /// hygiene as a local worker (every inherited descriptor but its
    /// connection closed, the listener and the epoll descriptor included;
    /// `PR_SET_PDEATHSIG`; `_exit`). The parent closes its copy of the
    /// connection and reaps the child ([`ServerEvent::Exited`]).
    ///
    /// The server accepts, forks and reaps only while this reactor is
    /// waited on ([`Reactor::wait_events`], [`Reactor::wait_any`]): until
    /// then clients connect (the kernel queues them) but nobody answers. A
    /// host program for [`Pool::remote`](crate::pool::Pool::remote) is:
    ///
    /// ```no_run
    /// use miniray::{Event, Reactor, Secret, ServerOptions, SECRET_ENV};
    ///
    /// fn main() -> miniray::Result<()> {
    ///     let mut reactor = Reactor::new()?;
    ///     let mut opts = ServerOptions::new();
    ///     if let Some(secret) = Secret::from_env(SECRET_ENV)? {
    ///         opts = opts.secret(secret);
    ///     }
    ///     reactor.listen("0.0.0.0:7000", &opts, |n: u64| n * n)?;
    ///     loop {
    ///         for event in reactor.wait_events(None)? {
    ///             // Never drop them: a refused client (`AuthFailed`), a
    ///             // connection over the limit or a child that crashed
    ///             // shows only here.
    ///             if let Event::Server(e) = event {
    ///                 eprintln!("{e}");
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// To serve from a process that also runs a pool, give the server a
    /// thread (and reactor) of its own.
    ///
    /// System calls: `socket`, `bind`, `listen`, `epoll_ctl`; per
    /// connection `accept4`, `fork`, `pidfd_open`.
    pub fn listen<A, F, Req, Rep>(
        &mut self,
        addr: A,
        opts: &ServerOptions,
        mut f: F,
    ) -> Result<Server>
    where
        A: ToSocketAddrs,
        F: FnMut(Req) -> Rep + Send + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let work = move |ch: &mut Channel| serve::serve(ch, &mut Infallible(&mut f));
        self.listen_work(addr, opts, ServerWork::Run(Box::new(work)))
    }

    /// [`Reactor::listen`] with full control: each connection's child runs
    /// `work` with its [`Channel`].
    pub fn listen_channel<A, F>(&mut self, addr: A, opts: &ServerOptions, work: F) -> Result<Server>
    where
        A: ToSocketAddrs,
        F: FnMut(&mut Channel) -> Result<()> + Send + 'static,
    {
        self.listen_work(addr, opts, ServerWork::Run(Box::new(work)))
    }

    /// [`Reactor::listen`] where each connection's child execs `program`
    /// with the connection as its stdin and stdout (see [`Reactor::spawn_exec`]).
    /// [`ServerOptions::format`](crate::ServerOptions::format) and
    /// [`ServerOptions::max_line`](crate::ServerOptions::max_line) have no
    /// effect here: the program reads and writes the socket itself.
    pub fn listen_exec<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ServerOptions,
        program: Exec,
    ) -> Result<Server> {
        self.listen_work(addr, opts, ServerWork::Exec(program))
    }

    fn listen_work<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ServerOptions,
        work: ServerWork,
    ) -> Result<Server> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolve", e))?
            .next()
            .ok_or_else(|| {
                Error::io(
                    "resolve",
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            })?;
        self.servers
            .listen(&mut self.tokens, self.poll.registry(), addr, opts, work)
    }

    /// The address a server listens on. [`Error::UnknownServer`] for a
    /// handle that names no live server of this reactor.
    pub fn server_addr(&self, s: Server) -> Result<SocketAddr> {
        self.servers.listener(&self.tokens, s).map(|l| l.addr)
    }

    /// Connections a server is serving now. [`Error::UnknownServer`] as for
    /// [`Reactor::server_addr`].
    pub fn server_connections(&self, s: Server) -> Result<usize> {
        self.servers.listener(&self.tokens, s).map(|l| l.active)
    }

    /// What happened at the servers since the last call (or the last
    /// [`Reactor::wait_events`], which takes these too, as
    /// [`Event::Server`](crate::Event::Server)). A new event makes
    /// `wait_any` return (perhaps with no worker ready); events left untaken
    /// do not make it return again.
    pub fn take_server_events(&mut self) -> Vec<ServerEvent> {
        self.announced.server = 0;
        self.servers.take_events()
    }

    /// Stops a server: closes the listener, sends `SIGTERM` to its serving
    /// children, waits up to the grace period (see [`Reactor::set_grace`]),
    /// kills the rest with `SIGKILL`, and reaps them all
    /// ([`ServerEvent::Exited`] for each). Handshakes in progress are closed
    /// too (each reported [`ServerEvent::AuthFailed`] with reason "server
    /// stopped"), and the spare descriptor is closed with the last server.
    /// [`Error::UnknownServer`] for a handle that names no live server.
    pub fn stop_server(&mut self, s: Server) -> Result<()> {
        let stopped = self
            .servers
            .stop(&mut self.tokens, self.poll.registry(), s, self.grace);
        // It queued the children's `Exited`: the descriptor must say so.
        self.signal_queued();
        stopped
    }
}
