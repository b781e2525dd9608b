use super::*;

fn map(entries: &[(i32, i64)]) -> OffsetMap {
    let mut m = OffsetMap::default();
    for (p, o) in entries {
        m.advance("t", *p, *o);
    }
    m
}

fn parts(ps: &[i32]) -> Vec<Partition> {
    ps.iter().map(|p| Partition::new("t", *p)).collect()
}

/// One route with two sinks, owning partitions 0 and 1.
fn two_sinks() -> Offsets {
    let mut o = Offsets::new([2]);
    o.assign(&parts(&[0, 1]));
    o
}

#[test]
fn commits_the_minimum_over_the_sinks_once_every_sink_wrote() {
    let mut o = two_sinks();
    let first = o.written(0, 0, &map(&[(0, 10), (1, 5)]), &[], &[]);
    assert_eq!(first.counted, map(&[(0, 10), (1, 5)]));
    assert!(first.commit.is_empty(), "the other sink wrote nothing yet");
    let second = o.written(0, 1, &map(&[(0, 7)]), &[], &[]);
    assert_eq!(second.commit, map(&[(0, 7)]));
    let third = o.written(0, 1, &map(&[(0, 12), (1, 5)]), &[], &[]);
    assert_eq!(third.commit, map(&[(0, 10), (1, 5)]));
    assert_eq!(o.final_commit(), map(&[(0, 10), (1, 5)]));
}

#[test]
fn a_group_offset_never_moves_backwards() {
    let mut o = Offsets::new([1]);
    o.assign(&parts(&[0]));
    o.written(0, 0, &map(&[(0, 10)]), &[], &[]);
    // A rewound partition's lane progress is forgotten, then a replay reaches 8 only.
    assert_eq!(o.rewind(&parts(&[0])), parts(&[0]));
    let replay = o.written(0, 0, &map(&[(0, 8)]), &[], &[]);
    assert_eq!(replay.commit, map(&[(0, 10)]));
}

#[test]
fn revoked_since_the_batch_started_or_left_to_another_writer_does_not_count() {
    let mut o = two_sinks();
    let out = o.written(0, 0, &map(&[(0, 10), (1, 10)]), &parts(&[0]), &parts(&[1]));
    assert!(out.counted.is_empty());
    o.written(0, 1, &map(&[(0, 10), (1, 10)]), &[], &[]);
    assert!(o.committable(0, &map(&[(0, 0), (1, 0)])).is_empty());
}

#[test]
fn a_revoked_partition_is_forgotten_and_never_committed_again() {
    let mut o = two_sinks();
    o.written(0, 0, &map(&[(0, 10)]), &[], &[]);
    o.written(0, 1, &map(&[(0, 10)]), &[], &[]);
    o.revoke(&parts(&[0]));
    assert!(o.final_commit().is_empty());
    // A write that finishes after the revocation (the partition is not owned) counts
    // for nothing, also once the partition is assigned again.
    let late = o.written(0, 0, &map(&[(0, 20)]), &[], &[]);
    assert!(late.counted.is_empty() && late.commit.is_empty());
    o.assign(&parts(&[0]));
    let fresh = o.written(0, 0, &map(&[(0, 30)]), &[], &[]);
    assert!(
        fresh.commit.is_empty(),
        "sink 1 has not written since the assignment"
    );
}

#[test]
fn rewinds_only_partitions_still_owned() {
    let mut o = two_sinks();
    assert_eq!(o.rewind(&parts(&[1, 2])), parts(&[1]));
}

#[test]
fn starts_at_the_minimum_of_the_sinks_or_the_group_offset() {
    let known = [map(&[(0, 10), (1, 3)]), map(&[(0, 7)])];
    assert_eq!(start_offset(&known, "t", 0), Some(7));
    assert_eq!(start_offset(&known, "t", 1), None);
    assert_eq!(start_offset(&[], "t", 0), None);
}

#[test]
fn a_batch_loses_only_partitions_revoked_after_it_started() {
    let mut r = Revocations::default();
    r.revoke(&parts(&[0]));
    let started = r.epoch();
    assert!(r.revoked_since(started, &map(&[(0, 1), (1, 1)])).is_empty());
    r.revoke(&parts(&[1]));
    assert_eq!(
        r.revoked_since(started, &map(&[(0, 1), (1, 1)])),
        parts(&[1])
    );
}
