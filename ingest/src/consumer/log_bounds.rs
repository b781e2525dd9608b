//! A sink position past its partition's log end means the log that position was taken on
//! is gone: the topic was deleted and recreated under the same name (its offsets start
//! at 0 again), or an unclean leader election truncated the log.
//!
//! The sinks cannot tell: every new record sits below their positions and would be
//! skipped as "already written" (the ClickHouse ledger is a max-aggregate, Iceberg merges
//! its position maps; neither can move back). So such a partition is refused and the
//! service stops, naming what it found (fail closed); the operator decides what the new
//! log means (docs/exactly-once.md, "A topic deleted and recreated").

use std::fmt;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, StreamConsumer};

/// Where the recovery steps are written down, named in every refusal.
pub const RECOVERY_DOC: &str = "docs/exactly-once.md, section \"A topic deleted and recreated\"";

/// Bounds one log end request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's log end is read this many times before it is believed to be below a
/// sink's position: right after a leader change the new leader may report a high
/// watermark that lags the old leader's for a moment.
const ATTEMPTS: u32 = 3;
const BETWEEN_ATTEMPTS: Duration = Duration::from_secs(2);

/// A partition's log end, or why it could not be read.
pub type LogEnd = Result<i64, String>;

/// Reads a partition's log end (its high watermark: the offset after the last record a
/// consumer can read).
pub trait LogEnds {
    fn log_end(&self, topic: &str, partition: i32) -> LogEnd;
}

impl<C: ConsumerContext> LogEnds for BaseConsumer<C> {
    fn log_end(&self, topic: &str, partition: i32) -> LogEnd {
        self.fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map(|(_, high)| high)
            .map_err(|e| e.to_string())
    }
}

impl<C: ConsumerContext + 'static> LogEnds for StreamConsumer<C> {
    fn log_end(&self, topic: &str, partition: i32) -> LogEnd {
        self.fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map(|(_, high)| high)
            .map_err(|e| e.to_string())
    }
}

/// The partition librdkafka moved to `auto.offset.reset` because its fetch position
/// failed (offset out of range: the log under a running consumer was truncated or
/// replaced). librdkafka tells the application only through this warning:
/// `"[thrd:main]: topic [2]: offset reset (at offset 1004 ...) to offset BEGINNING ...:
/// Broker: Offset out of range"` (a reset for lack of a committed offset is a debug line).
/// It is logged from librdkafka's thread before the new position is fetched, so the
/// consumer sees it before any record read from there.
pub fn reset_after_error(
    level: RDKafkaLogLevel,
    fac: &str,
    message: &str,
) -> Option<(String, i32)> {
    if fac != "OFFSET" || !matches!(level, RDKafkaLogLevel::Warning) {
        return None;
    }
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ")?.1,
        None => message,
    };
    let (partition, _) = message.split_once("]: offset reset (")?;
    // Topic names cannot hold `[` or spaces.
    let (topic, partition) = partition.rsplit_once(" [")?;
    Some((topic.to_string(), partition.parse().ok()?))
}

/// What each sink of a partition's route has made durable there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPositions {
    pub topic: String,
    pub partition: i32,
    /// (sink name, the offset after the last record it holds)
    pub positions: Vec<(String, i64)>,
}

/// A partition the service refuses to consume, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub topic: String,
    pub partition: i32,
    pub positions: Vec<(String, i64)>,
    /// The log end found, or why it could not be read.
    pub log_end: LogEnd,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let positions = self
            .positions
            .iter()
            .map(|(sink, offset)| format!("{sink} at {offset}"))
            .collect::<Vec<_>>()
            .join(", ");
        match &self.log_end {
            Ok(end) => write!(
                f,
                "topic `{}` partition {}: the sinks' positions ({positions}) lie past the \
                 partition's log end {end}: the log they were taken on is gone (the topic was \
                 deleted and recreated, or an unclean leader election truncated it), and the \
                 sinks would skip every new record below their positions; refusing to consume \
                 the partition. Recovery: {RECOVERY_DOC}",
                self.topic, self.partition
            ),
            Err(why) => write!(
                f,
                "topic `{}` partition {}: cannot read the partition's log end to check the \
                 sinks' positions ({positions}) against it ({why}); refusing to consume the \
                 partition rather than risk skipping records. See {RECOVERY_DOC}",
                self.topic, self.partition
            ),
        }
    }
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
        "stopping before consuming partitions whose sinks' positions lie past the log end \
         (or whose log end cannot be read): {partitions}; recovery: {RECOVERY_DOC}"
    )
}

/// The partitions whose sinks hold a position past the log end (or whose log end cannot
/// be read). A position equal to the log end is normal: that sink is caught up.
pub fn refused(held: &[SinkPositions], ends: &dyn LogEnds) -> Vec<Refused> {
    refused_with_pause(held, ends, BETWEEN_ATTEMPTS)
}

