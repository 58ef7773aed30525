//! Replays the committed fuzz corpus (fuzz/corpus/TARGET/*) through the same
//! checks the fuzz targets run, so every input that ever mattered is
//! checked by `cargo test` too.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        check(&data);
        n += 1;
    }
    n
}

#[test]
fn replay_lines_corpus() {
    assert!(replay("lines", checks::lines) > 0);
}

#[test]
fn replay_marshal_corpus() {
    assert!(replay("marshal", checks::marshal) > 0);
}

#[test]
fn replay_json_line_corpus() {
    assert!(replay("json_line", checks::json_line) > 0);
}

#[test]
fn replay_frame_corpus() {
    assert!(replay("frame", checks::frame) > 0);
}

#[test]
fn replay_frames_corpus() {
    assert!(replay("frames", checks::frames) > 0);
}

#[test]
fn replay_marshal_corpus_typed() {
    assert!(replay("marshal", checks::marshal_typed) > 0);
    // The corpus holds a typed message Python wrote, so the round trip of
    // a decoded `Typed` is exercised, not only the refusals.
    let typed = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/marshal/py-x-16"),
    )
    .expect("typed seed");
    miniray::marshal::from_slice::<checks::Typed>(&typed).expect("the typed seed decodes");
}
