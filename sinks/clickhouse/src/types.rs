//! ClickHouse column types: parsing the type names a server reports, choosing the type
//! for an Arrow field when we create a table, and what each server version supports.

use arrow_schema::{DataType, Field, TimeUnit};

/// What the connected server can store; decided from `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCaps {
    pub version: (u32, u32),
}

impl ServerCaps {
    pub fn from_version(version: &str) -> Self {
        let mut parts = version
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        Self {
            version: (major, minor),
        }
    }
    /// DateTime64 arrived in 20.1; older servers keep sub-second timestamps as Int64.
    pub fn datetime64(&self) -> bool {
        self.version >= (20, 1)
    }
    /// Date32 (dates before 1970 and after 2149) arrived in 21.9.
    pub fn date32(&self) -> bool {
        self.version >= (21, 9)
    }
    /// The Bool type arrived in 21.12; before that booleans are UInt8.
    pub fn bool_type(&self) -> bool {
        self.version >= (21, 12)
    }
    /// `insert_deduplication_token` arrived in 22.2.
    pub fn dedup_token(&self) -> bool {
        self.version >= (22, 2)
    }
    /// Named tuple elements (`Tuple(a Int64)`) are accepted in DDL since 21.1.
    pub fn named_tuples(&self) -> bool {
        self.version >= (21, 1)
    }
}

/// A ClickHouse type as far as our encoder needs to understand it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChType {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Bool,
    String,
    Date,
    Date32,
    /// Seconds since the epoch, stored as UInt32.
    DateTime,
    /// Ticks of 10^-precision seconds, stored as Int64.
    DateTime64(u32),
    Decimal(u32, u32),
    Nullable(Box<ChType>),
    Array(Box<ChType>),
    /// Elements with their names (None for unnamed tuples of old servers).
    Tuple(Vec<(Option<String>, ChType)>),
}

impl ChType {
    /// Parses a type name as `system.columns` reports it, e.g.
    /// `Array(Nullable(DateTime64(3, 'UTC')))` or `Tuple(a Int64, b String)`.
    pub fn parse(text: &str) -> Result<ChType, String> {
        let (ty, rest) = parse_inner(text.trim())?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected `{rest}` in ClickHouse type `{text}`"));
        }
        Ok(ty)
    }

    pub fn is_nullable(&self) -> bool {
        matches!(self, ChType::Nullable(_))
    }
}

fn split_name(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// Splits `(a, b(c, d), 'x,y')` at top-level commas; returns the parts and what follows `)`.
fn split_args(text: &str) -> Result<(Vec<&str>, &str), String> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'(') {
        return Err(format!("expected `(` in `{text}`"));
    }
    let (mut depth, mut quoted, mut start) = (0usize, false, 1usize);
    let mut args = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' => quoted = !quoted,
            _ if quoted => {}
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(text[start..i].trim());
                    return Ok((args, &text[i + 1..]));
                }
            }
            b',' if depth == 1 => {
                args.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    Err(format!("unbalanced parentheses in `{text}`"))
}

