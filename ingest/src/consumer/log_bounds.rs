//! Each sink's position in a partition checked against the partition's log bounds: its
//! log start (the first offset Kafka still keeps, the low watermark) and its log end
//! (the offset after the last record, the high watermark).
//!
//! - A position **past the log end** means the log it was taken on is gone: the topic
//!   was deleted and recreated (its offsets start at 0 again) or an unclean leader
//!   election truncated it. The sinks cannot tell: every new record sits below their
//!   positions and would be skipped as "already written" (the ClickHouse ledger is a
//!   max-aggregate, Iceberg merges its position maps; neither can move back). Such a
//!   partition is refused and the service stops (fail closed); the operator decides
//!   what the new log means (docs/exactly-once.md, "A topic deleted and recreated").
//! - A position **below the log start** means Kafka deleted records that sink still
//!   needs (retention overtook a sink that was down): they are gone for it. That is
//!   reported loudly and the route's `on_lost_records` policy decides (docs/exactly-once.md,
//!   "Records Kafka deleted").
//!
//! Facts only: the bounds are read from the broker (or from what librdkafka's last fetch
//! response said), never from librdkafka's log lines, whose level the user controls.

use std::fmt;
use std::time::Duration;

use crate::protocol::Partition;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, StreamConsumer};

/// Where the recovery steps for a replaced log are written down, named in every refusal.
pub const RECOVERY_DOC: &str = "docs/exactly-once.md, section \"A topic deleted and recreated\"";

/// Where the policy for deleted records and its recovery are written down.
pub const LOST_DOC: &str = "docs/exactly-once.md, section \"Records Kafka deleted\"";

/// Bounds one watermark request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed read of the bounds is tried this many times before the partition is refused
/// (a broker answers `OFFSET_NOT_AVAILABLE` while a new leader's high watermark catches
/// up, KIP-207). A read that succeeds is believed at once: a log end below a position is
/// never "waited out" (a quick producer refills a recreated topic within seconds).
const ATTEMPTS: u32 = 3;
const BETWEEN_ATTEMPTS: Duration = Duration::from_secs(2);

/// A partition's log start and log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start: i64,
    pub end: i64,
}

/// A partition's bounds, or why they could not be read.
pub type ReadBounds = Result<Bounds, String>;

/// Reads a partition's bounds from the broker.
pub trait LogBounds {
    fn bounds(&self, topic: &str, partition: i32) -> ReadBounds;
}

impl<C: ConsumerContext> LogBounds for BaseConsumer<C> {
    fn bounds(&self, topic: &str, partition: i32) -> ReadBounds {
        self.fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map(|(start, end)| Bounds { start, end })
            .map_err(|e| e.to_string())
    }
}

impl<C: ConsumerContext + 'static> LogBounds for StreamConsumer<C> {
    fn bounds(&self, topic: &str, partition: i32) -> ReadBounds {
        self.fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map(|(start, end)| Bounds { start, end })
            .map_err(|e| e.to_string())
    }
}

/// The bounds librdkafka's last fetch response for the partition carried (Fetch v5+
/// sends the log start with every response), without asking the broker; `None` before
/// the first fetch. rust-rdkafka 0.39 wraps only the network call (`fetch_watermarks`),
/// so the cached one is called through rdkafka-sys.
pub fn cached_bounds<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<Bounds> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut start, mut end) = (-1i64, -1i64);
    // SAFETY: the client pointer lives as long as `consumer`; librdkafka only reads the
    // topic name and writes the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut start,
            &mut end,
        )
    };
    let known = err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    (known && start >= 0 && end >= 0).then_some(Bounds { start, end })
}

/// What each sink of a partition's route has made durable there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPositions {
    pub topic: String,
    pub partition: i32,
    /// (sink name, the offset after the last record it holds)
    pub positions: Vec<(String, i64)>,
}

/// Why a partition is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A sink's position lies past this log end.
    PastLogEnd(i64),
    /// The bounds could not be read.
    Unreadable(String),
    /// Not every sink of the route said where it stands, so nothing could be checked.
    SinksSilent(String),
    /// A record came from below the offset the consumer stood at, without a seek of
    /// ours: librdkafka moved the position back (an out-of-range reset to the start of
    /// a new log, or a truncation found through the leader epoch).
    MovedBack {
        expected: i64,
        got: i64,
        /// The partition's log end now, when it could be read (for the operator).
        log_end: Option<i64>,
    },
}

