//! A server (`Reactor::listen`): listens, forks one worker per connection,
//! serves until SIGINT or SIGTERM, then shuts down gracefully (stop
//! accepting, SIGTERM the serving children, bounded grace, SIGKILL, reap
//! every one).
//!
//! ```text
//! serve --listen ADDR [--format json|marshal] [--max-line BYTES]
//!       [--max-connections N] [--idle-timeout SECS] [--secret-file PATH]
//!       [--require-encryption] [--advertise HOST] [--exit-when-idle SECS]
//!       [--exec CMD ARGS...]
//! ```
//!
//! The default work function echoes each message. With `--exec`, each
//! connection's child runs `CMD ARGS...` with the connection as its stdin
//! and stdout. The first line of stdout is `listening on HOST:PORT`, the
//! address others dial (`miniray::cluster::advertised`: `--advertise HOST`
//! if given, else the bound address, and for `0.0.0.0` the node's address,
//! never the wildcard); events go to stderr. `--exit-when-idle SECS` stops
//! the server after that long with no connection (printing `draining
//! HOST:PORT` first, as `miniray::cluster::serve_worker` does).
//!
//! `--idle-timeout SECS` (default 300, fractions allowed, 0 for none) closes
//! a connection that sends no complete line for that long, so that
//! `--max-connections` silent clients cannot lock everyone else out (see
//! `ServerOptions::idle_timeout`; with `--exec` it is the socket's receive
//! timeout).
//!
//! Authentication: with `MINIRAY_SECRET` set in the environment, or
//! `--secret-file PATH` (a file only its owner may read), clients and server
//! prove the secret to each other before anything is forked, and every line
//! after that is tagged (never pass a secret on the command line; an
//! `--exec` program never sees it). `--require-encryption` refuses clients
//! that do not encrypt (`call --encrypt`).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use miniray::{Exec, Format, Reactor, Secret, ServerEvent, ServerOptions, Token, Value};

struct Args {
    listen: String,
    format: Format,
    max_line: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout: Option<Duration>,
    exec: Option<Vec<String>>,
    secret_file: Option<String>,
    advertise: Option<String>,
    exit_when_idle: Option<Duration>,
    require_encryption: bool,
}

