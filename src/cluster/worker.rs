//! The worker program contract: [`serve_worker`] serves a function the way
//! [`Reactor::listen`](crate::Reactor::listen) does, configured from flags
//! and the environment, prints its address line, drains on a signal, and
//! exits when idle or when its driver is gone.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::advertise::{advertised, default_listen};
use super::error::ClusterError;
use super::idle::IdleExit;
use super::lines::{DRAINING, LISTENING, SLURM_STEP};
use crate::channel::Channel;
use crate::serve::{self, Infallible};
use crate::{Format, Reactor, Secret, ServerEvent, ServerOptions};

/// The signals that start a drain: `SIGUSR1` (what `srun --signal=USR1@SECS`
/// sends before the walltime), `SIGTERM` (a cancelled step, a Kubernetes
/// pod being deleted) and `SIGINT`.
pub const DRAIN_SIGNALS: [i32; 3] = [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT];

/// How often the worker looks at its signals, its driver and its idle
/// clock between server events.
const TICK: Duration = Duration::from_millis(100);

/// How the worker program runs: where it listens, what it advertises, its
/// secret and format, when it exits. Read from flags and the environment
/// ([`WorkerConfig::from_args`], [`WorkerConfig::from_env`]), or built.
///
/// | flag | variable | meaning |
/// |---|---|---|
/// | `--listen ADDR` | `MINIRAY_LISTEN` | address to bind (default: under Slurm the node's address, else `0.0.0.0`; port 0) |
/// | `--advertise HOST` | `MINIRAY_ADVERTISE` | host to print in the address line (default: see [`advertised`]) |
/// | `--secret-file PATH` | `MINIRAY_SECRET_FILE`, `MINIRAY_SECRET` | require HMAC authentication with this secret (the variable holds the secret itself) |
/// | `--format json\|marshal` | `MINIRAY_FORMAT` | the line format (default json) |
/// | `--exit-when-idle SECS` | `MINIRAY_EXIT_WHEN_IDLE` | exit after this long with no connection (fractions allowed; default never) |
/// | `--exit-on-eof` | `MINIRAY_EXIT_ON_EOF=1` | exit when standard input reaches its end: the driver holds it open while it lives (a launcher sets this) |
///
/// A flag wins over its variable.
#[derive(Clone, Debug, Default)]
pub struct WorkerConfig {
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    secret: Option<Secret>,
    format: Format,
    exit_when_idle: Option<Duration>,
    exit_on_eof: bool,
}

