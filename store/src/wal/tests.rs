use std::sync::mpsc;

use super::*;

fn pos(term: u64, index: u64) -> LogPos {
    LogPos {
        term,
        node: 1,
        index,
    }
}

fn payload(term: u64, index: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{term}/{index}:").into_bytes();
    p.resize(size.max(p.len()), b'x');
    p
}

/// Small segments and cache, so a few hundred entries cross many segments and most reads go
/// to the files.
fn small() -> Config {
    Config {
        segment_size: 4096,
        cache_bytes: 1024,
    }
}

/// Appends one entry and waits until it is durable.
fn append(wal: &Wal, term: u64, index: u64, size: usize) {
    let (tx, rx) = mpsc::channel();
    wal.append(
        vec![(pos(term, index), payload(term, index, size))],
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    )
    .unwrap();
    rx.recv().unwrap().unwrap();
}

/// Appends entries `indexes` of `term`, each durable before the next.
fn fill(wal: &Wal, term: u64, indexes: std::ops::Range<u64>, size: usize) {
    for i in indexes {
        append(wal, term, i, size);
    }
}

/// (term, index) of every entry, and checks each payload is the one written.
fn contents(wal: &Wal) -> Vec<(u64, u64)> {
    wal.read(0, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(p, bytes)| {
            let head = format!("{}/{}:", p.term, p.index);
            assert!(bytes.starts_with(head.as_bytes()), "payload of {p:?}");
            (p.term, p.index)
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

#[test]
fn entries_read_back_from_cache_and_files_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let want: Vec<(u64, u64)> = (0..300).map(|i| (1, i)).collect();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        for i in 0..300 {
            append(&wal, 1, i, 10 + (i as usize % 50));
        }
        assert_eq!(contents(&wal), want);
        assert!(
            wal.lock().cache_bytes <= 1024 + 100,
            "the cache stays within its budget"
        );
        assert_eq!(wal.read(10, 13).unwrap().len(), 3);
    }
    assert!(segments(dir.path()).len() > 5, "small segments roll over");
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(contents(&wal), want);
    assert_eq!(wal.log_state().last, Some(pos(1, 299)));
}

#[test]
fn a_new_wal_preallocates_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    append(&wal, 1, 0, 100);
    let len = std::fs::metadata(segment::path(dir.path(), 0))
        .unwrap()
        .len();
    assert_eq!(len, SEGMENT_SIZE, "the file never grows as records go in");
}

#[test]
fn votes_commits_truncations_and_purges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = VoteRec {
        term: 4,
        node: 2,
        committed: true,
    };
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..100, 40);
        wal.truncate(60, None).unwrap();
        fill(&wal, 2, 60..80, 40);
        wal.save_vote(vote, None).unwrap();
        wal.commit(pos(2, 70)).unwrap();
        wal.purge(pos(1, 30), None).unwrap();
        wal.flush_blocking().unwrap();
    }
    let wal = Wal::open(dir.path(), small()).unwrap();
    let state = wal.log_state();
    assert_eq!(state.vote, Some(vote));
    assert_eq!(state.committed, Some(pos(2, 70)));
    assert_eq!(state.purged, Some(pos(1, 30)));
    assert_eq!(state.last, Some(pos(2, 79)));
    let want: Vec<(u64, u64)> = (31..60)
        .map(|i| (1, i))
        .chain((60..80).map(|i| (2, i)))
        .collect();
    assert_eq!(contents(&wal), want);
}

#[test]
fn purging_deletes_whole_segments_and_the_rest_recovers_from_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..200, 60);
        // Truncate back into an older segment after several rollovers (a new leader
        // overwriting uncommitted entries), append over it, then purge past all of it.
        wal.truncate(150, None).unwrap();
        fill(&wal, 2, 150..260, 60);
        wal.purge(pos(2, 220), None).unwrap();
        wal.flush_blocking().unwrap();
        assert!(wal.read(0, 221).unwrap().is_empty());
    }
    assert!(
        !segments(dir.path()).contains(&0),
        "segments holding only purged entries are gone"
    );
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state().purged, Some(pos(2, 220)));
    assert_eq!(
        contents(&wal),
        (221..260).map(|i| (2, i)).collect::<Vec<_>>()
    );
    // And appending continues the log.
    append(&wal, 3, 260, 10);
    assert_eq!(wal.log_state().last, Some(pos(3, 260)));
}

#[test]
fn a_purge_past_the_end_empties_the_log_and_appends_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..10, 10);
        // A snapshot installed from the leader covers more than this log has.
        wal.purge(pos(3, 500), None).unwrap();
        append(&wal, 3, 501, 10);
    }
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state().purged, Some(pos(3, 500)));
    assert_eq!(contents(&wal), vec![(3, 501)]);
}

#[test]
fn appends_that_do_not_continue_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append(&wal, 1, 0, 10);
    let gap = wal.append(vec![(pos(1, 5), b"x".to_vec())], None);
    assert!(matches!(gap, Err(WalError::Invalid(_))), "{gap:?}");
    let below = wal.truncate(0, None);
    assert!(below.is_ok(), "truncating everything kept is allowed");
    wal.purge(pos(1, 3), None).unwrap();
    assert!(matches!(wal.truncate(2, None), Err(WalError::Invalid(_))));
}

