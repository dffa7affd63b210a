//! The words stages say to each other: every string of a closed set that an
//! event carries is an enum here. Each serialises to exactly the string the
//! `.avsc` contracts document (they are `string` fields there), so topics
//! written before these types existed stay readable, and a typo between two
//! stages is a compile error instead of a silent mismatch.

/// Defines a string enum: its variants and their wire strings (strum's
/// tables), `as_str`, `Display`, `FromStr` (listing the known values in its
/// error) and serde and JSON Schema as a plain string.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr, strum::VariantArray)]
        pub enum $name {
            $($(#[$vmeta])* #[strum(serialize = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = <Self as strum::VariantArray>::VARIANTS;

            /// The string on the wire.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| UnknownValue {
                    what: stringify!($name),
                    given: text.to_owned(),
                    known: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": [$($text),+] })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (known: {known})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub given: String,
    pub known: String,
}

wire_enum! {
    /// What happened to one field between a contract schema and a writer
    /// schema (the `kind` of a field change; the keys of a dataset's policy).
    ChangeKind {
        FieldAdded = "field_added",
        FieldRemoved = "field_removed",
        FieldRenamed = "field_renamed",
        TypeWidened = "type_widened",
        TypeChanged = "type_changed",
        NullabilityChanged = "nullability_changed",
        EnumSymbolsAdded = "enum_symbols_added",
        EnumSymbolsRemoved = "enum_symbols_removed",
        DefaultChanged = "default_changed",
        /// Avro's resolution says the contract cannot read the new schema,
        /// and no field change explains it: a person or the supervisor decides.
        Incompatible = "incompatible",
    }
}

wire_enum! {
    /// What policy decides for a change, most permissive first.
    Policy {
        /// Applied without asking anyone.
        Auto = "auto",
        /// Waits for a person's approval.
        Approve = "approve",
        /// Not applied: the records stay quarantined and the incident open.
        Block = "block",
    }
}

wire_enum! {
    /// The kind of one step of a remediation plan.
    StepKind {
        /// A statement run on the warehouse.
        Ddl = "ddl",
        /// A change of the contract's field → column mapping.
        Mapping = "mapping",
        /// A patch of the dataset's dbt properties file.
        DbtPatch = "dbt_patch",
        /// The replay of the incident's quarantined records.
        Replay = "replay",
        /// Expand/contract's middle: every row's column copied into the
        /// wider column beside it, in batches of their own short
        /// transactions, while a trigger mend installs writes both.
        Backfill = "backfill",
    }
}

wire_enum! {
    /// What a person (or policy) decided on a proposal.
    Verdict {
        Approved = "approved",
        Rejected = "rejected",
    }
}

wire_enum! {
    /// Through which channel a decision came.
    Channel {
        /// The dataset's policy, without a person.
        Policy = "policy",
        Api = "api",
        Cli = "cli",
        Slack = "slack",
        /// A merged pull request.
        Github = "github",
        /// The MCP tools `approve_proposal` and `reject_proposal`.
        Mcp = "mcp",
        /// The web console.
        Console = "console",
    }
}

wire_enum! {
    /// What a plan does to a node downstream of its table (a dbt model, test,
    /// exposure, …), mildest first.
    Impact {
        /// Reads none of the changed columns.
        None = "none",
        /// Still builds, but what it holds changes: a column's values or
        /// type, NULLs from now on, a new column through `select *`.
        Partial = "partial",
        /// mend cannot read it (a Python model, SQL it cannot parse, no
        /// compiled code): a person must look.
        Unknown = "unknown",
        /// Fails to build or its test fails: it reads a column that is
        /// renamed away, uses a column whose type it cannot take, or builds
        /// on a node that breaks.
        Breaking = "breaking",
    }
}

wire_enum! {
    /// What a DDL statement does to its table's data, cheapest first.
    CostClass {
        /// Changes the catalog only: done once its lock is taken.
        Metadata = "metadata",
        /// Reads every row under its lock (a constraint's check).
        Scan = "scan",
        /// Writes the table and its indexes anew under its lock.
        Rewrite = "rewrite",
    }
}

wire_enum! {
    /// What became of a decided plan.
    ApplicationOutcome {
        /// Applied (or applied before) and replayed.
        Applied = "applied",
        /// The database or the plan's integrity check refused it; nothing changed.
        Failed = "failed",
        /// The guardrails refused a statement; nothing changed.
        Refused = "refused",
    }
}

wire_enum! {
    /// How a supervisor run ended.
    AgentOutcome {
        /// Its plan passed the guardrails and waits for a person.
        Proposed = "proposed",
        /// Every plan it handed over was refused by the guardrails.
        Refused = "refused",
        /// It gave up (refusal, budget, no plan): a person must look.
        Escalated = "escalated",
        /// The model could not be asked (the API failed for good).
        Failed = "failed",
    }
}

wire_enum! {
    /// How a rename was proven.
    RenameProof {
        /// The new field lists the old name among its Avro aliases.
        Alias = "alias",
        /// No alias: names, types, docs and the values themselves agree.
        Similarity = "similarity",
    }
}

impl RenameProof {
    /// The proof as the plan's rule says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Alias => "Avro alias",
            Self::Similarity => "similarity (no Avro alias)",
        }
    }
}