/// A partition the service refuses to consume, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub topic: String,
    pub partition: i32,
    pub positions: Vec<(String, i64)>,
    pub why: Why,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let positions = self
            .positions
            .iter()
            .map(|(sink, offset)| format!("{sink} at {offset}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (topic, partition) = (&self.topic, self.partition);
        write!(f, "topic `{topic}` partition {partition}: ")?;
        match &self.why {
            Why::PastLogEnd(end) => write!(
                f,
                "the sinks' positions ({positions}) lie past the partition's log end {end}: the \
                 log they were taken on is gone (the topic was deleted and recreated, or an \
                 unclean leader election truncated it), and the sinks would skip every new \
                 record below their positions; refusing to consume the partition. Recovery: \
                 {RECOVERY_DOC}"
            ),
            Why::Unreadable(why) => write!(
                f,
                "cannot read the partition's log bounds to check the sinks' positions \
                 ({positions}) against them ({why}); refusing to consume the partition rather \
                 than risk skipping records. See {RECOVERY_DOC}"
            ),
            Why::SinksSilent(why) => write!(
                f,
                "not every sink said where it stands ({why}), so its position cannot be \
                 checked against the log; refusing to consume the partition rather than risk \
                 skipping records (a restart checks again)"
            ),
            Why::MovedBack {
                expected,
                got,
                log_end,
            } => {
                let end = log_end.map_or("unknown".to_string(), |e| e.to_string());
                write!(
                    f,
                    "the consumer stood at offset {expected} and the next record came from \
                     offset {got}: the log under the consumer was replaced or truncated (the \
                     topic was deleted and recreated, or an unclean leader election; log end \
                     {end}), and the sinks ({positions}) would skip the new records below their \
                     positions; refusing to consume the partition. Recovery: {RECOVERY_DOC}"
                )
            }
        }
    }
}

/// Records one sink of a route needs that Kafka no longer keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub topic: String,
    pub partition: i32,
    /// The sink's name (its lane's).
    pub sink: String,
    /// The offset the sink needs next.
    pub position: i64,
    /// The partition's log start: offsets `position..log_start` are gone.
    pub log_start: i64,
}

impl Lost {
    /// How many offsets the gap spans (compacted or transactional logs hold fewer
    /// records than offsets).
    pub fn offsets(&self) -> u64 {
        (self.log_start - self.position).max(0) as u64
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "records lost: topic `{}` partition {}: sink `{}` needs offsets from {} but the \
             partition's log now starts at {}: Kafka deleted offsets {}..{} ({} offsets) before \
             this sink held them (retention or DeleteRecords overtook it). See {LOST_DOC}",
            self.topic,
            self.partition,
            self.sink,
            self.position,
            self.log_start,
            self.position,
            self.log_start,
            self.offsets()
        )
    }
}

/// What a check of sink positions against the log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Partitions to refuse: the service stops before consuming them.
    pub refused: Vec<Refused>,
    /// Gaps in single sinks: the route's `on_lost_records` decides.
    pub lost: Vec<Lost>,
    /// Each partition's log start where some sink lies below it (reading starts there).
    pub starts: Vec<(String, i32, i64)>,
}

/// The error the service stops with (each partition's details are logged as it is
/// refused).
pub fn refusal(refused: &[Refused]) -> anyhow::Error {
    let partitions = refused
        .iter()
        .map(|r| format!("`{}` [{}]", r.topic, r.partition))
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::anyhow!(
        "stopping before consuming partitions whose log no longer matches the sinks' positions \
         (or could not be checked): {partitions}; recovery: {RECOVERY_DOC}"
    )
}

/// Compares every sink position with its partition's bounds. A position equal to the
/// log end is normal (that sink is caught up), one equal to the log start too.
pub fn check(held: &[SinkPositions], bounds: &dyn LogBounds) -> Checked {
    check_with_pause(held, bounds, BETWEEN_ATTEMPTS)
}

fn check_with_pause(held: &[SinkPositions], bounds: &dyn LogBounds, pause: Duration) -> Checked {
    // Nothing to compare without a position: a new sink starts at the group offset.
    let mut pending: Vec<(&SinkPositions, ReadBounds)> = held
        .iter()
        .filter(|p| !p.positions.is_empty())
        .map(|p| (p, Err(String::new())))
        .collect();
    for attempt in 0..ATTEMPTS {
        let unread = pending.iter().any(|(_, b)| b.is_err());
        if attempt > 0 && unread {
            std::thread::sleep(pause);
        }
        for (p, read) in pending.iter_mut().filter(|(_, b)| b.is_err()) {
            *read = bounds.bounds(&p.topic, p.partition);
        }
    }
    let mut checked = Checked::default();
    for (p, read) in pending {
        match read {
            Ok(found) => compare(p, found, &mut checked),
            Err(why) => checked.refused.push(refuse(p, Why::Unreadable(why))),
        }
    }
    checked
}

