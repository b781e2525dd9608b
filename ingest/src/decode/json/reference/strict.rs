//! Strict JSON: arrow-json takes `"7"` and `2.5` for an integer column (storing 2) and
//! `"1.5"` for a float one; a record whose number is not a number of the field's kind is
//! refused here before arrow-json sees it. The coercions a route may want are opt-in
//! (`coerce:`). Written by hand because arrow-json has no switch for it; serde_json walks
//! the record once, looking only at the numeric fields of the schema.

use std::borrow::Cow;
use std::fmt;

use arrow_schema::{DataType, Fields};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::super::Coercions;

/// What a field's value must be.
#[derive(Debug)]
enum Rule {
    Int,
    Float,
    Record(Record),
    List(Box<Rule>),
    /// Checked by arrow-json alone.
    Any,
}

/// The rules of an object's fields (fields without one are left out). A list: records
/// have few checked fields, and comparing short names beats hashing them.
#[derive(Debug, Default)]
struct Record(Vec<(Box<str>, Rule)>);

impl Record {
    fn get(&self, name: &str) -> Option<&Rule> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, r)| r)
    }
}

/// The checks of one payload schema.
#[derive(Debug)]
pub struct Strict(Rule);

impl Strict {
    pub fn of(fields: &Fields) -> Self {
        Self(Rule::Record(record(fields)))
    }

    /// Whether no field needs a check (then none is made).
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, Rule::Record(r) if r.0.is_empty())
    }

    /// Ok when every checked value is of its field's kind.
    pub fn check(&self, payload: &[u8], coerce: Coercions) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let seed = Seed {
            rule: &self.0,
            coerce,
        };
        // Malformed JSON is arrow-json's to report: only our own refusals count here.
        match seed.deserialize(&mut de) {
            Err(e) if e.is_data() => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}

fn record(fields: &Fields) -> Record {
    Record(
        fields
            .iter()
            .map(|f| (f.name().as_str().into(), rule(f.data_type())))
            .filter(|(_, r)| !matches!(r, Rule::Any))
            .collect(),
    )
}

fn rule(data_type: &DataType) -> Rule {
    match data_type {
        t if t.is_integer() => Rule::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Rule::Float,
        DataType::Struct(fields) => match record(fields) {
            r if r.0.is_empty() => Rule::Any,
            r => Rule::Record(r),
        },
        DataType::List(item) | DataType::LargeList(item) => match rule(item.data_type()) {
            Rule::Any => Rule::Any,
            item => Rule::List(Box::new(item)),
        },
        _ => Rule::Any,
    }
}

#[derive(Clone, Copy)]
struct Seed<'r> {
    rule: &'r Rule,
    coerce: Coercions,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        match self.rule {
            Rule::Any => de.deserialize_ignored_any(IgnoredAny).map(drop),
            _ => de.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value of the field's type")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.rule {
            Rule::Int if v.fract() == 0.0 && self.coerce.integral_float_to_int => Ok(()),
            Rule::Int if v.fract() == 0.0 => Err(E::custom(format!(
                "{v} is written as a float where an integer is expected (allow it with `coerce: [integral_float_to_int]`)"
            ))),
            Rule::Int => Err(E::custom(format!("{v} is not an integer"))),
            _ => Ok(()),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.rule {
            Rule::Int | Rule::Float if !self.coerce.string_to_number => Err(E::custom(format!(
                "{:?} is a string where a number is expected (allow it with `coerce: [string_to_number]`)",
                v.chars().take(40).collect::<String>()
            ))),
            _ => Ok(()),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.rule {
            Rule::List(item) => {
                let seed = Seed {
                    rule: item,
                    coerce: self.coerce,
                };
                while seq.next_element_seed(seed)?.is_some() {}
            }
            _ => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let record = match self.rule {
            Rule::Record(r) => Some(r),
            _ => None,
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match record.and_then(|r| r.get(&key)) {
                Some(rule) => {
                    let seed = Seed {
                        rule,
                        coerce: self.coerce,
                    };
                    map.next_value_seed(seed)
                        .map_err(|e| de::Error::custom(format!("field `{key}`: {e}")))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the payload unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}
