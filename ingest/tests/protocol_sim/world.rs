//! The simulated world: a broker (partition logs, group offsets, the assignment), two
//! members running the runtime's steps against the protocol type, the two sinks and
//! the dead-letter topic. Every step is chosen by the seeded generator; the invariants
//! are checked as the world changes and after recovery.

use std::collections::HashSet;

use ingest::protocol::{LaneBook, Partition, reread_after_shed, start_offset};
use ingest_sink_api::OffsetMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::member::{Batch, Fenced, Flight, LANES, Member, Stage, parts, tp};
use super::sinks::{ClickHouse, Iceberg};
use super::{ROUTE, Row, TOPIC};

const MEMBERS: usize = 2;

pub struct World {
    rng: ChaCha8Rng,
    /// Per partition, its records (true: a record no sink can take, for the DLQ).
    logs: Vec<Vec<bool>>,
    group: Vec<Option<i64>>,
    /// The broker's assignment.
    owner: Vec<Option<usize>>,
    members: Vec<Member>,
    ch: ClickHouse,
    ice: Iceberg,
    dlq: HashSet<Row>,
    faults: bool,
    /// A runtime rule broken on purpose (see [`Break`]).
    brk: Break,
    pub trace: Vec<String>,
    pub seen_events: Events,
}

/// How often the interesting cases happened, so a test can tell the schedules reach them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Events {
    pub fenced_batches: u64,
    pub left_to_another_writer: u64,
    pub closed_gate_inserts: u64,
    pub compare_and_swap_conflicts: u64,
    pub revoked_since_started: u64,
    pub lost_replies: u64,
    pub rewinds: u64,
    pub gate_refusals: u64,
    pub sheds: u64,
}

impl Events {
    pub fn add(&mut self, other: &Events) {
        self.fenced_batches += other.fenced_batches;
        self.left_to_another_writer += other.left_to_another_writer;
        self.closed_gate_inserts += other.closed_gate_inserts;
        self.compare_and_swap_conflicts += other.compare_and_swap_conflicts;
        self.revoked_since_started += other.revoked_since_started;
        self.lost_replies += other.lost_replies;
        self.rewinds += other.rewinds;
        self.gate_refusals += other.gate_refusals;
        self.sheds += other.sheds;
    }
}

type Step = Result<(), String>;

