//! The examples' shared command-line parsing, hand-written to stay tiny.
//! Included by each example with `#[path = "common/args.rs"] mod args;`.
//!
//! `--help`/`-h` prints the usage to stdout and exits 0; an unknown flag,
//! a missing value or an unparsable value prints an error naming the flag,
//! then the usage, to stderr and exits 2.

#![allow(dead_code)] // each example uses a different part

use std::fmt::Display;
use std::str::FromStr;

/// The arguments of one example program, taken one at a time.
pub struct Args {
    prog: &'static str,
    usage: &'static str,
    rest: std::vec::IntoIter<String>,
}

impl Args {
    /// Reads the process's arguments; `usage` lists every flag with its default.
    pub fn new(prog: &'static str, usage: &'static str) -> Self {
        Args {
            prog,
            usage,
            rest: std::env::args().skip(1).collect::<Vec<_>>().into_iter(),
        }
    }

    /// The next flag, or `None` at the end. Handles `--help`/`-h` itself.
    pub fn next_flag(&mut self) -> Option<String> {
        let flag = self.rest.next()?;
        if flag == "--help" || flag == "-h" {
            println!("{}", self.usage.trim_end());
            std::process::exit(0);
        }
        Some(flag)
    }

    /// The value after `flag`, parsed; exits 2 naming `flag` if it is
    /// missing or does not parse.
    pub fn value<T: FromStr>(&mut self, flag: &str) -> T
    where
        T::Err: Display,
    {
        let Some(text) = self.rest.next() else {
            self.fail(format!("{flag} needs a value"))
        };
        match text.parse() {
            Ok(v) => v,
            Err(e) => self.fail(format!("{flag} {text:?}: {e}")),
        }
    }

    /// Every argument not yet taken (for `--exec CMD ARGS...`).
    pub fn remaining(&mut self) -> Vec<String> {
        self.rest.by_ref().collect()
    }

    /// Exits 2 for a flag this program does not accept.
    pub fn unknown(&self, flag: &str) -> ! {
        self.fail(format!("unknown flag {flag}"))
    }

    /// Prints `prog: msg` and the usage to stderr and exits 2.
    pub fn fail(&self, msg: impl Display) -> ! {
        eprintln!("{}: {msg}\n\n{}", self.prog, self.usage.trim_end());
        std::process::exit(2);
    }
}
