//! The worker program's output lines and `srun --label`'s framing of them:
//! what a launcher reads, parsed without trusting it (every line bounded).

use std::io::{self, BufRead};

/// The longest output line a launcher keeps; the rest of a longer line is
/// skipped up to its newline.
pub(crate) const MAX_LINE: usize = 4096;

/// The worker's address line: `listening on HOST:PORT`.
pub const LISTENING: &str = "listening on ";
/// The worker's drain line: `draining HOST:PORT` (it takes no new
/// connections and exits once its connections are done).
pub const DRAINING: &str = "draining ";
/// The worker's Slurm step line, before its address: `slurm step JOB.STEP`.
pub const SLURM_STEP: &str = "slurm step ";

/// One line of a worker's standard output, as far as a launcher cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WorkerLine<'a> {
    Listening(&'a str),
    Draining(&'a str),
    SlurmStep(&'a str),
    Other,
}

pub(crate) fn worker_line(text: &str) -> WorkerLine<'_> {
    let text = text.trim();
    if let Some(host) = text.strip_prefix(LISTENING) {
        WorkerLine::Listening(host.trim())
    } else if let Some(host) = text.strip_prefix(DRAINING) {
        WorkerLine::Draining(host.trim())
    } else if let Some(step) = text.strip_prefix(SLURM_STEP) {
        WorkerLine::SlurmStep(step.trim())
    } else {
        WorkerLine::Other
    }
}

/// `srun --label`'s `RANK: text` (the rank right-aligned when there are
/// ten tasks or more) split into the rank and the text.
pub(crate) fn split_label(line: &str) -> Option<(u32, &str)> {
    let (rank, text) = line.split_once(": ")?;
    let rank = rank.trim_start().parse().ok()?;
    Some((rank, text))
}

/// The ranks whose end `srun` reports on its standard error
/// (`srun: error: n1: task 0: Exited with exit code 3`,
/// `srun: error: n2: tasks 1-3,5: Killed`).
pub(crate) fn ended_tasks(line: &str) -> Vec<u32> {
    let Some(rest) = line.strip_prefix("srun: error: ") else {
        return Vec::new();
    };
    let mut parts = rest.splitn(3, ": ");
    let (_node, Some(tasks), Some(_what)) = (parts.next(), parts.next(), parts.next()) else {
        return Vec::new();
    };
    let Some(list) = tasks
        .strip_prefix("tasks ")
        .or_else(|| tasks.strip_prefix("task "))
    else {
        return Vec::new();
    };
    let mut ranks = Vec::new();
    for item in list.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) else {
            return Vec::new();
        };
        // A range is bounded by the line's length: no more ranks than
        // the bytes that could have named them.
        if hi < lo || (hi - lo) as usize > MAX_LINE {
            return Vec::new();
        }
        ranks.extend(lo..=hi);
    }
    ranks
}

/// Reads `input` line by line, each cut to [`MAX_LINE`] bytes (the rest
/// skipped up to its newline), calling `each` with the line (lossy UTF-8,
/// without its newline). Memory is bounded by [`MAX_LINE`] whatever the
/// input; time is linear in it. Ends at EOF or a read error.
pub(crate) fn for_each_line(mut input: impl BufRead, mut each: impl FnMut(&str)) -> io::Result<()> {
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut skipping = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !line.is_empty() && !skipping {
                each(&String::from_utf8_lossy(&line));
            }
            return Ok(());
        }
        let (chunk, ended) = match memchr::memchr(b'\n', buf) {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !skipping {
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            skipping = chunk.len() > room;
        }
        let used = ended.unwrap_or(buf.len());
        input.consume(used);
        if ended.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            each(&String::from_utf8_lossy(&line));
            line.clear();
            skipping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_worker_lines() {
        assert_eq!(
            split_label("0: listening on 127.0.0.11:34325"),
            Some((0, "listening on 127.0.0.11:34325"))
        );
        assert_eq!(split_label(" 7: x: y"), Some((7, "x: y")));
        assert_eq!(split_label("srun: error: x"), None);
        assert_eq!(
            worker_line("listening on 127.0.0.11:34325"),
            WorkerLine::Listening("127.0.0.11:34325")
        );
        assert_eq!(worker_line("draining n1:7 "), WorkerLine::Draining("n1:7"));
        assert_eq!(
            worker_line("slurm step 12.3"),
            WorkerLine::SlurmStep("12.3")
        );
        assert_eq!(worker_line("running 1 test"), WorkerLine::Other);
    }

    #[test]
    fn ended_tasks_from_sruns_words() {
        assert_eq!(
            ended_tasks("srun: error: n1: task 0: Exited with exit code 3"),
            vec![0]
        );
        assert_eq!(
            ended_tasks("srun: error: n2: tasks 1-3,5: Killed"),
            vec![1, 2, 3, 5]
        );
        assert_eq!(
            ended_tasks("srun: error: n2: tasks 1-999999999: Killed"),
            Vec::<u32>::new()
        );
        assert_eq!(
            ended_tasks("srun: Job step aborted: Waiting"),
            Vec::<u32>::new()
        );
        assert_eq!(ended_tasks("0: task 0: hello"), Vec::<u32>::new());
    }

    #[test]
    fn long_lines_are_cut_and_the_next_line_is_whole() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\r\nnext\nlast");
        let mut seen = Vec::new();
        // A tiny buffer: the long line arrives in many pieces.
        let reader = io::BufReader::with_capacity(7, &input[..]);
        for_each_line(reader, |l| seen.push(l.to_string())).expect("read");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].len(), MAX_LINE);
        assert_eq!(seen[1], "next");
        assert_eq!(seen[2], "last");
    }
}