fn refused_with_pause(held: &[SinkPositions], ends: &dyn LogEnds, pause: Duration) -> Vec<Refused> {
    // (partition, its highest position, the last log end read)
    let mut suspects: Vec<(&SinkPositions, i64, LogEnd)> = held
        .iter()
        .filter_map(|p| Some((p, p.positions.iter().map(|(_, o)| *o).max()?)))
        // Nothing to compare at offset 0: every log end is at or past it.
        .filter(|(_, highest)| *highest > 0)
        .map(|(p, highest)| (p, highest, Err(String::new())))
        .collect();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 && !suspects.is_empty() {
            std::thread::sleep(pause);
        }
        for (p, _, log_end) in suspects.iter_mut() {
            *log_end = ends.log_end(&p.topic, p.partition);
        }
        suspects.retain(|(_, highest, log_end)| !matches!(log_end, Ok(end) if end >= highest));
    }
    suspects
        .into_iter()
        .map(|(p, _, log_end)| Refused {
            topic: p.topic.clone(),
            partition: p.partition,
            positions: p.positions.clone(),
            log_end,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// Log ends answered from a script, one answer per request (the last one repeats);
    /// a stand-in because a real broker cannot be made to report a lagging high
    /// watermark on demand.
    struct Script(RefCell<HashMap<(String, i32), Vec<LogEnd>>>);

    type Answers<'a> = &'a [LogEnd];

    impl Script {
        fn new(answers: &[(&str, i32, Answers)]) -> Self {
            Self(RefCell::new(
                answers
                    .iter()
                    .map(|(t, p, a)| ((t.to_string(), *p), a.to_vec()))
                    .collect(),
            ))
        }
    }

    impl LogEnds for Script {
        fn log_end(&self, topic: &str, partition: i32) -> LogEnd {
            let mut answers = self.0.borrow_mut();
            let queue = answers
                .get_mut(&(topic.to_string(), partition))
                .expect("log end asked for a partition without sink positions");
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

    fn check(held: &[SinkPositions], ends: &Script) -> Vec<Refused> {
        refused_with_pause(held, ends, Duration::ZERO)
    }

    #[test]
    fn positions_at_or_below_the_log_end_pass() {
        let ends = Script::new(&[("t", 0, &[Ok(1000)]), ("t", 1, &[Ok(5000)])]);
        let held = [
            held("t", 0, &[("sink-a", 1000), ("sink-b", 990)]),
            held("t", 1, &[("sink-a", 10), ("sink-b", 4000)]),
        ];
        assert_eq!(check(&held, &ends), vec![]);
    }

    #[test]
    fn a_position_past_the_log_end_refuses_the_partition_naming_every_sink() {
        let ends = Script::new(&[("t", 0, &[Ok(1000)]), ("t", 1, &[Ok(333)])]);
        let held = [
            held("t", 0, &[("sink-a", 1000), ("sink-b", 1000)]),
            held("t", 1, &[("sink-a db.e", 987), ("sink-b ns.e", 1009)]),
        ];
        let refused = check(&held, &ends);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!((refused[0].topic.as_str(), refused[0].partition), ("t", 1));
        assert_eq!(refused[0].log_end, Ok(333));
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
        let ends = Script::new(&[("t", 0, &[Ok(50)])]);
        let refused = check(&[held("t", 0, &[("sink-a", 40), ("sink-b", 60)])], &ends);
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn a_lagging_log_end_that_catches_up_is_not_a_refusal() {
        // A new leader's high watermark behind for one answer, then caught up.
        let ends = Script::new(&[("t", 0, &[Ok(900), Ok(1000)])]);
        assert_eq!(check(&[held("t", 0, &[("sink-a", 1000)])], &ends), vec![]);
    }

    #[test]
    fn an_unreadable_log_end_refuses_rather_than_guesses() {
        let ends = Script::new(&[("t", 0, &[Err("Broker: Leader not available".into())])]);
        let refused = check(&[held("t", 0, &[("sink-b", 7)])], &ends);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].log_end.is_err());
        assert!(refused[0].to_string().contains("Leader not available"));
    }

    #[test]
    fn an_offset_reset_after_a_failed_fetch_names_its_partition() {
        // As librdkafka 2.12 logs it (seen in tests/e2e/test_topic_recreated.py).
        let line = "[thrd:main]: events_97f.x-1 [2]: offset reset (at offset 1004 (leader epoch 0), \
                    broker 1) to offset BEGINNING (leader epoch -1): fetch failed due to requested \
                    offset not available on the broker: Broker: Offset out of range";
        assert_eq!(
            reset_after_error(RDKafkaLogLevel::Warning, "OFFSET", line),
            Some(("events_97f.x-1".into(), 2))
        );
        assert_eq!(
            reset_after_error(RDKafkaLogLevel::Debug, "OFFSET", line),
            None
        );
        assert_eq!(
            reset_after_error(RDKafkaLogLevel::Warning, "FETCH", line),
            None
        );
        let other = "[thrd:main]: events [0]: offset store failed";
        assert_eq!(
            reset_after_error(RDKafkaLogLevel::Warning, "OFFSET", other),
            None
        );
    }

    #[test]
    fn partitions_without_positions_ask_nothing() {
        // The script panics on any question: no position, or position 0, asks none.
        let ends = Script::new(&[]);
        let held = [held("t", 0, &[]), held("t", 1, &[("sink-a", 0)])];
        assert_eq!(check(&held, &ends), vec![]);
    }
}
