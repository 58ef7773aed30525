//! Regions sealed read-only once filled: `F_SEAL_WRITE` is set, and every
//! way to write the bytes is refused, in the creator and in workers that
//! inherit the region or receive it with a message. Sealing waits for no
//! writable mapping to exist, and fails with a typed error while one does.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};

use common::{one_at_a_time, DEADLINE};
use miniray::{Error, Reactor, SharedMemory, WorkerOptions};
use serde_json::{json, Value};

const LEN: usize = 3 * 4096;

/// The last OS error number, or 0 if `ok`.
fn errno_unless(ok: bool) -> i32 {
    if ok {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// Tries every way to write `region`'s bytes from this process and says
/// what came of each: an errno (0 if the write went through) or whether the
/// API handed out something writable.
fn write_attempts(region: &SharedMemory) -> Value {
    let fd = region.as_raw_fd();
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    // SAFETY: a one-byte buffer we own, written at offset 0 of our descriptor.
    let pwrite = errno_unless(unsafe { libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) } == 1);
    // SAFETY: a new mapping of our descriptor; unmapped at once if made.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    let shared_writable_map = errno_unless(map != libc::MAP_FAILED);
    if map != libc::MAP_FAILED {
        // SAFETY: the mapping just made, of LEN bytes.
        unsafe { libc::munmap(map, LEN) };
    }
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain integers on our descriptor.
    let punch_hole = errno_unless(unsafe { libc::fallocate(fd, punch, 0, 4096) } == 0);
    // SAFETY: plain integers on our descriptor.
    let truncate = errno_unless(unsafe { libc::ftruncate(fd, 0) } == 0);
    // The kernel writing into our mapping (read(2) from a pipe) is refused
    // as a user write would be: the pages are not writable.
    let mut pipe = [0; 2];
    // SAFETY: a two-int array for the pipe's ends, closed below.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: three bytes of ours into the pipe.
    assert_eq!(
        unsafe { libc::write(pipe[1], b"abc".as_ptr().cast(), 3) },
        3
    );
    let target = region.as_slice().as_ptr() as *mut libc::c_void;
    // SAFETY: the kernel checks the destination pages; on a read-only
    // mapping it writes nothing and fails with EFAULT (what this asserts).
    let kernel_write = errno_unless(unsafe { libc::read(pipe[0], target, 3) } == 3);
    // SAFETY: our pipe's ends.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    let mut clone = region.try_clone().expect("clone");
    let dup: OwnedFd = std::fs::File::open(format!("/proc/self/fd/{fd}"))
        .expect("reopen")
        .into();
    let reopened_writable = match SharedMemory::from_fd(dup, region.id(), true) {
        Err(Error::Region { reason }) => reason.to_string(),
        other => format!("unexpected: {other:?}"),
    };
    json!({
        "write_sealed": seals & libc::F_SEAL_WRITE != 0,
        "seals_sealed": seals & libc::F_SEAL_SEAL != 0,
        "is_sealed_read_only": region.is_sealed_read_only().expect("seals"),
        "writable": region.is_writable(),
        "pwrite": pwrite,
        "shared_writable_map": shared_writable_map,
        "punch_hole": punch_hole,
        "truncate": truncate,
        "kernel_write": kernel_write,
        "clone_writable": clone.is_writable() || clone.as_mut_slice().is_some(),
        "view_mut": clone.view_mut::<u8>().map_err(|e| e.to_string()).err(),
        "reopened_writable": reopened_writable,
    })
}

/// What [`write_attempts`] must report for a region sealed read-only.
fn all_refused() -> Value {
    json!({
        "write_sealed": true,
        "seals_sealed": true,
        "is_sealed_read_only": true,
        "writable": false,
        "pwrite": libc::EPERM,
        "shared_writable_map": libc::EPERM,
        "punch_hole": libc::EPERM,
        "truncate": libc::EPERM,
        "kernel_write": libc::EFAULT,
        "clone_writable": false,
        "view_mut": "shared memory region: region is mapped read-only",
        "reopened_writable": "region is sealed against writes",
    })
}

/// A region of `LEN` bytes filled with a pattern, then sealed read-only.
fn sealed_region(name: &str) -> SharedMemory {
    let mut region = SharedMemory::create(name, LEN).expect("create");
    for (i, b) in region.as_mut_slice().expect("rw").iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    assert!(!region.is_sealed_read_only().expect("seals"));
    region.seal_read_only().expect("seal");
    region
}

fn has_pattern(region: &SharedMemory) -> bool {
    region
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8)
}

