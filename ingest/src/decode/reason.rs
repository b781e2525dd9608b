//! Why a record is refused, and the record kept whole for the dead-letter topic.
//!
//! The class is a small fixed set: it labels the `/metrics` counter of dead letters
//! (bounded label values), travels in the `ingest.error.class` header and is what
//! `ingest dlq replay --reason` selects on. The text says what exactly was wrong.

/// What kind of failure refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// No payload at all.
    Empty,
    /// Bytes the format cannot read (invalid JSON, Avro, Protobuf, a broken framing).
    Undecodable,
    /// The payload names a schema id the registry does not have.
    UnknownSchema,
    /// The registry's schema for the id cannot be used (another format, a missing
    /// reference, it does not compile).
    UnreadableSchema,
    /// The record is readable but does not fit the route's schema.
    SchemaMismatch,
    /// A writer schema version the route's tables cannot take (`on_incompatible:
    /// dead_letter`).
    IncompatibleSchema,
    /// A value some sink of the route cannot store (out of a column's range).
    CannotStore,
    /// Key and value together over the route's `max_message_bytes`.
    TooLarge,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        Self::Empty,
        Self::Undecodable,
        Self::UnknownSchema,
        Self::UnreadableSchema,
        Self::SchemaMismatch,
        Self::IncompatibleSchema,
        Self::CannotStore,
        Self::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Undecodable => "undecodable",
            Self::UnknownSchema => "unknown_schema",
            Self::UnreadableSchema => "unreadable_schema",
            Self::SchemaMismatch => "schema_mismatch",
            Self::IncompatibleSchema => "incompatible_schema",
            Self::CannotStore => "cannot_store",
            Self::TooLarge => "too_large",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: its class and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub class: ErrorClass,
    pub text: String,
}

impl Reason {
    pub fn new(class: ErrorClass, text: impl Into<String>) -> Self {
        Self {
            class,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A record's own headers, kept for its dead letter.
pub type OriginalHeaders = Vec<(String, Option<Vec<u8>>)>;

/// A record that could not be decoded, kept whole for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: OriginalHeaders,
    /// The writer schema id the payload names, when its format has one.
    pub schema_id: Option<u32>,
    pub class: ErrorClass,
    pub error: String,
}
