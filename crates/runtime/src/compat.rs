//! Where brokers differ, and the one setting that chooses: `MEND_BROKER`
//! (`--broker`). Every broker-specific choice mend makes is here, with its
//! reason; general code reads [`BrokerProfile`]'s answers.
//!
//! - `kafka` (any Apache-Kafka cluster): Kafka's defaults. Stages join their
//!   consumer groups (`group` mode: run more processes of a stage to share
//!   its partitions) and fetches wait librdkafka's default 500 ms, which
//!   costs no latency because Kafka answers as soon as records arrive.
//! - `tansu` (the local Tansu 0.6 broker of `make infra-up`; the default,
//!   because the embedded defaults point at it):
//!   - **assign mode.** Tansu 0.6's group coordinator can leave a group
//!     without a consumer: a member restarted while its killed predecessor is
//!     still within the session timeout becomes the leader without being told
//!     and gets an empty assignment forever, and a member leaving during a
//!     rebalance leaves a leader nothing replaces (read in
//!     `tansu-broker/src/coordinator/group/administrator.rs`, confirmed in its
//!     logs). So each stage process reads every partition of its topics from
//!     its group's committed offsets without joining the group (Tansu
//!     accepts commits without membership): one process per stage.
//!   - **a 25 ms fetch wait.** Tansu sleeps after every fetch, even one that
//!     found records, for the fetch wait (half of it from 250 ms up; read in
//!     `tansu-storage` `service/fetch.rs`). At librdkafka's 500 ms a
//!     consumer of the `memory://` broker reads about 240k small records/s;
//!     at 50 ms 740k, at 25 ms 940k (plain rdkafka consumer, 300,000 records
//!     of 60 bytes), and the bench's added field heals in 1.2–1.4 s at 25 ms
//!     against 1.8–2.3 s at 500 ms. The cost is broker work while idle: an
//!     idle `mend up` keeps Tansu at 56% of a core at 25 ms, 34% at 50 ms,
//!     14% at 500 ms.
//!   - **producers without idempotence, one request in flight.** After a
//!     broker restart, Tansu 0.6's check of an idempotent producer's
//!     sequence (`tansu-storage` `lite.rs`, `idempotent_message_check`)
//!     can find no row and panic its storage task; from then on every
//!     produce fails with `UnableToSend` until the broker is restarted again
//!     (seen in the chaos test, `tests/tests/chaos.rs`, three seconds after
//!     a restart). Without idempotence that code never runs. One request in
//!     flight per connection keeps a retried batch in order, which is what
//!     idempotence gave mend; a retry may write a record twice, which mend's
//!     consumers already take (at least once, idempotent effects).
//!
//! `MEND_CONSUMER_MODE` and `MEND_FETCH_WAIT_MS` override the profile's
//! answers one by one.
//!
//! Two choices that started as Tansu workarounds hold for every broker and
//! live with the code they shape: replays read quarantined bytes from the
//! warehouse (a replay costs the incident's records, not a scan of
//! `mend.quarantine`; on Tansu a fetch from offset 0 of a large topic also
//! stalls every other request), and the applier's group starts
//! `mend.quarantine` at its end (it only needs records quarantined after it
//! started; earlier ones are replayed from the warehouse).

/// Which broker mend talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerProfile {
    /// An Apache-Kafka cluster (or any broker with a complete group
    /// coordinator): Kafka's defaults.
    Kafka,
    /// Tansu 0.6, the local broker: assign mode and a short fetch wait.
    #[default]
    Tansu,
}

/// How a runner gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumerMode {
    /// Joins its consumer group, which shares the partitions among every
    /// process running the stage (scale a stage by running more of it).
    Group,
    /// Reads every partition of its topics itself, from its consumer group's
    /// committed offsets, without joining the group: one process per stage.
    /// Offsets, delivery and exactly-once effects are the same as in group
    /// mode.
    Assign,
}

impl BrokerProfile {
    /// How stages get their partitions on this broker.
    pub fn consumer_mode(self) -> ConsumerMode {
        match self {
            Self::Kafka => ConsumerMode::Group,
            Self::Tansu => ConsumerMode::Assign,
        }
    }

    /// Whether producers are idempotent (Kafka's default); without it, one
    /// request in flight per connection keeps records in order.
    pub fn idempotent_producer(self) -> bool {
        match self {
            Self::Kafka => true,
            Self::Tansu => false,
        }
    }

    /// Longest a stage's fetch waits for records, in milliseconds.
    pub fn fetch_wait_ms(self) -> u32 {
        match self {
            Self::Kafka => 500,
            Self::Tansu => 25,
        }
    }
}

/// The fetch wait of short reads (read models, evidence samples, replays of
/// old records): short, so a scan that reaches the end of a partition
/// returns at once on any broker.
pub const SCAN_FETCH_WAIT_MS: u32 = 25;