fn parse_inner(text: &str) -> Result<(ChType, &str), String> {
    let (name, rest) = split_name(text);
    let simple = match name {
        "Int8" => Some(ChType::Int8),
        "Int16" => Some(ChType::Int16),
        "Int32" => Some(ChType::Int32),
        "Int64" => Some(ChType::Int64),
        "UInt8" => Some(ChType::UInt8),
        "UInt16" => Some(ChType::UInt16),
        "UInt32" => Some(ChType::UInt32),
        "UInt64" => Some(ChType::UInt64),
        "Float32" => Some(ChType::Float32),
        "Float64" => Some(ChType::Float64),
        "Bool" => Some(ChType::Bool),
        "String" => Some(ChType::String),
        "Date" => Some(ChType::Date),
        "Date32" => Some(ChType::Date32),
        _ => None,
    };
    if let Some(ty) = simple {
        return Ok((ty, rest));
    }
    let arg_number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("expected a number, got `{s}` in `{text}`"))
    };
    match name {
        "DateTime" => {
            if rest.starts_with('(') {
                let (_, after) = split_args(rest)?;
                Ok((ChType::DateTime, after))
            } else {
                Ok((ChType::DateTime, rest))
            }
        }
        "DateTime64" => {
            let (args, after) = split_args(rest)?;
            Ok((ChType::DateTime64(arg_number(args[0])?), after))
        }
        "Decimal" => {
            let (args, after) = split_args(rest)?;
            if args.len() != 2 {
                return Err(format!("Decimal needs (P, S) in `{text}`"));
            }
            Ok((
                ChType::Decimal(arg_number(args[0])?, arg_number(args[1])?),
                after,
            ))
        }
        "Decimal32" | "Decimal64" | "Decimal128" => {
            let (args, after) = split_args(rest)?;
            let precision = match name {
                "Decimal32" => 9,
                "Decimal64" => 18,
                _ => 38,
            };
            Ok((ChType::Decimal(precision, arg_number(args[0])?), after))
        }
        "Nullable" | "Array" => {
            let (args, after) = split_args(rest)?;
            let inner = ChType::parse(args[0])?;
            let ty = if name == "Nullable" {
                ChType::Nullable(Box::new(inner))
            } else {
                ChType::Array(Box::new(inner))
            };
            Ok((ty, after))
        }
        "Tuple" => {
            let (args, after) = split_args(rest)?;
            let mut elements = Vec::with_capacity(args.len());
            for arg in args {
                // `name Type` (named) or `Type` (unnamed): a named element has a space
                // before its type, and its first word is not itself a type.
                if let Some(quoted) = arg.strip_prefix('`') {
                    let end = quoted
                        .find('`')
                        .ok_or_else(|| format!("unclosed ` in `{text}`"))?;
                    let ty = ChType::parse(&quoted[end + 1..])?;
                    elements.push((Some(quoted[..end].to_string()), ty));
                    continue;
                }
                let (first, tail) = split_name(arg);
                let named = tail.starts_with(' ') && ChType::parse(first).is_err();
                if named {
                    elements.push((Some(first.to_string()), ChType::parse(tail)?));
                } else {
                    elements.push((None, ChType::parse(arg)?));
                }
            }
            Ok((ChType::Tuple(elements), after))
        }
        _ => Err(format!(
            "ClickHouse type `{text}` is not supported by the ingest encoder"
        )),
    }
}

/// Quotes a ClickHouse identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// The column type we create for an Arrow field on this server.
pub fn ddl_type(field: &Field, caps: ServerCaps) -> Result<String, String> {
    let base = match field.data_type() {
        DataType::Struct(fields) => struct_ddl_type(fields, field.is_nullable(), caps),
        other => base_ddl_type(other, caps),
    }
    .map_err(|e| format!("column `{}`: {e}", field.name()))?;
    // Arrays and tuples cannot be Nullable in ClickHouse: a null list is stored as an
    // empty array and a null struct as a tuple of nulls (its elements are Nullable).
    let wrap = field.is_nullable()
        && !matches!(field.data_type(), DataType::List(_) | DataType::Struct(_));
    Ok(if wrap {
        format!("Nullable({base})")
    } else {
        base
    })
}

fn base_ddl_type(data_type: &DataType, caps: ServerCaps) -> Result<String, String> {
    Ok(match data_type {
        DataType::Boolean if caps.bool_type() => "Bool".into(),
        DataType::Boolean => "UInt8".into(),
        DataType::Int8 => "Int8".into(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt16 => "UInt16".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            "String".into()
        }
        DataType::Date32 if caps.date32() => "Date32".into(),
        DataType::Date32 => "Date".into(),
        DataType::Timestamp(unit, tz) => {
            let zone = tz
                .as_deref()
                .map(clickhouse_zone)
                .map(|z| format!(", '{z}'"))
                .unwrap_or_default();
            if caps.datetime64() {
                let precision = match unit {
                    TimeUnit::Second => 0,
                    TimeUnit::Millisecond => 3,
                    TimeUnit::Microsecond => 6,
                    TimeUnit::Nanosecond => 9,
                };
                format!("DateTime64({precision}{zone})")
            } else if *unit == TimeUnit::Second {
                format!(
                    "DateTime{}",
                    zone.strip_prefix(", ")
                        .map(|z| format!("({z})"))
                        .unwrap_or_default()
                )
            } else {
                // No sub-second type before 20.1: keep exact ticks since the epoch.
                "Int64".into()
            }
        }
        DataType::Decimal128(p, s) => format!("Decimal({p}, {s})"),
        DataType::List(item) => format!("Array({})", ddl_type(item, caps)?),
        DataType::Struct(fields) => struct_ddl_type(fields, false, caps)?,
        other => return Err(format!("Arrow type {other} has no ClickHouse mapping")),
    })
}