/// One partition's positions against its bounds.
fn compare(p: &SinkPositions, bounds: Bounds, checked: &mut Checked) {
    if p.positions.iter().any(|(_, o)| *o > bounds.end) {
        checked.refused.push(refuse(p, Why::PastLogEnd(bounds.end)));
        return;
    }
    let below: Vec<Lost> = p
        .positions
        .iter()
        .filter(|(_, o)| *o < bounds.start)
        .map(|(sink, position)| Lost {
            topic: p.topic.clone(),
            partition: p.partition,
            sink: sink.clone(),
            position: *position,
            log_start: bounds.start,
        })
        .collect();
    if !below.is_empty() {
        checked
            .starts
            .push((p.topic.clone(), p.partition, bounds.start));
        checked.lost.extend(below);
    }
}

fn refuse(p: &SinkPositions, why: Why) -> Refused {
    Refused {
        topic: p.topic.clone(),
        partition: p.partition,
        positions: p.positions.clone(),
        why,
    }
}

/// Partitions whose sinks did not all answer: refused, since nothing was checked.
pub fn unanswered(partitions: &[Partition], why: &str) -> Vec<Refused> {
    partitions
        .iter()
        .map(|Partition { topic, partition }| Refused {
            topic: topic.clone(),
            partition: *partition,
            positions: Vec::new(),
            why: Why::SinksSilent(why.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// Bounds answered from a script, one answer per request (the last one repeats);
    /// a stand-in because a real broker cannot be made to report a lagging or failing
    /// watermark read on demand.
    struct Script(RefCell<HashMap<Partition, Vec<ReadBounds>>>);

    type Answers<'a> = &'a [ReadBounds];

    impl Script {
        fn new(answers: &[(&str, i32, Answers)]) -> Self {
            Self(RefCell::new(
                answers
                    .iter()
                    .map(|(t, p, a)| (Partition::new(*t, *p), a.to_vec()))
                    .collect(),
            ))
        }
    }

    impl LogBounds for Script {
        fn bounds(&self, topic: &str, partition: i32) -> ReadBounds {
            let mut answers = self.0.borrow_mut();
            let queue = answers
                .get_mut(&Partition::new(topic, partition))
                .expect("bounds asked for a partition without sink positions");
            if queue.len() > 1 {
                queue.remove(0)
            } else {
                queue[0].clone()
            }
        }
    }

    fn held(topic: &str, partition: i32, positions: &[(&str, i64)]) -> SinkPositions {
        SinkPositions {
            topic: topic.into(),
            partition,
            positions: positions.iter().map(|(s, p)| (s.to_string(), *p)).collect(),
        }
    }

    fn up_to(end: i64) -> ReadBounds {
        Ok(Bounds { start: 0, end })
    }

    fn run(held: &[SinkPositions], bounds: &Script) -> Checked {
        check_with_pause(held, bounds, Duration::ZERO)
    }

    #[test]
    fn positions_within_the_bounds_pass() {
        let bounds = Script::new(&[
            ("t", 0, &[up_to(1000)]),
            (
                "t",
                1,
                &[Ok(Bounds {
                    start: 10,
                    end: 5000,
                })],
            ),
        ]);
        let held = [
            held("t", 0, &[("sink-a", 1000), ("sink-b", 990)]),
            held("t", 1, &[("sink-a", 10), ("sink-b", 4000)]),
        ];
        assert_eq!(run(&held, &bounds), Checked::default());
    }

    #[test]
    fn a_position_past_the_log_end_refuses_the_partition_naming_every_sink() {
        let bounds = Script::new(&[("t", 0, &[up_to(1000)]), ("t", 1, &[up_to(333)])]);
        let held = [
            held("t", 0, &[("sink-a", 1000), ("sink-b", 1000)]),
            held("t", 1, &[("sink-a db.e", 987), ("sink-b ns.e", 1009)]),
        ];
        let refused = run(&held, &bounds).refused;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!((refused[0].topic.as_str(), refused[0].partition), ("t", 1));
        assert_eq!(refused[0].why, Why::PastLogEnd(333));
        let message = refused[0].to_string();
        for part in [
            "topic `t` partition 1",
            "sink-a db.e at 987",
            "sink-b ns.e at 1009",
            "log end 333",
            RECOVERY_DOC,
        ] {
            assert!(message.contains(part), "{part:?} missing in: {message}");
        }
    }

    #[test]
    fn one_sink_past_the_end_is_enough() {
        // Only sink-b had written past the new end (sink-a lagged or is new).
        let bounds = Script::new(&[("t", 0, &[up_to(50)])]);
        let checked = run(&[held("t", 0, &[("sink-a", 40), ("sink-b", 60)])], &bounds);
        assert_eq!(checked.refused.len(), 1);
    }

    #[test]
    fn a_log_end_below_a_position_is_believed_even_if_a_later_read_would_catch_up() {
        // A recreated topic filled by a quick producer: 900 now, past 1000 two seconds
        // later. Waiting for the end to catch up skipped the new records below 1000
        // (issue 16, item 4); a lagging new leader answers with an error instead.
        let bounds = Script::new(&[("t", 0, &[up_to(900), up_to(1000)])]);
        let checked = run(&[held("t", 0, &[("sink-a", 1000)])], &bounds);
        assert_eq!(checked.refused.len(), 1, "{checked:?}");
        assert_eq!(checked.refused[0].why, Why::PastLogEnd(900));
    }

    #[test]
    fn a_failed_read_is_tried_again_before_the_partition_is_refused() {
        let bounds = Script::new(&[(
            "t",
            0,
            &[Err("Broker: Offset not available".into()), up_to(1000)],
        )]);
        assert_eq!(
            run(&[held("t", 0, &[("sink-a", 1000)])], &bounds),
            Checked::default()
        );
    }

    #[test]
    fn unreadable_bounds_refuse_rather_than_guess() {
        let bounds = Script::new(&[("t", 0, &[Err("Broker: Leader not available".into())])]);
        let refused = run(&[held("t", 0, &[("sink-b", 7)])], &bounds).refused;
        assert_eq!(refused.len(), 1);
        assert!(matches!(refused[0].why, Why::Unreadable(_)));
        assert!(refused[0].to_string().contains("Leader not available"));
    }

    #[test]
    fn a_position_below_the_log_start_is_a_gap_in_that_sink_only() {
        // ClickHouse was down while retention deleted 1000..4000; Iceberg holds them.
        let bounds = Script::new(&[(
            "t",
            0,
            &[Ok(Bounds {
                start: 4000,
                end: 8000,
            })],
        )]);
        let checked = run(
            &[held(
                "t",
                0,
                &[("clickhouse db.e", 1000), ("iceberg ns.e", 8000)],
            )],
            &bounds,
        );
        assert_eq!(checked.refused, vec![]);
        assert_eq!(
            checked.lost,
            vec![Lost {
                topic: "t".into(),
                partition: 0,
                sink: "clickhouse db.e".into(),
                position: 1000,
                log_start: 4000,
            }]
        );
        assert_eq!(checked.lost[0].offsets(), 3000);
        assert_eq!(checked.starts, vec![("t".to_string(), 0, 4000)]);
        let message = checked.lost[0].to_string();
        for part in [
            "records lost",
            "topic `t` partition 0",
            "clickhouse db.e",
            "1000..4000",
            "starts at 4000",
            LOST_DOC,
        ] {
            assert!(message.contains(part), "{part:?} missing in: {message}");
        }
    }

    #[test]
    fn a_sink_exactly_at_the_log_start_lost_nothing() {
        let bounds = Script::new(&[(
            "t",
            0,
            &[Ok(Bounds {
                start: 4000,
                end: 4000,
            })],
        )]);
        let checked = run(&[held("t", 0, &[("sink-a", 4000)])], &bounds);
        assert_eq!(checked, Checked::default());
    }

    #[test]
    fn partitions_without_positions_ask_nothing() {
        // The script panics on any question: no position asks none.
        let bounds = Script::new(&[]);
        assert_eq!(run(&[held("t", 0, &[])], &bounds), Checked::default());
    }

    #[test]
    fn a_log_moved_back_under_the_consumer_is_told_with_every_position_and_the_log_end() {
        let refused = Refused {
            topic: "t".into(),
            partition: 2,
            positions: vec![("sink-a db.e".into(), 1004), ("sink-b ns.e".into(), 1004)],
            why: Why::MovedBack {
                expected: 1004,
                got: 0,
                log_end: Some(350),
            },
        };
        let message = refused.to_string();
        for part in [
            "topic `t` partition 2",
            "stood at offset 1004",
            "from offset 0",
            "sink-a db.e at 1004",
            "sink-b ns.e at 1004",
            "log end 350",
            RECOVERY_DOC,
        ] {
            assert!(message.contains(part), "{part:?} missing in: {message}");
        }
    }

    #[test]
    fn partitions_whose_sinks_did_not_answer_are_refused() {
        let refused = unanswered(
            &[Partition::new("t", 3)],
            "clickhouse db.e: connection refused",
        );
        assert_eq!(refused.len(), 1);
        let message = refused[0].to_string();
        assert!(message.contains("topic `t` partition 3"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }
}