impl WorkerConfig {
    /// Defaults: see the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address to bind.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The host to advertise (an address or a name).
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.advertise = Some(host.into());
        self
    }

    /// Require this secret of clients.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// The line format.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Exit after `limit` with no connection.
    pub fn exit_when_idle(mut self, limit: Duration) -> Self {
        self.exit_when_idle = Some(limit);
        self
    }

    /// Exit when standard input reaches its end.
    pub fn exit_on_eof(mut self, on: bool) -> Self {
        self.exit_on_eof = on;
        self
    }

    /// The configuration from the process's environment only (for a
    /// program with flags of its own).
    pub fn from_env() -> Result<Self, ClusterError> {
        Self::parse(std::iter::empty::<OsString>(), |k| std::env::var_os(k))
    }

    /// The configuration from the process's flags (`std::env::args`) and
    /// environment; an unknown flag is an error naming it.
    pub fn from_args() -> Result<Self, ClusterError> {
        Self::parse(std::env::args_os().skip(1), |k| std::env::var_os(k))
    }

    /// The configuration from `args` (without the program name) and the
    /// variables `env` returns.
    pub fn parse<I, E>(args: I, env: E) -> Result<Self, ClusterError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
        E: Fn(&str) -> Option<OsString>,
    {
        let mut c = WorkerConfig::new();
        let var = |name: &str| -> Result<Option<String>, ClusterError> {
            env(name)
                .map(|v| {
                    v.into_string()
                        .map_err(|_| ClusterError::config(name, "not UTF-8"))
                })
                .transpose()
        };
        if let Some(v) = var("MINIRAY_LISTEN")? {
            c.listen = Some(parse_addr("MINIRAY_LISTEN", &v)?);
        }
        c.advertise = var("MINIRAY_ADVERTISE")?;
        if let Some(path) = var("MINIRAY_SECRET_FILE")? {
            c.secret = Some(read_secret("MINIRAY_SECRET_FILE", &path)?);
        } else if let Some(s) = env(crate::SECRET_ENV) {
            // As `Secret::from_env` reads it, from the environment given.
            let bytes = std::os::unix::ffi::OsStringExt::into_vec(s);
            let secret = Secret::checked(bytes, &format!("${}", crate::SECRET_ENV))
                .map_err(|e| ClusterError::config(crate::SECRET_ENV, e.to_string()))?;
            c.secret = Some(secret);
        }
        if let Some(v) = var("MINIRAY_FORMAT")? {
            c.format = parse_format("MINIRAY_FORMAT", &v)?;
        }
        if let Some(v) = var("MINIRAY_EXIT_WHEN_IDLE")? {
            c.exit_when_idle = parse_secs("MINIRAY_EXIT_WHEN_IDLE", &v)?;
        }
        if let Some(v) = var("MINIRAY_EXIT_ON_EOF")? {
            c.exit_on_eof = match v.as_str() {
                "1" | "true" | "yes" => true,
                "" | "0" | "false" | "no" => false,
                _ => {
                    return Err(ClusterError::config(
                        "MINIRAY_EXIT_ON_EOF",
                        format!("{v:?} is not 1 or 0"),
                    ))
                }
            };
        }
        let mut args = args.into_iter().map(Into::into);
        while let Some(flag) = args.next() {
            let flag = flag
                .into_string()
                .map_err(|f| ClusterError::config(f.to_string_lossy(), "not a flag"))?;
            let mut value = |name: &str| -> Result<String, ClusterError> {
                args.next()
                    .ok_or_else(|| ClusterError::config(name, "needs a value"))?
                    .into_string()
                    .map_err(|_| ClusterError::config(name, "not UTF-8"))
            };
            match flag.as_str() {
                "--listen" => c.listen = Some(parse_addr(&flag, &value(&flag)?)?),
                "--advertise" => c.advertise = Some(value(&flag)?),
                "--secret-file" => c.secret = Some(read_secret(&flag, &value(&flag)?)?),
                "--format" => c.format = parse_format(&flag, &value(&flag)?)?,
                "--exit-when-idle" => c.exit_when_idle = parse_secs(&flag, &value(&flag)?)?,
                "--exit-on-eof" => c.exit_on_eof = true,
                _ => return Err(ClusterError::config(flag, "unknown flag")),
            }
        }
        Ok(c)
    }
}

fn parse_addr(name: &str, v: &str) -> Result<SocketAddr, ClusterError> {
    v.parse()
        .map_err(|e| ClusterError::config(name, format!("{v:?}: {e} (want IP:PORT)")))
}

fn parse_format(name: &str, v: &str) -> Result<Format, ClusterError> {
    v.parse()
        .map_err(|e| ClusterError::config(name, format!("{e}")))
}

/// Seconds, fractions allowed; 0 is no limit.
fn parse_secs(name: &str, v: &str) -> Result<Option<Duration>, ClusterError> {
    let secs: f64 = v
        .parse()
        .map_err(|e| ClusterError::config(name, format!("{v:?}: {e}")))?;
    if secs == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|e| ClusterError::config(name, format!("{v}: {e}")))
}

fn read_secret(name: &str, path: &str) -> Result<Secret, ClusterError> {
    // The error names the file already.
    Secret::from_file(path).map_err(|e| ClusterError::config(name, e.to_string()))
}

/// Serves `f` on one address until the worker is told to stop, configured
/// by the process's flags and environment ([`WorkerConfig::from_args`]):
/// the function to call from your own binary's `main` so that a launcher
/// (`srun`, a Kubernetes Deployment) can run it as a worker.
///
/// ```no_run
/// fn main() -> Result<(), miniray::cluster::ClusterError> {
///     miniray::cluster::serve_worker(|n: u64| n * n)
/// }
/// ```
///
/// See [`serve_worker_with`] for what it does.
pub fn serve_worker<F, Req, Rep>(f: F) -> Result<(), ClusterError>
where
    F: FnMut(Req) -> Rep + Send + 'static,
    Req: DeserializeOwned,
    Rep: Serialize,
{
    serve_worker_with(&WorkerConfig::from_args()?, f)
}

