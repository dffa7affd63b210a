//! Sharing a stage's partitions among its processes without a group
//! coordinator (assign mode, `MEND_INSTANCE=k/N`), as Flink and Spark
//! assign Kafka partitions themselves.
//!
//! Partition `i` of the stage's sorted partitions belongs to instance
//! `i mod N`. Every instance publishes a heartbeat to [`TOPIC`] each
//! [`BEAT`], naming the partitions it holds, and reads everyone's. An
//! instance silent for [`LEASE`] is gone: the living share its partitions
//! (`i` goes to the `i mod L`-th of the `L` living) until it beats again.
//! A partition is taken only once no living instance's latest heartbeat
//! holds it, and given up between batches, after its stored offsets are
//! committed; so one partition is read by one process at a time and its
//! records stay in order. An instance that could not beat for a lease (a
//! paused process, a lost broker) gives up everything before its next batch.
//! The loader's offset bookkeeping refuses a batch another process has
//! loaded meanwhile, so even a pause within a batch loads nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka;

/// The topic of the heartbeats.
pub const TOPIC: &str = "mend.instances";
/// How often an instance beats (and at once when what it holds changes).
pub const BEAT: Duration = Duration::from_secs(1);
/// How often a runner looks whether its share changed.
pub const LOOK: Duration = Duration::from_millis(200);
/// How long an instance may be silent before the others take its partitions.
pub const LEASE: Duration = Duration::from_secs(6);

/// Which of a stage's processes this is: `k/N`, the k-th of N (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// From 0.
    pub index: u32,
    pub count: u32,
}

impl Default for Instance {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Instance {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not k/N with 1 ≤ k ≤ N (for example 2/3)");
        let (k, n) = text.split_once('/').ok_or_else(invalid)?;
        let (k, n): (u32, u32) = (k.trim().parse().map_err(|_| invalid())?, n.trim().parse().map_err(|_| invalid())?);
        if k == 0 || k > n {
            return Err(invalid());
        }
        Ok(Self { index: k - 1, count: n })
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

/// A partition of a stage's topics.
pub type Part = (String, i32);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Heartbeat {
    group: String,
    instance: u32,
    of: u32,
    held: Vec<Part>,
}

/// What one instance knows of the others: each one's latest heartbeat.
#[derive(Debug, Default)]
struct View {
    /// Per instance index: when it last beat (ms since the epoch) and what it held.
    beats: HashMap<u32, (i64, Vec<Part>)>,
    /// When this instance's own last heartbeat was delivered.
    delivered: i64,
    /// Whether the heartbeats written before this instance started are read.
    caught_up: bool,
}

/// An instance's membership: heartbeats sent and read on a thread of its own.
pub(crate) struct Membership {
    group: String,
    me: Instance,
    started: i64,
    view: Arc<Mutex<View>>,
    held: Arc<Mutex<BTreeSet<Part>>>,
    /// Set when `held` changed: the next heartbeat goes at once.
    changed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)
}

impl Membership {
    /// Starts beating for instance `me` of the stage whose group is `group`.
    pub(crate) fn start(
        brokers: &str,
        broker: crate::compat::BrokerProfile,
        group: &str,
        me: Instance,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer: BaseProducer = kafka::producer_config(brokers, broker).set("linger.ms", "0").create()?;
        let reader: BaseConsumer = kafka::reader_config(brokers, 100)
            .set("group.id", format!("mend-instances-{}", uuid::Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .create()?;
        let membership = Self {
            group: group.to_owned(),
            me,
            started: now_ms(),
            view: Arc::default(),
            held: Arc::default(),
            changed: Arc::default(),
            stop: Arc::default(),
        };
        let beats = Beats {
            group: group.to_owned(),
            me,
            view: membership.view.clone(),
            held: membership.held.clone(),
            changed: membership.changed.clone(),
            stop: membership.stop.clone(),
        };
        std::thread::Builder::new()
            .name(format!("beat-{group}"))
            .spawn(move || beats.run(&producer, &reader))
            .map_err(|e| rdkafka::error::KafkaError::Subscription(format!("starting the heartbeat thread: {e}")))?;
        Ok(membership)
    }

    /// The partitions this instance should hold now, out of `all` (sorted),
    /// and whether it may start those it does not hold yet (no living
    /// instance holds them). Empty until the earlier heartbeats are read,
    /// and when its own heartbeats have not been delivered for a lease.
    pub(crate) fn wanted(&self, all: &[Part]) -> (BTreeSet<Part>, BTreeSet<Part>) {
        let view = self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms();
        if !view.caught_up || now - view.delivered.max(self.started) > lease_ms() {
            return (BTreeSet::new(), BTreeSet::new());
        }
        // Until a lease has passed since this instance started, one not
        // heard from yet is presumed alive (it may be starting too).
        let presume = now - self.started < lease_ms();
        let alive = |index: u32| {
            index == self.me.index || view.beats.get(&index).map_or(presume, |(at, _)| now - at <= lease_ms())
        };
        let living: Vec<u32> = (0..self.me.count).filter(|i| alive(*i)).collect();
        let owned: BTreeSet<Part> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let preferred = u32::try_from(*i % self.me.count as usize).unwrap_or(0);
                let owner = if alive(preferred) { preferred } else { living[*i % living.len()] };
                owner == self.me.index
            })
            .map(|(_, part)| part.clone())
            .collect();
        let taken_elsewhere: BTreeSet<&Part> = view
            .beats
            .iter()
            .filter(|(index, (at, _))| **index != self.me.index && now - at <= lease_ms())
            .flat_map(|(_, (_, held))| held)
            .collect();
        let free = owned.iter().filter(|p| !taken_elsewhere.contains(p)).cloned().collect();
        (owned, free)
    }

