//! Every example program prints its usage on `--help` (exit 0, every flag
//! named) and refuses an unknown flag or a bad value (exit 2, the flag named
//! on stderr) instead of silently running with defaults.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Each example with the flags its usage must name.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("bench", &["--quick", "--json", "--only"]),
    (
        "swarm",
        &["--workers", "--tasks", "--inflight", "--format", "--remote"],
    ),
    (
        "serve",
        &[
            "--listen",
            "--format",
            "--max-line",
            "--max-connections",
            "--idle-timeout",
            "--secret-file",
            "--advertise",
            "--exit-when-idle",
            "--exec",
        ],
    ),
    (
        "call",
        &["--connect", "--format", "--timeout", "--secret-file"],
    ),
    ("echo", &["--format"]),
    ("shm_tensor", &["--mib", "--workers", "--chunk-mib"]),
    (
        "pool",
        &[
            "--workers",
            "--tasks",
            "--kill-every",
            "--chunk",
            "--inflight",
            "--hosts",
            "--slurm",
            "--dns",
            "--exec",
        ],
    ),
    ("embed_poll", &[]),
    ("embed_tokio", &["--serve"]),
];

/// Runs an example with `args` and empty stdin, within 20 s; returns
/// (exit code, stdout, stderr).
fn run(name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    // Tests run in parallel: each run gets its own files.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out_path =
        std::env::temp_dir().join(format!("miniray-cli-{}-{name}-{n}.out", std::process::id()));
    let err_path = out_path.with_extension("err");
    let mut child = Command::new(common::example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("example (built by cargo test)");
    // A program that ignores the flag would start its real work: the
    // deadline kills it and fails the test.
    let status = common::wait_child(&mut child, Duration::from_secs(20));
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (status.code(), out, err)
}

#[test]
fn help_prints_usage_with_every_flag_and_exits_0() {
    for (name, flags) in EXAMPLES {
        for help in ["--help", "-h"] {
            let (code, out, err) = run(name, &[help]);
            assert_eq!(
                code,
                Some(0),
                "{name} {help}: stdout {out:?} stderr {err:?}"
            );
            assert!(out.starts_with("usage: "), "{name} {help}: {out:?}");
            for flag in *flags {
                assert!(out.contains(flag), "{name} usage lacks {flag}: {out}");
            }
            assert!(
                flags.is_empty() || out.contains("default"),
                "{name} usage gives no defaults: {out}"
            );
        }
    }
}

#[test]
fn unknown_flag_is_an_error_naming_it() {
    for (name, _) in EXAMPLES {
        let (code, out, err) = run(name, &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{name}: stdout {out:?} stderr {err:?}");
        assert!(err.contains("--no-such-flag"), "{name}: {err:?}");
        assert!(err.contains("usage: "), "{name}: {err:?}");
    }
}

#[test]
fn missing_or_bad_value_is_an_error_naming_the_flag() {
    for (name, args, flag) in [
        ("swarm", &["--workers"][..], "--workers"),
        ("swarm", &["--tasks", "many"][..], "--tasks"),
        ("swarm", &["--format", "xml"][..], "--format"),
        ("shm_tensor", &["--mib", "-1"][..], "--mib"),
        ("pool", &["--kill-every", "often"][..], "--kill-every"),
        ("pool", &["--chunk"][..], "--chunk"),
        ("pool", &["--exec"][..], "--exec"),
        ("pool", &["--slurm"][..], "--slurm"),
        ("pool", &["--dns", "no-port"][..], "--dns"),
        ("pool", &["--dns", "name:99999"][..], "--dns"),
        ("pool", &["--hosts", "2", "--slurm", "-N2"][..], "--slurm"),
        (
            "pool",
            &["--dns", "svc:7000", "--kill-every", "5"][..],
            "--dns",
        ),
        ("echo", &["--format"][..], "--format"),
        ("bench", &["--json"][..], "--json"),
        ("bench", &["--quick", "--only"][..], "--only"),
        (
            "serve",
            &["--listen", "127.0.0.1:0", "--idle-timeout", "x"][..],
            "--idle-timeout",
        ),
        (
            "call",
            &["--connect", "127.0.0.1:1", "--timeout", "-3"][..],
            "--timeout",
        ),
    ] {
        let (code, out, err) = run(name, args);
        assert_eq!(
            code,
            Some(2),
            "{name} {args:?}: stdout {out:?} stderr {err:?}"
        );
        assert!(err.contains(flag), "{name} {args:?}: {err:?}");
        assert!(err.contains("usage: "), "{name} {args:?}: {err:?}");
    }
}
