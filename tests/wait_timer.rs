//! Waits with a deadline of 100 ms or more keep it in the reactor's one
//! deadline timer, armed only when it is not already due before that
//! deadline. Each wait still ends at its own deadline: a shorter deadline
//! after a longer one, and a deadline after the timer expired, are kept. A
//! worker answers a request after a delay of its choosing, so a wait that
//! missed its deadline ends with that late answer instead of hanging.

use std::time::{Duration, Instant};

use miniray::{Error, Reactor, Worker, WorkerOptions};

/// What a test tolerates past a deadline on a loaded machine; a missed
/// deadline shows as the late answer, 10 s or more after it.
const SLACK: Duration = Duration::from_secs(4);
const LATE: Duration = Duration::from_secs(10);

/// A worker that answers `(word, ms)` with `word` after `ms` milliseconds,
/// and does not answer `"quiet"`.
fn worker(r: &mut Reactor) -> Worker {
    r.spawn_channel(&WorkerOptions::new(), |chan| {
        while let Some((word, ms)) = chan.recv::<(String, u64)>()? {
            if word != "quiet" {
                std::thread::sleep(Duration::from_millis(ms));
                chan.send(&word)?;
            }
        }
        Ok(())
    })
    .expect("spawn")
}

/// `recv` with `timeout` must end with `Timeout` at its deadline.
fn times_out(r: &mut Reactor, w: Worker, timeout: Duration) {
    let start = Instant::now();
    let got = r.recv::<String>(w, Some(timeout));
    let took = start.elapsed();
    assert!(
        matches!(got, Err(Error::Timeout)),
        "expected Timeout after {timeout:?}, got {got:?} after {took:?}"
    );
    assert!(
        took >= timeout,
        "Timeout after {took:?}, before {timeout:?}"
    );
    assert!(
        took < timeout + SLACK,
        "Timeout after {took:?}, not {timeout:?}"
    );
}

#[test]
fn a_shorter_deadline_after_a_longer_one_is_kept() {
    let mut r = Reactor::new().expect("reactor");
    let w = worker(&mut r);
    // A long wait answered at once leaves the timer armed far ahead.
    r.send(w, &("echo", 0)).expect("send");
    let echo: String = r.recv(w, Some(Duration::from_secs(60))).expect("echo");
    assert_eq!(echo, "echo");
    // The next wait is shorter: the timer is armed again, earlier.
    r.send(w, &("late", LATE.as_millis() as u64)).expect("send");
    times_out(&mut r, w, Duration::from_millis(300));
}

#[test]
fn a_deadline_after_the_timer_expired_is_kept() {
    let mut r = Reactor::new().expect("reactor");
    let w = worker(&mut r);
    r.send(w, &("quiet", 0)).expect("send");
    // The first wait's deadline passes: the one-shot timer expires.
    times_out(&mut r, w, Duration::from_millis(200));
    // A later deadline needs the timer armed again.
    r.send(w, &("late", LATE.as_millis() as u64)).expect("send");
    times_out(&mut r, w, Duration::from_millis(300));
    times_out(&mut r, w, Duration::from_millis(150));
}

#[test]
fn an_early_expiry_ends_no_wait_before_its_deadline() {
    let mut r = Reactor::new().expect("reactor");
    let w = worker(&mut r);
    let short = Duration::from_millis(400);
    // A short wait answered at once leaves the timer due before the next
    // wait's deadline; that wait sees it expire first, and waits on.
    r.send(w, &("echo", 0)).expect("send");
    assert_eq!(r.recv::<String>(w, Some(short)).expect("echo"), "echo");
    r.send(w, &("late", LATE.as_millis() as u64)).expect("send");
    times_out(&mut r, w, Duration::from_millis(900));
    // So does `wait_any`, which returns nothing at its deadline (`w`'s
    // late answer ends it if it misses that).
    let w2 = worker(&mut r);
    r.send(w2, &("echo", 0)).expect("send");
    assert_eq!(r.recv::<String>(w2, Some(short)).expect("echo"), "echo");
    let start = Instant::now();
    let ready = r
        .wait_any(Some(Duration::from_millis(900)))
        .expect("wait_any");
    let took = start.elapsed();
    assert!(ready.is_empty(), "{ready:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "returned after {took:?}"
    );
    assert!(
        took < Duration::from_millis(900) + SLACK,
        "returned after {took:?}"
    );
}