/// [`serve_worker`] with a configuration of your own.
///
/// 1. Binds the configured address (by default the node's, see
///    [`WorkerConfig`]) and serves `f` there as [`Reactor::listen`] does:
///    a forked child per connection.
/// 2. Prints, flushed, on standard output: under Slurm `slurm step
///    JOB.STEP`, then `listening on HOST:PORT` with the address others
///    dial ([`advertised`]: never `0.0.0.0`, nor loopback while the node
///    has another address).
/// 3. On a drain signal ([`DRAIN_SIGNALS`]) prints `draining HOST:PORT`,
///    takes no new connection (one accepted later is closed at once) and
///    exits once its connections are done. The serving children catch the
///    same signals and carry on: Slurm signals every process of a step.
/// 4. Exits (printing `draining HOST:PORT` first) after
///    [`WorkerConfig::exit_when_idle`] with no connection, and at once
///    when standard input ends with [`WorkerConfig::exit_on_eof`] (its
///    driver is gone; the serving children are stopped).
///
/// Returns `Ok(())` after such an exit, an error for a bad configuration
/// or when the server cannot run. Installs signal handlers for
/// [`DRAIN_SIGNALS`] (they only set a flag) and gives serving children
/// `SIGKILL` as their parent-death signal: it is meant to be the
/// program's whole life, called from `main`.
pub fn serve_worker_with<F, Req, Rep>(config: &WorkerConfig, mut f: F) -> Result<(), ClusterError>
where
    F: FnMut(Req) -> Rep + Send + 'static,
    Req: DeserializeOwned,
    Rep: Serialize,
{
    let drain = Arc::new(AtomicBool::new(false));
    for signal in DRAIN_SIGNALS {
        signal_hook::flag::register(signal, drain.clone()).map_err(|source| ClusterError::Io {
            op: "install a drain signal handler",
            source,
        })?;
    }
    let driver_gone = Arc::new(AtomicBool::new(false));
    if config.exit_on_eof {
        watch_stdin(driver_gone.clone())?;
    }
    let listen = match config.listen {
        Some(a) => a,
        None => default_listen()?,
    };
    let mut reactor = Reactor::new()?;
    reactor.set_grace(Duration::from_secs(1));
    let mut opts = ServerOptions::new()
        .format(config.format)
        // Children catch SIGTERM (inherited handlers): a dead parent's must
        // still end them.
        .death_signal(Some(libc::SIGKILL));
    if let Some(secret) = &config.secret {
        opts = opts.secret(secret.clone());
    }
    // Each serving child reads its copy of this as it was at its fork: set
    // to false by a drain, it closes connections accepted after it.
    let accepting = Arc::new(AtomicBool::new(true));
    let open = accepting.clone();
    let server = reactor.listen_channel(listen, &opts, move |ch: &mut Channel| {
        if !open.load(Ordering::SeqCst) {
            return Ok(());
        }
        serve::serve(ch, &mut Infallible(&mut f))
    })?;
    let bound = reactor.server_addr(server)?;
    let shown = advertised(bound, config.advertise.as_deref())?;
    if let (Ok(job), Ok(step)) = (
        std::env::var("SLURM_JOB_ID"),
        std::env::var("SLURM_STEP_ID"),
    ) {
        say(&format!("{SLURM_STEP}{job}.{step}"))?;
    }
    say(&format!("{LISTENING}{shown}"))?;

    let mut idle = IdleExit::new(config.exit_when_idle);
    let mut draining = false;
    loop {
        let wait = idle
            .remaining(Instant::now())
            .map_or(TICK, |left| left.min(TICK));
        reactor.wait_events(Some(wait))?;
        for e in reactor.take_server_events() {
            report(&e);
        }
        if driver_gone.load(Ordering::SeqCst) {
            eprintln!("miniray worker {shown}: standard input ended (driver gone): stopping");
            break;
        }
        let connections = reactor.server_connections(server)?;
        if drain.load(Ordering::SeqCst) && !draining {
            draining = true;
            accepting.store(false, Ordering::SeqCst);
            say(&format!("{DRAINING}{shown}"))?;
        }
        if draining && connections == 0 {
            break;
        }
        if !draining && idle.observe(connections, Instant::now()) {
            say(&format!("{DRAINING}{shown}"))?;
            break;
        }
    }
    reactor.stop_server(server)?;
    for e in reactor.take_server_events() {
        report(&e);
    }
    Ok(())
}