/// The end of the valid records in the last segment.
fn valid_end(wal: &Wal) -> (u64, u64) {
    let st = wal.lock();
    (st.seq, st.off)
}

#[test]
fn a_torn_last_write_is_dropped_and_zeroed_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (seq, end) = {
        let wal = Wal::open(dir.path(), Config::default()).unwrap();
        fill(&wal, 1, 0..20, 30);
        valid_end(&wal)
    };
    let path = segment::path(dir.path(), seq);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // What a crash in the middle of the next flush leaves: the start of a record, and further
    // on a page that reached the disk before the ones in between.
    let mut next = Vec::new();
    record::encode(&Record::Entry(pos(1, 20), payload(1, 20, 30)), 0, &mut next);
    f.write_all_at(&next[..next.len() / 2], end).unwrap();
    f.write_all_at(b"a page of a later write", end + 8192)
        .unwrap();
    drop(f);

    {
        let wal = Wal::open(dir.path(), Config::default()).unwrap();
        assert_eq!(wal.log_state().last, Some(pos(1, 19)));
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes[end as usize..].iter().all(|b| *b == 0),
            "everything after the valid records is zero again"
        );
        append(&wal, 2, 20, 30);
    }
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    let mut want: Vec<(u64, u64)> = (0..20).map(|i| (1, i)).collect();
    want.push((2, 20));
    assert_eq!(contents(&wal), want);
}

#[test]
fn a_segment_started_but_never_written_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..5, 10);
    }
    let last = *segments(dir.path()).last().unwrap();
    // The flush thread had created the next segment (zeros) when the member stopped.
    segment::create(dir.path(), last + 1, 4096).unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(segments(dir.path()).last(), Some(&last));
    assert_eq!(contents(&wal).len(), 5);
    append(&wal, 1, 5, 10);
}

#[test]
fn damage_before_the_last_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..100, 60);
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 2);
    let path = segment::path(dir.path(), segs[1]);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"rot", 200).unwrap();
    drop(f);
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a corrupt segment, got {:?}", other.map(|_| ())),
    }

    // A missing segment in the middle is refused too.
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        fill(&wal, 1, 0..100, 60);
    }
    assert!(segments(dir.path()).len() > 2);
    std::fs::remove_file(segment::path(dir.path(), 1)).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(WalError::Invalid(e)) => assert!(e.contains("segment 1 is missing"), "{e}"),
        other => panic!("expected a missing segment, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn an_entry_larger_than_a_segment_gets_one_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        append(&wal, 1, 0, 100);
        append(&wal, 1, 1, 10_000);
        append(&wal, 1, 2, 100);
    }
    let wal = Wal::open(dir.path(), small()).unwrap();
    let read = wal.read(0, 3).unwrap();
    assert_eq!(read[1].1.len(), 10_000);
    assert_eq!(contents(&wal), vec![(1, 0), (1, 1), (1, 2)]);
}

#[test]
fn many_appends_in_flight_are_all_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), small()).unwrap());
    let (tx, rx) = mpsc::channel();
    for i in 0..500u64 {
        let tx = tx.clone();
        wal.append(
            vec![(pos(1, i), payload(1, i, 20))],
            Some(Box::new(move |r| {
                let _ = tx.send((i, r.is_ok()));
            })),
        )
        .unwrap();
    }
    drop(tx);
    let heard: Vec<(u64, bool)> = rx.iter().collect();
    assert_eq!(heard, (0..500).map(|i| (i, true)).collect::<Vec<_>>());
}

#[test]
fn a_truncation_into_a_deleted_segment_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (b, next) = {
        let wal = Wal::open(dir.path(), small()).unwrap();
        // Append until a new segment has just started; `b` is the last entry of the one before.
        let mut i = 0;
        while wal.lock().seq < 2 {
            append(&wal, 1, i, 60);
            i += 1;
        }
        let b = i - 2;
        // A new leader overwrites the tail of the previous segment, from the new segment.
        wal.truncate(b - 5, None).unwrap();
        for j in b - 5..b + 20 {
            append(&wal, 2, j, 60);
        }
        // Then a snapshot covers everything the previous segment held.
        wal.purge(pos(2, b + 2), None).unwrap();
        wal.flush_blocking().unwrap();
        (b, b + 20)
    };
    assert_eq!(
        segments(dir.path()).first(),
        Some(&2),
        "segments 0 and 1 are purged"
    );
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.log_state().purged, Some(pos(2, b + 2)));
    assert_eq!(
        contents(&wal),
        (b + 3..next).map(|i| (2, i)).collect::<Vec<_>>()
    );
}

#[test]
fn the_tail_within_a_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.tail_start(100), 0, "an empty log");
    fill(&wal, 1, 0..10, 100);
    assert_eq!(wal.tail_start(1000), 0, "everything fits");
    assert_eq!(wal.tail_start(350), 7);
    assert_eq!(wal.tail_start(99), 10, "not even the last one fits");
    wal.purge(pos(1, 4), None).unwrap();
    assert_eq!(wal.tail_start(10_000), 5);
}