    /// Announces what this instance holds (sent with its next heartbeat).
    pub(crate) fn hold(&self, parts: &BTreeSet<Part>) {
        *self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = parts.clone();
        self.changed.store(true, Ordering::Relaxed);
    }
}

/// A runner's share of its stage's partitions, kept up to date between
/// batches.
pub(crate) struct Share {
    membership: Membership,
    /// Every partition of the stage's topics, sorted.
    all: Vec<Part>,
    at_end: Vec<String>,
    held: BTreeSet<Part>,
}

impl Share {
    pub(crate) fn new(membership: Membership, mut all: Vec<Part>, at_end: Vec<String>) -> Self {
        all.sort();
        Self { membership, all, at_end, held: BTreeSet::new() }
    }

    /// Whether this instance reads `topic`'s `partition` now.
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.held.iter().any(|(t, p)| t == topic && *p == partition)
    }

    /// Gives up the partitions this instance should no longer hold (their
    /// stored offsets committed first) and takes the free ones it should,
    /// from their committed offsets. A failed step (the broker away) is
    /// logged and tried again at the next call.
    pub(crate) async fn rebalance<C>(&mut self, consumer: &Arc<C>)
    where
        C: Consumer<crate::status::RunnerContext> + Send + Sync + 'static,
    {
        let (owned, free) = self.membership.wanted(&self.all);
        let give_up: BTreeSet<Part> = self.held.difference(&owned).cloned().collect();
        let take: BTreeSet<Part> = free.difference(&self.held).cloned().collect();
        if !give_up.is_empty() {
            let (consumer, parts) = (consumer.clone(), give_up.clone());
            let given = tokio::task::spawn_blocking(move || {
                // What was stored is committed before another instance reads
                // the committed offsets (nothing stored is no failure).
                let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                consumer.incremental_unassign(&list(&parts))
            })
            .await;
            match given {
                Ok(Ok(())) => self.changed(|held| held.retain(|p| !give_up.contains(p)), "gave up", give_up.len()),
                Ok(Err(error)) => tracing::warn!(%error, "cannot give up partitions; trying again"),
                Err(error) => tracing::warn!(%error, "cannot give up partitions; trying again"),
            }
        }
        if !take.is_empty() {
            let (consumer, parts, at_end) = (consumer.clone(), take.clone(), self.at_end.clone());
            let taken = tokio::task::spawn_blocking(move || {
                let start = crate::collect::start_offsets(consumer.as_ref(), list(&parts), &at_end)?;
                consumer.incremental_assign(&start)
            })
            .await;
            match taken {
                Ok(Ok(())) => self.changed(|held| held.extend(take.iter().cloned()), "took", take.len()),
                Ok(Err(error)) => tracing::warn!(%error, "cannot take partitions; trying again"),
                Err(error) => tracing::warn!(%error, "cannot take partitions; trying again"),
            }
        }
    }

