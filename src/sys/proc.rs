//! What a child is doing, from `/proc`: whether it waits for input, so a
//! plain peer's answer is taken only once the peer wrote all it will for
//! the request.

/// Whether process `pid` waits for input now: blocked reading its stdin
/// (descriptor 0, the worker's socket) or in a poll of descriptors. `None`
/// when that cannot be told (`/proc/PID/syscall` unreadable: another
/// user's process, a ptrace restriction, or the process gone).
///
/// `/proc/PID/syscall` is one line: the number of the system call the
/// thread is blocked in and its arguments, `running`, or `-1 ...` when it
/// is blocked outside a system call.
pub(crate) fn waits_for_input(pid: libc::pid_t) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    Some(parse_syscall(&text))
}

fn parse_syscall(text: &str) -> bool {
    let mut fields = text.split_whitespace();
    let Some(Ok(nr)) = fields.next().map(str::parse::<libc::c_long>) else {
        // "running" (or anything unknown): not waiting.
        return false;
    };
    let fd = fields
        .next()
        .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let reads = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
    ];
    let polls = [
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_pwait,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait,
    ];
    (reads.contains(&nr) && fd == Some(0)) || polls.contains(&nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_stdin_or_a_poll_is_waiting_for_input() {
        let read0 = format!(
            "{} 0x0 0x562eacbfa180 0x2000 0x0 0x0 0x0 0x7fff 0x7f4f",
            libc::SYS_read
        );
        assert!(parse_syscall(&read0));
        let read3 = format!(
            "{} 0x3 0x562eacbfa180 0x2000 0x0 0x0 0x0 0x7fff 0x7f4f",
            libc::SYS_read
        );
        assert!(!parse_syscall(&read3));
        let ppoll = format!(
            "{} 0x7ffe 0x1 0x0 0x0 0x8 0x0 0x7fff 0x7f4f",
            libc::SYS_ppoll
        );
        assert!(parse_syscall(&ppoll));
        let write = format!(
            "{} 0x1 0x5555 0x3 0x0 0x0 0x0 0x7fff 0x7f4f",
            libc::SYS_write
        );
        assert!(!parse_syscall(&write));
        assert!(!parse_syscall("running\n"));
        assert!(!parse_syscall("-1 0x7ffd 0x7f4f\n"));
    }

    #[test]
    fn a_child_blocked_on_its_stdin_is_seen_waiting() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sleep");
        let pid = child.id() as libc::pid_t;
        // sleep waits in clock_nanosleep: not waiting for input.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(waits_for_input(pid), Some(false));
        let _ = child.kill();
        let _ = child.wait();
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cat");
        let pid = cat.id() as libc::pid_t;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while waits_for_input(pid) != Some(true) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(waits_for_input(pid), Some(true));
        drop(cat.stdin.take());
        let _ = cat.wait();
        assert_eq!(
            waits_for_input(pid),
            None,
            "a reaped child has no /proc entry"
        );
    }
}
