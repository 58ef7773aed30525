//! [`ClusterError`]: what the cluster module's sources and worker program
//! report, each naming its cause.

use std::fmt;
use std::io;

/// A failure of a host source, a launcher or the worker program.
#[non_exhaustive]
#[derive(Debug)]
pub enum ClusterError {
    /// A flag or environment variable of the worker program is missing a
    /// value, unknown, or does not parse.
    Config {
        /// The flag or variable (`--exit-when-idle`, `MINIRAY_LISTEN`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name did not resolve to an address.
    Resolve {
        /// The name.
        name: String,
        /// What the resolver said.
        reason: String,
    },
    /// A program (`srun`, `scancel`, `squeue`) could not be started or
    /// failed.
    Command {
        /// The program and its arguments, as run.
        command: String,
        /// The OS error or the program's own words.
        reason: String,
    },
    /// A system call failed (a thread could not be started, a pipe read).
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The reactor failed (binding the listener, waiting).
    Reactor(crate::Error),
}

impl ClusterError {
    pub(crate) fn config(name: impl Into<String>, reason: impl Into<String>) -> Self {
        ClusterError::Config {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Config { name, reason } => write!(f, "{name}: {reason}"),
            ClusterError::Resolve { name, reason } => write!(f, "cannot resolve {name}: {reason}"),
            ClusterError::Command { command, reason } => write!(f, "{command}: {reason}"),
            ClusterError::Io { op, source } => write!(f, "{op}: {source}"),
            ClusterError::Reactor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Io { source, .. } => Some(source),
            ClusterError::Reactor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::Error> for ClusterError {
    fn from(e: crate::Error) -> Self {
        ClusterError::Reactor(e)
    }
}