    fn changed(&mut self, change: impl FnOnce(&mut BTreeSet<Part>), what: &str, count: usize) {
        change(&mut self.held);
        self.membership.hold(&self.held);
        tracing::info!(
            group = %self.membership.group, instance = %self.membership.me, count, holds = self.held.len(),
            "{what} partitions"
        );
    }
}

fn list(parts: &BTreeSet<Part>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in parts {
        list.add_partition(topic, *partition);
    }
    list
}

/// What the heartbeat thread shares with its [`Membership`].
struct Beats {
    group: String,
    me: Instance,
    view: Arc<Mutex<View>>,
    held: Arc<Mutex<BTreeSet<Part>>>,
    changed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Beats {
    /// The heartbeat thread: beats every [`BEAT`] (at once when what the
    /// instance holds changed) and reads every heartbeat.
    fn run(&self, producer: &BaseProducer, reader: &BaseConsumer) {
        let view = || self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut end = None;
        let mut next_beat = std::time::Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if end.is_none() {
                end = start_reading(reader);
            }
            if std::time::Instant::now() >= next_beat || self.changed.swap(false, Ordering::Relaxed) {
                next_beat = std::time::Instant::now() + BEAT;
                let heartbeat = Heartbeat {
                    group: self.group.clone(),
                    instance: self.me.index,
                    of: self.me.count,
                    held: self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect(),
                };
                if let Ok(payload) = serde_json::to_vec(&heartbeat) {
                    let sent = producer.send(BaseRecord::<str, [u8]>::to(TOPIC).key(&self.group).payload(&payload));
                    if sent.is_ok() && producer.flush(Duration::from_secs(2)).is_ok() {
                        view().delivered = now_ms();
                    }
                }
            }
            let Some(end) = end else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            if end == 0 {
                view().caught_up = true;
            }
            while let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) {
                let mut view = view();
                if message.offset() + 1 >= end {
                    view.caught_up = true;
                }
                if message.key() != Some(self.group.as_bytes()) {
                    continue;
                }
                let Some(heartbeat) = message.payload().and_then(|p| serde_json::from_slice::<Heartbeat>(p).ok())
                else {
                    continue;
                };
                let at = message.timestamp().to_millis().unwrap_or_else(now_ms);
                if heartbeat.group == self.group && heartbeat.of == self.me.count {
                    view.beats.insert(heartbeat.instance, (at, heartbeat.held));
                }
            }
        }
    }
}

/// Starts reading the heartbeats of the last two leases; returns the log's
/// end when the reading starts (read up to it, the view is complete).
fn start_reading(reader: &BaseConsumer) -> Option<i64> {
    let timeout = Duration::from_secs(5);
    let (_, end) = reader.fetch_watermarks(TOPIC, 0, timeout).ok()?;
    let mut since = TopicPartitionList::new();
    since.add_partition_offset(TOPIC, 0, Offset::Offset(now_ms() - 2 * lease_ms())).ok()?;
    let start = reader.offsets_for_times(since, timeout).ok()?;
    let offset = match start.elements().first()?.offset() {
        Offset::Offset(offset) => offset,
        _ => end,
    };
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(TOPIC, 0, Offset::Offset(offset)).ok()?;
    reader.assign(&list).ok()?;
    Some(if offset >= end { 0 } else { end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_parse_as_k_of_n() {
        assert_eq!("2/3".parse::<Instance>(), Ok(Instance { index: 1, count: 3 }));
        assert_eq!("1/1".parse::<Instance>(), Ok(Instance::default()));
        for bad in ["0/3", "4/3", "3", "a/b", "/", "1/0"] {
            assert!(bad.parse::<Instance>().is_err(), "{bad}");
        }
        assert_eq!(Instance { index: 1, count: 3 }.to_string(), "2/3");
    }
}
