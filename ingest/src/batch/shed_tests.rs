//! A lane whose sink is down sheds: it takes no rows and never makes reading wait;
//! when its partitions are read again, the other lanes skip what they had.

use super::RouteBatch;
use super::tests::{push, route};
use crate::protocol::Partition;

fn offsets(batch: &ingest_sink_api::SinkBatch, partition: i32) -> Vec<i64> {
    batch
        .coordinates
        .iter()
        .flatten()
        .filter(|p| p.partition == partition)
        .map(|p| p.offset)
        .collect()
}

/// What the decoder holds goes to the lanes, as a flush does.
fn hand_over(route: &mut RouteBatch) {
    let decoded = route.take_decoded();
    route.distribute(&decoded);
}

#[test]
fn a_shed_lane_takes_no_rows_and_never_makes_reading_wait() {
    let mut route = route();
    push(&mut route, 0, 0..5);
    hand_over(&mut route);
    route.lanes[0].shed();
    assert!(!route.lanes[0].has_open(), "its open rows are dropped");
    // Far past the fast lane's 10 rows: only the slow lane's limit counts now.
    push(&mut route, 0, 5..50);
    push(&mut route, 1, 0..3);
    assert!(!route.full());
    hand_over(&mut route);
    assert!(!route.lanes[0].has_open());
    assert_eq!(
        route.lanes[1].take().num_rows(),
        53,
        "the slow lane took every row"
    );
    let mut shed = route.lanes[0].book.unshed();
    shed.sort();
    assert_eq!(shed, [Partition::new("t", 0), Partition::new("t", 1)]);
}

#[test]
fn a_partition_read_again_is_skipped_by_the_lanes_that_had_it() {
    let mut route = route();
    push(&mut route, 0, 0..30);
    hand_over(&mut route);
    // The fast lane's sink holds 0..10; it shed the rest and is back.
    route.lanes[0].take();
    route.lanes[0].shed();
    route.lanes[0].book.unshed();
    route.lanes[0].book.skip_below("t", 0, 10);
    assert_eq!(route.lanes[1].book.skip_replay("t", 0), Some(30));
    push(&mut route, 0, 10..35);
    hand_over(&mut route);
    let fast = route.lanes[0].take();
    assert_eq!(offsets(&fast, 0), (10..35).collect::<Vec<_>>());
    let slow = route.lanes[1].take();
    assert_eq!(offsets(&slow, 0), (0..35).collect::<Vec<_>>(), "each once");
    assert_eq!(slow.positions.get("t", 0), Some(35));
}

#[test]
fn a_chunk_of_only_skipped_rows_leaves_no_position_behind() {
    let mut route = route();
    push(&mut route, 0, 0..20);
    hand_over(&mut route);
    let slow = route.lanes[1].take();
    assert_eq!(slow.num_rows(), 20);
    route.lanes[1].book.skip_replay("t", 0);
    push(&mut route, 0, 5..15);
    hand_over(&mut route);
    assert!(!route.lanes[1].has_open(), "nothing new for the slow lane");
    assert!(route.lanes[1].take().positions.is_empty());
}

#[test]
fn a_revoked_partition_is_not_skipped_when_it_comes_back() {
    let mut route = route();
    push(&mut route, 0, 0..20);
    hand_over(&mut route);
    route.revoke(&[Partition::new("t", 0)]);
    // Assigned again, it starts where the sinks stand (here: 0) for every lane.
    assert_eq!(route.lanes[1].book.skip_replay("t", 0), None);
    push(&mut route, 0, 0..20);
    hand_over(&mut route);
    assert_eq!(route.lanes[1].take().num_rows(), 20);
}

#[test]
fn a_lane_needs_nothing_below_what_its_sink_holds_or_was_handed() {
    // Reading resumes at 1000 for another lane; lane 1's sink holds up to 8000 (it
    // wrote them in an earlier life): records 1000..8000 Kafka deleted are no gap
    // for it. Lane 0 was handed up to 20 and holds nothing: it needs from 1000.
    let mut route = route();
    push(&mut route, 0, 0..20);
    hand_over(&mut route);
    let mut held = ingest_sink_api::OffsetMap::default();
    held.advance("t", 0, 8000);
    route.lanes[1].book.learn_positions(&held);
    assert_eq!(route.lanes[1].book.first_needed("t", 0, 1000), 8000);
    assert_eq!(route.lanes[0].book.first_needed("t", 0, 1000), 1000);
    route.lanes[0].book.skip_replay("t", 0);
    assert_eq!(route.lanes[0].book.first_needed("t", 0, 5), 20);
}