/// A Tuple for a struct. Its scalar elements are Nullable when the field is, and always
/// when the struct itself may be null: a null struct is stored as all-null elements
/// (ClickHouse has no Nullable(Tuple)).
fn struct_ddl_type(
    fields: &arrow_schema::Fields,
    struct_nullable: bool,
    caps: ServerCaps,
) -> Result<String, String> {
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let inner = match f.data_type() {
            DataType::Struct(children) => {
                struct_ddl_type(children, struct_nullable || f.is_nullable(), caps)?
            }
            other => base_ddl_type(other, caps)?,
        };
        let scalar = !matches!(f.data_type(), DataType::List(_) | DataType::Struct(_));
        let inner = if scalar && (f.is_nullable() || struct_nullable) {
            format!("Nullable({inner})")
        } else {
            inner
        };
        if caps.named_tuples() {
            parts.push(format!("{} {inner}", quote_ident(f.name())));
        } else {
            parts.push(inner);
        }
    }
    Ok(format!("Tuple({})", parts.join(", ")))
}

/// ClickHouse knows IANA zone names and UTC, not fixed offsets: an offset zone keeps the
/// same instants and is shown in UTC.
fn clickhouse_zone(zone: &str) -> &str {
    if zone.starts_with('+') || zone.starts_with('-') || zone.eq_ignore_ascii_case("utc") {
        "UTC"
    } else {
        zone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parses_server_type_names() {
        assert_eq!(
            ChType::parse("Array(Nullable(DateTime64(3, 'UTC')))").unwrap(),
            ChType::Array(Box::new(ChType::Nullable(Box::new(ChType::DateTime64(3)))))
        );
        assert_eq!(
            ChType::parse("Tuple(a Int64, b Nullable(String))").unwrap(),
            ChType::Tuple(vec![
                (Some("a".into()), ChType::Int64),
                (Some("b".into()), ChType::Nullable(Box::new(ChType::String)))
            ])
        );
        assert_eq!(
            ChType::parse("Tuple(Int64, String)").unwrap(),
            ChType::Tuple(vec![(None, ChType::Int64), (None, ChType::String)])
        );
        assert_eq!(
            ChType::parse("Decimal64(4)").unwrap(),
            ChType::Decimal(18, 4)
        );
        assert_eq!(
            ChType::parse("Tuple(`a b` Int64)").unwrap(),
            ChType::Tuple(vec![(Some("a b".into()), ChType::Int64)])
        );
        assert_eq!(
            ChType::parse("DateTime('Europe/Paris')").unwrap(),
            ChType::DateTime
        );
    }

    #[test]
    fn maps_types_per_server_version() {
        let old = ServerCaps::from_version("18.16.1");
        let new = ServerCaps::from_version("26.9.1.1");
        let ts = Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
            false,
        );
        assert_eq!(ddl_type(&ts, new).unwrap(), "DateTime64(3, 'UTC')");
        assert_eq!(ddl_type(&ts, old).unwrap(), "Int64");
        let item = Arc::new(Field::new("element", DataType::Utf8, true));
        let tags = Field::new("tags", DataType::List(item), true);
        assert_eq!(ddl_type(&tags, new).unwrap(), "Array(Nullable(String))");
        let st = Field::new(
            "s",
            DataType::Struct(vec![Field::new("a", DataType::Int64, false)].into()),
            true,
        );
        assert_eq!(ddl_type(&st, new).unwrap(), "Tuple(`a` Nullable(Int64))");
        assert_eq!(ddl_type(&st, old).unwrap(), "Tuple(Nullable(Int64))");
        let required = Field::new("s", st.data_type().clone(), false);
        assert_eq!(ddl_type(&required, new).unwrap(), "Tuple(`a` Int64)");
    }
}
