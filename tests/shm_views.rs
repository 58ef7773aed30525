//! Typed views of regions (`view`, `view_mut`, `from_slice`): plain-old-data
//! types over the mapped bytes, length and alignment checked with a typed
//! error, the same values in a worker that receives the region.

mod common;

use common::DEADLINE;
use miniray::{Error, Reactor, SharedMemory, WorkerOptions};

fn region_reason<T: std::fmt::Debug>(r: miniray::Result<T>) -> &'static str {
    match r {
        Err(Error::Region { reason }) => reason,
        other => panic!("expected a region error, got {other:?}"),
    }
}

#[test]
fn a_region_made_from_a_slice_views_as_that_slice() {
    let _one = common::one_at_a_time();
    let data: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.5).collect();
    let mut region = SharedMemory::from_slice("views-f64", &data).expect("from_slice");
    assert_eq!(region.len(), 8000);
    assert_eq!(region.view::<f64>().expect("f64"), &data[..]);
    // Any plain-old-data type of a size that divides the length.
    assert_eq!(region.view::<[f64; 4]>().expect("rows").len(), 250);
    assert_eq!(region.view::<u64>().expect("u64")[2], 1.0f64.to_bits());
    region.view_mut::<f64>().expect("rw")[999] = -1.0;
    assert_eq!(region.view::<f64>().expect("f64")[999], -1.0);
    assert_eq!(&region.as_slice()[7992..], &(-1.0f64).to_ne_bytes());
}

#[test]
fn a_length_that_does_not_divide_or_a_zero_size_type_is_a_typed_error() {
    let _one = common::one_at_a_time();
    let mut region = SharedMemory::create("views-odd", 6).expect("create");
    assert_eq!(
        region_reason(region.view::<f32>()),
        "region length is not a multiple of the element size"
    );
    assert_eq!(
        region_reason(region.view_mut::<u32>()),
        "region length is not a multiple of the element size"
    );
    assert_eq!(region.view::<u16>().expect("u16").len(), 3);
    assert_eq!(
        region_reason(region.view::<()>()),
        "element type has size zero"
    );
    // Nothing to copy: no region of zero bytes.
    assert!(SharedMemory::from_slice::<u32>("views-empty", &[]).is_err());
    // A read-only mapping has no writable view.
    region.seal_read_only().expect("seal");
    assert_eq!(
        region_reason(region.view_mut::<u16>()),
        "region is mapped read-only"
    );
    assert_eq!(region.view::<u16>().expect("u16").len(), 3);
}

#[test]
fn a_worker_sees_the_same_values_through_its_own_view() {
    let _one = common::one_at_a_time();
    let data: Vec<f32> = (0..(1 << 16)).map(|i| i as f32).collect();
    let mut region = SharedMemory::from_slice("views-sent", &data).expect("from_slice");
    region.seal_read_only().expect("seal");
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            while let Some(((start, end), regions)) = ch.recv_regions::<(usize, usize)>()? {
                let floats = regions[0].view::<f32>()?;
                let sum: f64 = floats[start..end].iter().map(|&x| f64::from(x)).sum();
                ch.send(&sum)?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send_regions(w, &(10usize, 20usize), &[&region])
        .expect("send");
    let sum = r.recv::<f64>(w, Some(DEADLINE)).expect("sum");
    assert_eq!(sum, (10..20).map(f64::from).sum::<f64>());
}