#[test]
fn the_creator_cannot_write_a_region_it_sealed() {
    let _one = one_at_a_time();
    let mut region = sealed_region("sealed-creator");
    assert_eq!(write_attempts(&region), all_refused());
    assert!(region.as_mut_slice().is_none());
    assert!(has_pattern(&region), "the bytes are unchanged");
    // Sealing again does nothing.
    region.seal_read_only().expect("again");
    assert!(has_pattern(&region));
}

#[test]
fn a_worker_that_inherits_a_sealed_region_cannot_write_it() {
    let _one = one_at_a_time();
    let region = sealed_region("sealed-inherited");
    let mut r = Reactor::new().expect("reactor");
    let shared = &region;
    let w = r
        .spawn_channel(&WorkerOptions::new().region(shared), |ch| {
            while let Some(()) = ch.recv::<()>()? {
                ch.send(&write_attempts(shared))?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send(w, &()).expect("send");
    let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
    assert_eq!(report, all_refused());
    assert!(has_pattern(&region), "the bytes are unchanged");
}

#[test]
fn a_worker_sent_a_sealed_region_maps_it_read_only_and_cannot_write_it() {
    let _one = one_at_a_time();
    let region = sealed_region("sealed-sent");
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            while let Some(((), regions)) = ch.recv_regions::<()>()? {
                let reports: Vec<Value> = regions.iter().map(write_attempts).collect();
                ch.send(&json!({"reports": reports, "pattern": has_pattern(&regions[0])}))?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send_regions(w, &(), &[&region]).expect("send");
    let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
    assert_eq!(
        report,
        json!({"reports": [all_refused()], "pattern": true}),
        "{report}"
    );
    assert!(has_pattern(&region));
}

#[test]
fn sealing_waits_for_every_writable_mapping_to_go() {
    let _one = one_at_a_time();
    let mut region = SharedMemory::create("sealed-busy", LEN).expect("create");
    // A writable clone in this process.
    let clone = region.try_clone().expect("clone");
    match region.seal_read_only() {
        Err(Error::Region { reason }) => assert!(reason.contains("writable mapping"), "{reason}"),
        other => panic!("sealing with a writable clone: {other:?}"),
    }
    // Nothing changed: still writable, still unsealed.
    assert!(region.is_writable());
    region.as_mut_slice().expect("rw")[0] = 1;
    assert!(!region.is_sealed_read_only().expect("seals"));
    drop(clone);

    // A worker that inherited the writable mapping holds it until it exits.
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new().region(&region), |ch| {
            while ch.recv::<()>()?.is_some() {
                ch.send(&())?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send(w, &()).expect("send");
    r.recv::<()>(w, Some(DEADLINE)).expect("alive");
    assert!(matches!(region.seal_read_only(), Err(Error::Region { .. })));
    r.close(w).expect("close");
    assert!(matches!(
        r.recv::<()>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
    region.seal_read_only().expect("no writable mapping left");
    assert!(region.is_sealed_read_only().expect("seals"));
    assert_eq!(region.as_slice()[0], 1, "what was written stays");
}

#[test]
fn a_region_whose_seals_a_peer_sealed_is_refused_with_a_typed_error() {
    let _one = one_at_a_time();
    let mut region = SharedMemory::create("sealed-seals", LEN).expect("create");
    // SAFETY: F_ADD_SEALS on our own descriptor.
    assert_eq!(
        unsafe { libc::fcntl(region.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SEAL) },
        0
    );
    match region.seal_read_only() {
        Err(Error::Region { reason }) => assert!(reason.contains("F_SEAL_SEAL"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(region.is_writable());
}