wire_enum! {
    /// What noticed a drift.
    DetectionSource {
        /// A writer schema id the contract does not fit.
        SchemaId = "schema_id",
        Quarantine = "quarantine",
        /// A pipeline failure reported as an OpenLineage RunEvent
        /// (`POST /api/v1/lineage`).
        Openlineage = "openlineage",
        /// A person asked to undo an applied change (`mend revert`): the
        /// incident's plan moves the contract back.
        Revert = "revert",
    }
}

wire_enum! {
    /// Why a record went to quarantine. A consumer of `mend.quarantine` may
    /// meet kinds newer than it knows: read the field as a string.
    QuarantineKind {
        /// Bytes that do not follow their writer schema in a way none of the
        /// kinds below names (a bad union branch, an enum index out of range).
        Undecodable = "undecodable",
        /// Its writer schema is of the dataset's subject but does not fit the
        /// contract: schema drift (an incident heals it).
        SchemaMismatch = "schema_mismatch",
        /// A value its column cannot hold.
        ValueRejected = "value_rejected",
        /// A record without a value (a tombstone): mend never deletes rows.
        NullValue = "null_value",
        /// No dataset reads its topic.
        UnknownDataset = "unknown_dataset",
        /// Not in the Confluent wire format: no magic byte 0, or shorter than
        /// the 5-byte header.
        NotWireFormat = "not_wire_format",
        /// Its schema id is not in the registry.
        UnknownSchema = "unknown_schema",
        /// Its schema id is registered, but not under the dataset's subject.
        ForeignSchema = "foreign_schema",
        /// Its schema id is registered only under versions deleted since.
        DeletedSchema = "deleted_schema",
        /// The bytes end before the writer schema does.
        Truncated = "truncated",
        /// Bytes left over after the record the writer schema describes.
        TrailingBytes = "trailing_bytes",
        /// Larger than [`MAX_RECORD_BYTES`]: neither decoded nor copied into
        /// the quarantine event (the source topic keeps it).
        TooLarge = "too_large",
        /// A string that is not valid UTF-8.
        InvalidUtf8 = "invalid_utf8",
        /// A keyed dataset's record whose key column is null.
        MissingKey = "missing_key",
    }
}

/// The largest record (key and value) a stage decodes, and copies into its
/// quarantine event; larger ones are quarantined as
/// [`QuarantineKind::TooLarge`]. Kafka's default message limit is 1 MiB;
/// twice this (a quarantine event copies key and value) stays under what
/// mend's topics take (`max.message.bytes`, see the runtime's
/// `MAX_EVENT_BYTES`).
pub const MAX_RECORD_BYTES: usize = 2 << 20;

wire_enum! {
    /// Where an incident stands (the read model's view of its events).
    IncidentStatus {
        /// Detected or diagnosed; no plan decided yet.
        Open = "open",
        AwaitingApproval = "awaiting_approval",
        /// Policy blocked it or a person rejected it: a person must act.
        Blocked = "blocked",
        Healed = "healed",
        /// Its plan applied, but its replay left records quarantined
        /// (`application.still_quarantined` says how many, `held` why).
        Held = "held",
        /// Applying its plan failed.
        Failed = "failed",
    }
}

// Written out: the enum comes from `wire_enum!`, which derives no Default.
#[allow(clippy::derivable_impls)]
impl Default for IncidentStatus {
    fn default() -> Self {
        Self::Open
    }
}

impl Policy {
    /// Deserialised from `mend.toml` keys too, so the name is the wire string.
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_parse_back_and_unknown_ones_say_what_is_known() {
        for kind in ChangeKind::ALL {
            assert_eq!(kind.as_str().parse::<ChangeKind>(), Ok(*kind));
        }
        let error = "field_moved".parse::<ChangeKind>().unwrap_err();
        assert!(error.to_string().contains("field_added"), "{error}");
        assert_eq!(serde_json::to_string(&StepKind::DbtPatch).unwrap(), "\"dbt_patch\"");
        assert_eq!(serde_json::from_str::<Verdict>("\"approved\"").unwrap(), Verdict::Approved);
        assert!(serde_json::from_str::<Verdict>("\"maybe\"").is_err());
    }
}
