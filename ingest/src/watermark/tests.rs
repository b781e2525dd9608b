use std::sync::Arc;

use ingest_sink_api::OffsetMap;

use super::{ChunkTimes, LaneTimes, Standing};

fn positions(entries: &[(&str, i32, i64)]) -> OffsetMap {
    let mut map = OffsetMap::default();
    for (t, p, o) in entries {
        map.advance(t, *p, *o);
    }
    map
}

fn times(entries: &[(&str, i32, &[i64])]) -> ChunkTimes {
    let mut times = ChunkTimes::default();
    for (t, p, ts) in entries {
        let topic: Arc<str> = Arc::from(*t);
        for at in *ts {
            times.add(&topic, *p, *at);
        }
    }
    times
}

fn standing(topic: &str, partition: i32, log_end: i64, held: Option<i64>) -> Standing<'_> {
    Standing {
        topic,
        partition,
        log: Some((0, log_end)),
        held,
    }
}

#[test]
fn the_watermark_stays_below_the_first_unwritten_record_and_reaches_the_newest_once_written() {
    let mut lane = LaneTimes::default();
    // Partition 0: offsets 0..3 at 100..300 written; 3..5 at 400, 500 handed, not written.
    lane.handed(
        &positions(&[("t", 0, 3)]),
        &times(&[("t", 0, &[100, 200, 300])]),
    );
    lane.handed(&positions(&[("t", 0, 5)]), &times(&[("t", 0, &[400, 500])]));
    lane.durable(&positions(&[("t", 0, 3)]));
    let now = [standing("t", 0, 5, Some(3))];
    assert_eq!(lane.watermark(now, None), Some(400));
    // Once the rest is durable (as a batch about to be written would make it).
    let after = positions(&[("t", 0, 5)]);
    assert_eq!(
        lane.watermark([standing("t", 0, 5, Some(3))], Some(&after)),
        Some(500)
    );
    lane.durable(&after);
    assert_eq!(
        lane.watermark([standing("t", 0, 5, Some(5))], None),
        Some(500)
    );
}

#[test]
fn an_idle_partition_does_not_hold_the_watermark_back_but_an_unread_one_does() {
    let mut lane = LaneTimes::default();
    lane.handed(
        &positions(&[("t", 0, 2), ("t", 1, 1)]),
        &times(&[("t", 0, &[1_000, 2_000]), ("t", 1, &[50])]),
    );
    lane.durable(&positions(&[("t", 0, 2), ("t", 1, 1)]));
    // Partition 1's last record is old, but it is caught up: the newest time counts.
    let caught_up = [standing("t", 0, 2, Some(2)), standing("t", 1, 1, Some(1))];
    assert_eq!(lane.watermark(caught_up, None), Some(2_000));
    // New records in partition 1 not read yet: it is complete only to its newest held.
    let behind = [standing("t", 0, 2, Some(2)), standing("t", 1, 9, Some(1))];
    assert_eq!(lane.watermark(behind, None), Some(50));
    // A partition nothing is known of (just assigned, not read): unknown.
    let unknown = [standing("t", 0, 2, Some(2)), standing("t", 2, 9, None)];
    assert_eq!(lane.watermark(unknown, None), None);
    // An empty partition the sink holds nothing of is caught up at once (a test run
    // end to end found it unknown for good: its sink has no position for it).
    let empty = [standing("t", 0, 2, Some(2)), standing("t", 2, 0, None)];
    assert_eq!(lane.watermark(empty, None), Some(2_000));
    // As is one whose records were all deleted before the sink held any.
    let emptied = Standing {
        log: Some((7, 7)),
        ..standing("t", 3, 7, None)
    };
    assert_eq!(
        lane.watermark([standing("t", 0, 2, Some(2)), emptied], None),
        Some(2_000)
    );
}

#[test]
fn pieces_handed_again_after_a_reread_and_revoked_partitions_are_handled() {
    let mut lane = LaneTimes::default();
    lane.handed(&positions(&[("t", 0, 4)]), &times(&[("t", 0, &[10, 40])]));
    lane.handed(&positions(&[("t", 0, 8)]), &times(&[("t", 0, &[50, 80])]));
    // Read again from 0 (the lane shed, say): the same pieces come back.
    lane.handed(&positions(&[("t", 0, 4)]), &times(&[("t", 0, &[10, 40])]));
    let now = [standing("t", 0, 8, Some(0))];
    assert_eq!(lane.watermark(now, None), Some(10));
    lane.durable(&positions(&[("t", 0, 4)]));
    assert_eq!(
        lane.watermark([standing("t", 0, 8, Some(4))], None),
        Some(50)
    );
    // Revoked: it drops out; what is left is the other partition's.
    lane.handed(&positions(&[("t", 1, 1)]), &times(&[("t", 1, &[70])]));
    lane.durable(&positions(&[("t", 1, 1)]));
    lane.revoke(&|_: &str, p: i32| p == 0);
    assert_eq!(
        lane.watermark([standing("t", 1, 1, Some(1))], None),
        Some(70)
    );
}

#[test]
fn records_out_of_order_within_a_piece_count_by_their_earliest_time() {
    let mut lane = LaneTimes::default();
    lane.handed(
        &positions(&[("t", 0, 3)]),
        &times(&[("t", 0, &[300, 100, 200])]),
    );
    assert_eq!(lane.watermark([standing("t", 0, 3, None)], None), Some(100));
}

#[test]
fn many_pieces_are_merged_conservatively() {
    let mut lane = LaneTimes::default();
    for i in 0..(super::MAX_PIECES as i64 + 10) {
        lane.handed(
            &positions(&[("t", 0, i + 1)]),
            &times(&[("t", 0, &[1_000 + i])]),
        );
    }
    assert_eq!(
        lane.partitions.values().next().unwrap().pending.len(),
        super::MAX_PIECES
    );
    let now = [standing("t", 0, 2_000, Some(0))];
    assert_eq!(lane.watermark(now, None), Some(1_000));
    lane.durable(&positions(&[("t", 0, 5)]));
    // The first pieces were merged into the sixth-to-eleventh: still held back, never ahead.
    let w = lane
        .watermark([standing("t", 0, 2_000, Some(5))], None)
        .unwrap();
    assert!((1_000..=1_005).contains(&w), "{w}");
}