/// The default of `--idle-timeout`.
const DEFAULT_IDLE: Duration = Duration::from_secs(300);

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: serve --listen ADDR [--format json|marshal] [--max-line BYTES] [--max-connections N]
             [--idle-timeout SECS] [--secret-file PATH] [--require-encryption]
             [--advertise HOST] [--exit-when-idle SECS] [--exec CMD ARGS...]
  --listen ADDR          address to listen on, e.g. 127.0.0.1:0 (required)
  --format F             json or marshal (default json)
  --max-line BYTES       longest line accepted (default: the library's limit)
  --max-connections N    connections served at once (default: the library's limit)
  --idle-timeout SECS    close a connection silent this long, 0 for never (default 300)
  --secret-file PATH     require authentication with this secret, a file only its owner may read (default: $MINIRAY_SECRET, else none)
  --require-encryption   refuse clients that do not encrypt (needs a secret)
  --advertise HOST       host to print in the address line (default: the bound address; for 0.0.0.0 the node's)
  --exit-when-idle SECS  exit after this long with no connection, 0 for never (default never)
  --exec CMD ARGS...     run CMD per connection instead of echoing; takes the rest of the line (default: echo)
";

fn parse_args() -> Args {
    let mut a = Args {
        listen: String::new(),
        format: Format::Json,
        max_line: None,
        max_connections: None,
        idle_timeout: Some(DEFAULT_IDLE),
        exec: None,
        secret_file: None,
        advertise: None,
        exit_when_idle: None,
        require_encryption: false,
    };
    let mut args = args::Args::new("serve", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--listen" => a.listen = args.value(&flag),
            "--format" => a.format = args.value(&flag),
            "--max-line" => a.max_line = Some(args.value(&flag)),
            "--max-connections" => a.max_connections = Some(args.value(&flag)),
            "--idle-timeout" => {
                let secs: f64 = args.value(&flag);
                a.idle_timeout = if secs == 0.0 {
                    None
                } else {
                    match Duration::try_from_secs_f64(secs) {
                        Ok(d) => Some(d),
                        Err(e) => args.fail(format!("--idle-timeout {secs}: {e}")),
                    }
                };
            }
            "--secret-file" => a.secret_file = Some(args.value(&flag)),
            "--advertise" => a.advertise = Some(args.value(&flag)),
            "--exit-when-idle" => {
                let secs: f64 = args.value(&flag);
                a.exit_when_idle = if secs == 0.0 {
                    None
                } else {
                    match Duration::try_from_secs_f64(secs) {
                        Ok(d) => Some(d),
                        Err(e) => args.fail(format!("--exit-when-idle {secs}: {e}")),
                    }
                };
            }
            "--require-encryption" => a.require_encryption = true,
            "--exec" => {
                let rest = args.remaining();
                if rest.is_empty() {
                    args.fail("--exec needs a command");
                }
                a.exec = Some(rest);
            }
            _ => args.unknown(&flag),
        }
    }
    if a.listen.is_empty() {
        args.fail("--listen is required");
    }
    a
}

/// Blocks SIGINT and SIGTERM and returns a signalfd that reads them.
/// (miniray's children unblock every signal before they run.)
fn termination_signalfd() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset manipulation on a local set; sigprocmask and signalfd
    // with valid pointers; the returned descriptor is new and ours.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(args) {
        eprintln!("serve: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    miniray::raise_fd_limit()?;
    let signals = termination_signalfd()?;
    let mut reactor = Reactor::new()?;
    let mut opts = ServerOptions::new().format(args.format);
    if let Some(n) = args.max_line {
        opts = opts.max_line(n);
    }
    let secret = match &args.secret_file {
        Some(path) => Some(Secret::from_file(path)?),
        None => Secret::from_env(miniray::SECRET_ENV)?,
    };
    if let Some(secret) = secret {
        opts = opts.secret(secret);
    }
    opts = opts.require_encryption(args.require_encryption);
    if let Some(n) = args.max_connections {
        opts = opts.max_connections(n);
    }
    if let Some(limit) = args.idle_timeout {
        opts = opts.idle_timeout(limit);
    }
    let server = match &args.exec {
        Some(cmd) => {
            reactor.listen_exec(args.listen.as_str(), &opts, Exec::new(&cmd[0], &cmd[1..])?)?
        }
        None => reactor.listen(args.listen.as_str(), &opts, |msg: Value| msg)?,
    };
    let sig_token = Token(1);
    reactor.register_source(
        &mut mio::unix::SourceFd(&signals.as_raw_fd()),
        sig_token,
        miniray::Interest::READABLE,
    )?;
    let addr = reactor.server_addr(server)?;
    let shown = miniray::cluster::advertised(addr, args.advertise.as_deref())?;
    let mut out = std::io::stdout();
    writeln!(out, "{}{shown}", miniray::cluster::LISTENING)?;
    out.flush()?;

    let mut idle = miniray::cluster::IdleExit::new(args.exit_when_idle);
    loop {
        let wait = idle
            .remaining(std::time::Instant::now())
            .map_or(Duration::from_secs(60), |left| {
                left.min(Duration::from_secs(60)) + Duration::from_millis(1)
            });
        reactor.wait_any(Some(wait))?;
        for e in reactor.take_server_events() {
            match e {
                ServerEvent::Accepted { peer, pid, .. } => eprintln!("accepted {peer} (pid {pid})"),
                ServerEvent::Exited { pid, status, .. }
                    if status.and_then(|s| s.code()) == Some(miniray::process::EXIT_IDLE) =>
                {
                    eprintln!("pid {pid} closed an idle connection")
                }
                ServerEvent::Exited { pid, status, .. } => {
                    eprintln!("pid {pid} {}", miniray::process::describe(status))
                }
                ServerEvent::Rejected { peer, .. } => {
                    eprintln!("rejected {peer}: connection limit")
                }
                ServerEvent::AuthFailed { peer, reason, .. } => {
                    eprintln!("refused {peer}: authentication: {reason}")
                }
                ServerEvent::AcceptFailed { error, dropped, .. } => {
                    eprintln!("accept failed: {error} (pending connection dropped: {dropped})")
                }
                other => eprintln!("{other:?}"),
            }
        }
        if reactor
            .take_user_events()
            .iter()
            .any(|e| e.token == sig_token)
        {
            break;
        }
        let connections = reactor.server_connections(server)?;
        if idle.observe(connections, std::time::Instant::now()) {
            writeln!(out, "{}{shown}", miniray::cluster::DRAINING)?;
            out.flush()?;
            eprintln!(
                "no connection for {:?}: exiting",
                args.exit_when_idle.unwrap_or_default()
            );
            break;
        }
    }
    eprintln!("shutting down");
    reactor.stop_server(server)?;
    for e in reactor.take_server_events() {
        if let ServerEvent::Exited { pid, status, .. } = e {
            eprintln!("pid {pid} {}", miniray::process::describe(status));
        }
    }
    Ok(())
}