/// One line on standard output, flushed (a launcher reads it through a
/// pipe).
fn say(line: &str) -> Result<(), ClusterError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|source| ClusterError::Io {
            op: "write the worker's output",
            source,
        })
}

/// Server events a person should see (failures), on standard error; not
/// a client that closed during the handshake (a TCP readiness probe does
/// that every few seconds).
fn report(e: &ServerEvent) {
    match e {
        ServerEvent::AuthFailed { reason, .. } if reason.starts_with("closed") => {}
        ServerEvent::AcceptFailed { .. } | ServerEvent::AuthFailed { .. } => {
            eprintln!("miniray worker: {e}")
        }
        _ => {}
    }
}

/// Reads standard input (a duplicate of it, so no lock is held) to its end
/// on a thread, then sets `gone`.
fn watch_stdin(gone: Arc<AtomicBool>) -> Result<(), ClusterError> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| ClusterError::Io {
            op: "duplicate standard input",
            source,
        })?;
    let mut input = std::fs::File::from(fd);
    std::thread::Builder::new()
        .name("miniray-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            gone.store(true, Ordering::SeqCst);
        })
        .map_err(|source| ClusterError::Io {
            op: "start the standard input thread",
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let env = env_of(&[
            ("MINIRAY_LISTEN", "0.0.0.0:7000"),
            ("MINIRAY_EXIT_WHEN_IDLE", "30"),
            ("MINIRAY_FORMAT", "marshal"),
            ("MINIRAY_EXIT_ON_EOF", "1"),
        ]);
        let c = WorkerConfig::parse(["--listen", "127.0.0.1:0", "--advertise", "n1"], env)
            .expect("parse");
        assert_eq!(c.listen, Some("127.0.0.1:0".parse().expect("addr")));
        assert_eq!(c.advertise.as_deref(), Some("n1"));
        assert_eq!(c.exit_when_idle, Some(Duration::from_secs(30)));
        assert_eq!(c.format, Format::Marshal);
        assert!(c.exit_on_eof);
    }

    #[test]
    fn bad_input_names_its_flag_or_variable() {
        let none = env_of(&[]);
        let err = |args: &[&str]| match WorkerConfig::parse(args.iter().copied(), &none) {
            Err(ClusterError::Config { name, .. }) => name,
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(err(&["--bogus"]), "--bogus");
        assert_eq!(err(&["--listen"]), "--listen");
        assert_eq!(err(&["--listen", "nowhere"]), "--listen");
        assert_eq!(err(&["--exit-when-idle", "-3"]), "--exit-when-idle");
        assert_eq!(err(&["--format", "pickle"]), "--format");
        assert_eq!(
            err(&["--secret-file", "/nonexistent/secret"]),
            "--secret-file"
        );
        let bad_env = env_of(&[("MINIRAY_EXIT_ON_EOF", "maybe")]);
        assert!(matches!(
            WorkerConfig::parse(std::iter::empty::<&str>(), bad_env),
            Err(ClusterError::Config { name, .. }) if name == "MINIRAY_EXIT_ON_EOF"
        ));
        // A short secret in the environment is named as the variable, and a
        // secret file's error names its path once.
        let short = env_of(&[("MINIRAY_SECRET", "short")]);
        let e = WorkerConfig::parse(std::iter::empty::<&str>(), short)
            .expect_err("a short secret")
            .to_string();
        assert!(
            e.contains("$MINIRAY_SECRET cannot be used") && e.contains("5 bytes"),
            "{e}"
        );
        let e = WorkerConfig::parse(["--secret-file", "/nonexistent/secret"], &none)
            .expect_err("no such file")
            .to_string();
        assert_eq!(e.matches("/nonexistent/secret").count(), 1, "{e}");
    }
}