/// A rule of the runtime broken on purpose, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    None,
    /// The group commit takes the furthest sink, not the one furthest behind.
    CommitTheMaximum,
    /// A shed lane's partitions are read again from where the furthest lane needs them.
    RereadFromTheFurthest,
    /// Lanes take again what they were handed before a re-read for another lane.
    NoSkipAfterReread,
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self::breaking(seed, Break::None)
    }

    /// A world whose runtime breaks `brk`.
    pub fn breaking(seed: u64, brk: Break) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let partitions = rng.random_range(1..=3);
        Self {
            rng,
            logs: vec![Vec::new(); partitions],
            group: vec![None; partitions],
            owner: vec![None; partitions],
            members: (0..MEMBERS).map(|_| Member::new()).collect(),
            ch: ClickHouse::default(),
            ice: Iceberg::default(),
            dlq: HashSet::new(),
            faults: true,
            brk,
            trace: Vec::new(),
            seen_events: Events::default(),
        }
    }

    /// A world of one partition without faults, for scripted schedules.
    pub fn scripted() -> Self {
        let mut world = Self::new(0);
        world.logs = vec![Vec::new()];
        world.group = vec![None];
        world.owner = vec![None];
        world.faults = false;
        world
    }

    /// Runs recovery and the final checks.
    pub fn settle(&mut self) -> Step {
        self.recover()?;
        self.check_exactly_once()
    }

    /// The broker gives `p` to `m`.
    pub fn assign(&mut self, m: usize, p: i32) {
        self.owner[p as usize] = Some(m);
        self.callback_assign(m, &[p]);
    }

    /// Appends `n` good records to `p`.
    pub fn produce_good(&mut self, p: i32, n: usize) {
        self.logs[p as usize].extend(std::iter::repeat_n(false, n));
    }

    /// `steps` random steps, then recovery, checking the invariants throughout.
    pub fn run(&mut self, steps: usize) -> Step {
        self.assign_free();
        for _ in 0..steps {
            self.step()?;
            self.check_positions()?;
        }
        self.recover()?;
        self.check_exactly_once()
    }

    fn note(&mut self, what: String) {
        self.trace.push(what);
    }

    fn step(&mut self) -> Step {
        let m = self.rng.random_range(0..MEMBERS);
        let p = self.rng.random_range(0..self.logs.len()) as i32;
        let lane = self.rng.random_range(0..LANES);
        match self.rng.random_range(0..100) {
            0..10 => self.produce(p),
            10..28 => self.consume(m, p),
            28..38 => self.start(m, lane),
            38..63 => self.attempt(m, lane)?,
            63..72 => self.finish(m, lane)?,
            72..75 => self.shed(m, lane),
            75..80 => self.move_partition(p)?,
            80..84 => self.assign_free(),
            84..86 => self.pause(m),
            86..88 => self.expire(m),
            88..91 => self.wake(m),
            91..94 => self.deliver_lost(m)?,
            94..98 => self.crash(m),
            _ => self.stop(m)?,
        }
        Ok(())
    }

    fn produce(&mut self, p: i32) {
        let n = self.rng.random_range(1..=4);
        for _ in 0..n {
            let bad = self.rng.random_bool(0.05);
            self.logs[p as usize].push(bad);
        }
        self.note(format!("produce {n} to p{p}"));
    }

    /// Reads a few records into every lane (bad ones go to the dead-letter topic first).
    fn consume(&mut self, m: usize, p: i32) {
        let k = self.rng.random_range(1..=4);
        self.consume_up_to(m, p, k);
    }

    pub fn consume_up_to(&mut self, m: usize, p: i32, k: i64) -> bool {
        let member = &self.members[m];
        let Some(&from) = member.position.get(&p) else {
            return false;
        };
        if !member.running() {
            return false;
        }
        let end = self.logs[p as usize].len() as i64;
        let to = end.min(from.saturating_add(k));
        if from >= to {
            return false;
        }
        let mut chunk = Batch::default();
        for o in from..to {
            if self.logs[p as usize][o as usize] {
                self.dlq.insert((p, o));
            } else {
                chunk.rows.push((p, o));
            }
        }
        chunk.next.advance(TOPIC, p, to);
        let member = &mut self.members[m];
        for lane in &mut member.lanes {
            lane.append(&chunk, self.brk == Break::NoSkipAfterReread);
        }
        member.position.insert(p, to);
        self.note(format!("m{m} consumes p{p} {from}..{to}"));
        true
    }

    /// `start_lane`: the open batch becomes the write under way, in the current epoch.
    pub fn start(&mut self, m: usize, lane: usize) {
        let member = &mut self.members[m];
        let running = member.running();
        let state = &mut member.lanes[lane];
        if !running || state.flight.is_some() || state.open.next.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut state.open);
        let epoch = member.revocations.epoch();
        self.note(format!(
            "m{m} lane{lane} starts {:?} epoch {epoch}",
            batch.next
        ));
        self.members[m].lanes[lane].flight = Some(Flight {
            batch,
            epoch,
            stage: Stage::Ready,
        });
    }

    fn attempt(&mut self, m: usize, lane: usize) -> Step {
        if !self.members[m].running() {
            return Ok(());
        }
        self.advance(m, lane)?;
        // The zombie's moment: stopped right after its checks, before it writes.
        if self.faults
            && self.members[m].mid_attempt(lane, &self.all())
            && self.rng.random_bool(0.1)
        {
            self.pause(m);
            if self.rng.random_bool(0.5) {
                self.expire(m);
            }
        }
        Ok(())
    }

    fn all(&self) -> Vec<i32> {
        (0..self.logs.len() as i32).collect()
    }

    /// One stage of a lane's write (the sink's side).
    pub fn advance(&mut self, m: usize, lane: usize) -> Step {
        let Some(flight) = self.members[m].lanes[lane].flight.clone() else {
            return Ok(());
        };
        let stage = match (lane, flight.stage) {
            (_, Stage::Done(_)) => return Ok(()),
            (_, Stage::Ready) if flight.batch.rows.is_empty() => Stage::Done(Ok(Vec::new())),
            (0, Stage::Ready) => self.ch_fence(m, &flight.batch, flight.epoch),
            (0, Stage::ChAdmit { todo, not_owned }) => self.ch_admit(m, todo, not_owned),
            (
                0,
                Stage::ChInsert {
                    fresh,
                    todo,
                    token,
                    not_owned,
                },
            ) => self.ch_insert(m, fresh, todo, token, not_owned)?,
            (_, Stage::Ready) => self.ice_load(&flight.batch),
            (_, Stage::IceCommit { version, todo }) => {
                self.ice_commit(&flight.batch, version, todo)?
            }
            (_, stage) => unreachable!("lane {lane} in stage {stage:?}"),
        };
        self.note(format!("m{m} lane{lane} -> {stage:?}"));
        if let Some(f) = &mut self.members[m].lanes[lane].flight {
            f.stage = stage;
        }
        // A sink may have taken rows: checked at once, before anything commits.
        self.check_positions()
    }

    /// The fence (`GroupFence::check`): lost when the group expelled the member; the
    /// partitions revoked since the batch started or not assigned are left out; the
    /// commit probe commits again what was committed for the rest.
    fn ch_fence(&mut self, m: usize, batch: &Batch, epoch: u64) -> Stage {
        let member = &self.members[m];
        if !member.in_group {
            return Stage::Done(Err(Fenced));
        }
        let mut gone = parts(&member.revocations.revoked_since(epoch, &batch.next));
        for p in batch.partitions() {
            if !member.view.contains(&p) && !gone.contains(&p) {
                gone.push(p);
            }
        }
        let probe: Vec<(i32, i64)> = batch
            .partitions()
            .into_iter()
            .filter(|p| !gone.contains(p))
            .filter_map(|p| member.offsets.committed().get(TOPIC, p).map(|c| (p, c)))
            .collect();
        for (p, c) in probe {
            self.group[p as usize] = Some(c);
        }
        Stage::ChAdmit {
            todo: batch.without(&gone),
            not_owned: gone,
        }
    }

    /// Admission through the writer's gate, then the positions read back: held rows
    /// are dropped.
    fn ch_admit(&mut self, m: usize, mut todo: Batch, mut not_owned: Vec<i32>) -> Stage {
        loop {
            if todo.rows.is_empty() {
                return Stage::Done(Ok(not_owned));
            }
            let member = &mut self.members[m];
            let (token, refused) =
                member
                    .gate
                    .admit(&mut self.ch.gates, &todo.partitions(), member.generation);
            if !refused.is_empty() {
                self.seen_events.gate_refusals += 1;
                todo.drop_partitions(&refused);
                not_owned.extend(refused);
                continue;
            }
            let token = token.expect("admitted partitions have a gate");
            let held = self.ch.read(&todo.partitions());
            let fresh: Vec<Row> = todo
                .rows
                .iter()
                .copied()
                .filter(|(p, o)| held.get(TOPIC, *p).is_none_or(|next| *o >= next))
                .collect();
            if fresh.is_empty() {
                return Stage::Done(Ok(not_owned));
            }
            return Stage::ChInsert {
                fresh,
                todo,
                token,
                not_owned,
            };
        }
    }

    fn ch_insert(
        &mut self,
        m: usize,
        fresh: Vec<Row>,
        todo: Batch,
        token: u64,
        not_owned: Vec<i32>,
    ) -> Result<Stage, String> {
        let fault = self.fault();
        let rows = match fault {
            Fault::Before => return Ok(Stage::Ready),
            Fault::Prefix => {
                let n = self.rng.random_range(0..fresh.len());
                &fresh[..n]
            }
            Fault::None | Fault::After => &fresh[..],
        };
        if !self.ch.insert(rows, token)? {
            // The gate was closed by a later writer: the next admission finds out which
            // partitions it took.
            self.seen_events.closed_gate_inserts += 1;
            self.members[m].gate.gate_closed();
            return Ok(Stage::ChAdmit { todo, not_owned });
        }
        if matches!(fault, Fault::After) {
            self.seen_events.lost_replies += 1;
        }
        Ok(match fault {
            Fault::None => Stage::Done(Ok(not_owned)),
            _ => Stage::Ready,
        })
    }

    /// Loads the table and drops the rows its positions cover (`skip_held`).
    fn ice_load(&mut self, batch: &Batch) -> Stage {
        let held = self.ice.read(&batch.partitions());
        let todo: Vec<Row> = batch
            .rows
            .iter()
            .copied()
            .filter(|(p, o)| held.get(TOPIC, *p).is_none_or(|next| *o >= next))
            .collect();
        if todo.is_empty() {
            return Stage::Done(Ok(Vec::new()));
        }
        Stage::IceCommit {
            version: self.ice.version,
            todo,
        }
    }

    /// The compare-and-swap commit; a lost race loads again.
    fn ice_commit(&mut self, batch: &Batch, version: u64, todo: Vec<Row>) -> Result<Stage, String> {
        let fault = self.fault();
        if matches!(fault, Fault::Before | Fault::Prefix) {
            return Ok(Stage::Ready);
        }
        if !self.ice.commit(version, &todo, &batch.next)? {
            self.seen_events.compare_and_swap_conflicts += 1;
            return Ok(self.ice_load(batch));
        }
        Ok(match fault {
            Fault::None => Stage::Done(Ok(Vec::new())),
            _ => Stage::Ready,
        })
    }

    fn fault(&mut self) -> Fault {
        if !self.faults {
            return Fault::None;
        }
        match self.rng.random_range(0..100) {
            0..70 => Fault::None,
            70..80 => Fault::Before,
            80..90 => Fault::After,
            _ => Fault::Prefix,
        }
    }

    /// `finish_lane`: tells the protocol what the sink made durable, rewinds what it
    /// dropped, commits what the protocol answers.
    pub fn finish(&mut self, m: usize, lane: usize) -> Step {
        let member = &mut self.members[m];
        if !member.running() {
            return Ok(());
        }
        let state = &mut member.lanes[lane];
        if !matches!(
            state.flight,
            Some(Flight {
                stage: Stage::Done(_),
                ..
            })
        ) {
            return Ok(());
        }
        let flight = state.flight.take().expect("checked");
        let Stage::Done(result) = flight.stage else {
            unreachable!()
        };
        match result {
            Err(Fenced) => {
                self.seen_events.fenced_batches += 1;
                self.note(format!("m{m} lane{lane} finishes: fenced"));
                self.rewind(m, &flight.batch.partitions());
                self.unshed(m, lane);
                Ok(())
            }
            Ok(not_owned) => {
                let revoked = member
                    .revocations
                    .revoked_since(flight.epoch, &flight.batch.next);
                let counted = member.offsets.written(
                    ROUTE,
                    lane,
                    &flight.batch.next,
                    &revoked,
                    &tp(&not_owned),
                );
                self.note(format!(
                    "m{m} lane{lane} finishes {:?}: revoked {revoked:?} not owned {not_owned:?}, commit {:?}",
                    flight.batch.next, counted.commit
                ));
                self.seen_events.revoked_since_started += u64::from(!revoked.is_empty());
                if !not_owned.is_empty() {
                    self.seen_events.left_to_another_writer += 1;
                    self.rewind(m, &not_owned);
                }
                self.commit(m, &counted.commit)?;
                self.unshed(m, lane);
                Ok(())
            }
        }
    }

    /// `Pipeline::flush` shedding a lane whose sink is failing (here: at any moment
    /// its write is under way), while the other lane still takes rows.
    fn shed(&mut self, m: usize, lane: usize) {
        let member = &mut self.members[m];
        let writing = member.lanes[lane]
            .flight
            .as_ref()
            .is_some_and(|f| !matches!(f.stage, Stage::Done(_)));
        let others_take = (0..LANES).any(|l| l != lane && !member.lanes[l].book.is_shed());
        if !member.running() || !writing || !others_take || member.lanes[lane].book.is_shed() {
            return;
        }
        member.lanes[lane].shed();
        self.seen_events.sheds += 1;
        self.note(format!("m{m} lane{lane} sheds"));
    }

    /// `Pipeline::unshed`: the shed partitions are read again from where every lane
    /// needs them; the other lanes skip what they were handed.
    fn unshed(&mut self, m: usize, lane: usize) {
        if !self.members[m].lanes[lane].book.is_shed() {
            return;
        }
        let shed = self.members[m].lanes[lane].book.unshed();
        let owned: Vec<i32> = parts(&shed)
            .into_iter()
            .filter(|p| self.members[m].offsets.owns(TOPIC, *p))
            .collect();
        let known = [self.ch.read(&owned), self.ice.read(&owned)];
        let member = &mut self.members[m];
        let mut books: Vec<&mut LaneBook> = member.lanes.iter_mut().map(|l| &mut l.book).collect();
        let starts = reread_after_shed(&mut books, lane, &known, &tp(&owned));
        for (Partition { partition: p, .. }, start) in starts {
            let start = start.unwrap_or(self.group[p as usize].unwrap_or(0));
            let start = match self.brk {
                Break::RereadFromTheFurthest => known
                    .iter()
                    .filter_map(|k| k.get(TOPIC, p))
                    .max()
                    .unwrap_or(start)
                    .max(start),
                _ => start,
            };
            member.position.insert(p, start);
        }
        self.note(format!("m{m} lane{lane} back: reads {owned:?} again"));
    }

    /// `Pipeline::rewind`.
    fn rewind(&mut self, m: usize, partitions: &[i32]) {
        let member = &mut self.members[m];
        let owned = parts(&member.offsets.rewind(&tp(partitions)));
        if owned.is_empty() {
            return;
        }
        member.revocations.revoke(&tp(&owned));
        member.drop_buffered(&owned);
        let known = [self.ch.read(&owned), self.ice.read(&owned)];
        for p in &owned {
            let start = start_offset(&known, TOPIC, *p)
                .or(self.group[*p as usize])
                .unwrap_or(0);
            self.members[m].position.insert(*p, start);
        }
        self.seen_events.rewinds += 1;
        self.note(format!("m{m} rewinds {owned:?}"));
    }

    /// The broker takes a commit from a member of the group. Checks that the group
    /// offset never passes a record some sink (or the dead-letter topic) lacks, nor
    /// moves back over a record a sink holds.
    fn commit(&mut self, m: usize, offsets: &OffsetMap) -> Step {
        if !self.members[m].in_group {
            return Ok(());
        }
        let mut offsets = offsets.clone();
        if self.brk == Break::CommitTheMaximum {
            for p in parts(&offsets.partitions().collect::<Vec<_>>()) {
                let furthest = [self.ch.position(p), self.ice.positions.get(TOPIC, p)]
                    .into_iter()
                    .flatten()
                    .max();
                if let Some(furthest) = furthest {
                    offsets.advance(TOPIC, p, furthest);
                }
            }
        }
        for (_, p, next) in offsets.iter() {
            // A group offset moves back only over records the dead-letter topic holds:
            // ClickHouse's position comes from its rows, so a partition's trailing bad
            // records are read again (the dead-letter topic is at-least-once).
            if let Some(before) = self.group[p as usize]
                && (next..before).any(|o| !self.logs[p as usize][o as usize])
            {
                return Err(format!(
                    "m{m} moves the group offset of p{p} back from {before} to {next}"
                ));
            }
            for o in 0..next {
                let row = (p, o);
                let bad = self.logs[p as usize][o as usize];
                let lacking = if bad {
                    (!self.dlq.contains(&row)).then_some("the dead-letter topic")
                } else if self.ch.held.count(&row) == 0 {
                    Some("ClickHouse")
                } else if self.ice.held.count(&row) == 0 {
                    Some("Iceberg")
                } else {
                    None
                };
                if let Some(sink) = lacking {
                    return Err(format!(
                        "m{m} commits p{p} at {next} but {sink} lacks offset {o}"
                    ));
                }
            }
            self.group[p as usize] = Some(next);
        }
        Ok(())
    }

    /// The rebalance callback and `handle_rebalances` for an assignment: start at the
    /// minimum of the sinks' positions, else the group offset, else the beginning.
    fn callback_assign(&mut self, m: usize, partitions: &[i32]) {
        let known = [self.ch.read(partitions), self.ice.read(partitions)];
        let member = &mut self.members[m];
        member.generation += 1;
        member.offsets.assign(&tp(partitions));
        for p in partitions {
            let start = start_offset(&known, TOPIC, *p)
                .or(self.group[*p as usize])
                .unwrap_or(0);
            member.view.insert(*p);
            member.position.insert(*p, start);
        }
        self.note(format!("m{m} assigned {partitions:?}"));
    }

    /// The rebalance callback for a revocation (a new epoch, then waiting for attempts
    /// under way on the partitions), then `handle_rebalances`.
    fn callback_revoke(&mut self, m: usize, partitions: &[i32]) -> Step {
        let member = &mut self.members[m];
        member.generation += 1;
        member.revocations.revoke(&tp(partitions));
        for lane in 0..LANES {
            while self.members[m].mid_attempt(lane, partitions) {
                self.advance(m, lane)?;
            }
        }
        let member = &mut self.members[m];
        member.drop_buffered(partitions);
        member.offsets.revoke(&tp(partitions));
        for p in partitions {
            member.view.remove(p);
            member.position.remove(p);
        }
        self.note(format!("m{m} revoked {partitions:?}"));
        Ok(())
    }

    fn available(&self, m: usize) -> bool {
        self.members[m].in_group && !self.members[m].paused
    }

    /// A cooperative rebalance moves a partition from its owner to the other member.
    fn move_partition(&mut self, p: i32) -> Step {
        let Some(from) = self.owner[p as usize] else {
            return Ok(());
        };
        let to = (from + 1) % MEMBERS;
        if !self.available(from) || !self.available(to) {
            return Ok(());
        }
        self.callback_revoke(from, &[p])?;
        self.owner[p as usize] = Some(to);
        self.callback_assign(to, &[p]);
        Ok(())
    }

    /// Partitions nobody owns go to members able to take them.
    fn assign_free(&mut self) {
        let able: Vec<usize> = (0..MEMBERS).filter(|m| self.available(*m)).collect();
        if able.is_empty() {
            return;
        }
        for p in 0..self.logs.len() {
            if self.owner[p].is_none() {
                let m = able[self.rng.random_range(0..able.len())];
                self.owner[p] = Some(m);
                self.callback_assign(m, &[p as i32]);
            }
        }
    }

    /// The member stops (SIGSTOP, a long pause): it keeps its state and acts on it
    /// when it wakes, unaware of what happened meanwhile.
    pub fn pause(&mut self, m: usize) {
        if self.available(m) {
            self.members[m].paused = true;
            self.note(format!("m{m} paused"));
        }
    }

    /// The paused member's session expires: the group expels it and gives its
    /// partitions away (it hears nothing).
    pub fn expire(&mut self, m: usize) {
        if !(self.members[m].paused && self.members[m].in_group) {
            return;
        }
        self.members[m].in_group = false;
        self.release(m);
        self.note(format!("m{m} expelled"));
        self.assign_free();
    }

    pub fn wake(&mut self, m: usize) {
        if self.members[m].paused {
            self.members[m].paused = false;
            self.note(format!("m{m} wakes"));
        }
    }

    /// librdkafka tells an expelled member its assignment is lost (a revocation of
    /// everything), and the member joins again.
    pub fn deliver_lost(&mut self, m: usize) -> Step {
        if self.members[m].paused || self.members[m].in_group {
            return Ok(());
        }
        let view: Vec<i32> = self.members[m].view.iter().copied().collect();
        self.callback_revoke(m, &view)?;
        self.members[m].in_group = true;
        // Its joining is a rebalance for the others too (librdkafka calls the
        // cooperative rebalance callback even when a member's assignment is unchanged;
        // a paused member sees it when it wakes).
        for other in 0..MEMBERS {
            if other != m && self.members[other].in_group {
                self.members[other].generation += 1;
            }
        }
        self.note(format!("m{m} lost its assignment and joined again"));
        Ok(())
    }

    /// Everything in the member's memory is lost; it starts again as a new member.
    fn crash(&mut self, m: usize) {
        if self.members[m].in_group {
            self.release(m);
        }
        self.members[m] = Member::new();
        self.note(format!("m{m} crashes"));
    }

    /// SIGTERM: writes what it holds, commits, and leaves; then starts again.
    fn stop(&mut self, m: usize) -> Step {
        if !self.available(m) {
            return Ok(());
        }
        self.note(format!("m{m} stops"));
        let faults = std::mem::replace(&mut self.faults, false);
        for lane in 0..LANES {
            self.complete(m, lane)?;
            self.start(m, lane);
            self.complete(m, lane)?;
        }
        let last = self.members[m].offsets.final_commit();
        self.commit(m, &last)?;
        let view: Vec<i32> = self.members[m].view.iter().copied().collect();
        self.callback_revoke(m, &view)?;
        self.faults = faults;
        self.release(m);
        self.members[m] = Member::new();
        Ok(())
    }

    /// Runs the lane's write to its end and finishes it.
    pub fn complete(&mut self, m: usize, lane: usize) -> Step {
        while self.members[m].lanes[lane]
            .flight
            .as_ref()
            .is_some_and(|f| !matches!(f.stage, Stage::Done(_)))
        {
            self.advance(m, lane)?;
        }
        self.finish(m, lane)
    }

    fn release(&mut self, m: usize) {
        for owner in &mut self.owner {
            if *owner == Some(m) {
                *owner = None;
            }
        }
    }

    /// Faults end; paused members wake, expelled ones rejoin; every partition gets an
    /// owner; members read and write until everything produced is consumed.
    fn recover(&mut self) -> Step {
        self.note("recovery".into());
        self.faults = false;
        for m in 0..MEMBERS {
            self.wake(m);
            self.deliver_lost(m)?;
        }
        self.assign_free();
        for _round in 0..100 {
            let mut busy = false;
            for m in 0..MEMBERS {
                let view: Vec<i32> = self.members[m].view.iter().copied().collect();
                for p in view {
                    busy |= self.consume_up_to(m, p, i64::MAX);
                }
                for lane in 0..LANES {
                    self.start(m, lane);
                    busy |= self.members[m].lanes[lane].flight.is_some();
                    self.complete(m, lane)?;
                }
            }
            if !busy {
                return Ok(());
            }
        }
        Err("recovery made no progress in 100 rounds".into())
    }

    /// No sink position claims a record its sink lacks: a lane that wrote past a gap
    /// shows here, its position passing rows it never wrote. (A position cannot move
    /// back: both sinks fold positions with a maximum, as ours do; the check that said
    /// so could never fail and is gone.)
    fn check_positions(&mut self) -> Step {
        for p in 0..self.logs.len() as i32 {
            let now = [self.ch.position(p), self.ice.positions.get(TOPIC, p)];
            for (sink, position) in now.into_iter().enumerate() {
                let Some(position) = position else { continue };
                let held = [&self.ch.held, &self.ice.held][sink];
                let lacking = (0..position).find(|&o| {
                    let bad = self.logs[p as usize][o as usize];
                    !bad && held.count(&(p, o)) == 0
                });
                if let Some(o) = lacking {
                    return Err(format!(
                        "sink {sink} position of p{p} is {position} but it lacks offset {o}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every good record once in each sink, every bad one in the dead-letter topic.
    /// (The group offset need not reach the end: a partition whose sinks already hold
    /// everything is resumed from their positions and never committed again.)
    fn check_exactly_once(&self) -> Step {
        for (p, log) in self.logs.iter().enumerate() {
            let p = p as i32;
            for (o, bad) in log.iter().enumerate() {
                let row = (p, o as i64);
                if *bad {
                    if !self.dlq.contains(&row) {
                        return Err(format!(
                            "bad record {row:?} is not in the dead-letter topic"
                        ));
                    }
                    continue;
                }
                let (ch, ice) = (self.ch.held.count(&row), self.ice.held.count(&row));
                if ch != 1 || ice != 1 {
                    return Err(format!(
                        "record {row:?} is {ch} times in ClickHouse and {ice} times in Iceberg"
                    ));
                }
            }
        }
        Ok(())
    }
}

enum Fault {
    None,
    /// The write fails before anything is durable.
    Before,
    /// The write is durable but its reply is lost.
    After,
    /// A prefix of the insert lands, then the connection breaks.
    Prefix,
}
