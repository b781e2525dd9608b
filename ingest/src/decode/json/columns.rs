//! Column builders that read their values straight from the scanner, one per Arrow
//! type a schema file can name. Each can be cut back to a row count, so a record
//! refused half way leaves no trace ([`Record::truncate`]).
//!
//! Written by hand rather than on arrow's builders: those cannot be cut back. The
//! readings match arrow-json's, the decoder this replaced (same parse functions for
//! strings, dates, timestamps and decimals), with our strict numbers on top.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::timezone::Tz;
use arrow_array::types::*;
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, ListArray, PrimitiveArray,
    StringArray, StructArray,
};
use arrow_buffer::{BooleanBufferBuilder, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_cast::parse::{Parser, parse_decimal, string_to_datetime};
use arrow_schema::{ArrowError, DataType, FieldRef, Fields, TimeUnit};
use num_traits::NumCast;

use super::Coercions;
use super::dates;
use super::scan::{Kind, Number, Scan, Syntax};

/// Why a record was not taken.
#[derive(Debug)]
pub enum Problem {
    /// Not JSON.
    Syntax(Syntax),
    /// JSON, but not a record of the schema.
    Mismatch(String),
}

impl From<Syntax> for Problem {
    fn from(e: Syntax) -> Self {
        Problem::Syntax(e)
    }
}

impl Problem {
    /// The same problem, said of field `name`.
    fn within(self, name: &str) -> Self {
        match self {
            Problem::Mismatch(m) => Problem::Mismatch(format!("field `{name}`: {m}")),
            syntax => syntax,
        }
    }
}

/// What every value read needs beside the scanner.
pub struct Cx {
    pub coerce: Coercions,
    /// Unescaped strings that are parsed rather than kept.
    pub scratch: Vec<u8>,
    /// Unescaped field names.
    pub keys: Vec<u8>,
}

/// One column being built.
trait Column: Send {
    /// Reads the next value, which is not `null`.
    fn push(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, depth: usize) -> Result<(), Problem>;
    /// A null row (also for every field of a null struct, whatever their nullability).
    fn push_null(&mut self);
    fn truncate(&mut self, len: usize);
    /// The rows so far as an array; the column starts empty again.
    fn finish(&mut self) -> Result<ArrayRef, ArrowError>;
}

/// A column as a field of a record or the items of a list: a `null` is refused
/// unless the field is nullable.
struct Slot {
    name: String,
    nullable: bool,
    column: Box<dyn Column>,
}

impl Slot {
    fn of(field: &FieldRef) -> Result<Self, String> {
        Ok(Self {
            name: field.name().clone(),
            nullable: field.is_nullable(),
            column: column(field)?,
        })
    }

    fn read(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, depth: usize) -> Result<(), Problem> {
        if scan.peek() != Some(b'n') {
            return self.column.push(scan, cx, depth);
        }
        scan.null()?;
        if !self.nullable {
            return Err(Problem::Mismatch("null where a value is required".into()));
        }
        self.column.push_null();
        Ok(())
    }
}

fn column(field: &FieldRef) -> Result<Box<dyn Column>, String> {
    let data_type = field.data_type().clone();
    macro_rules! int {
        ($t:ty) => {
            Box::new(Primitive::<$t>::new(data_type, "a number", int::<$t>))
        };
    }
    macro_rules! float {
        ($t:ty) => {
            Box::new(Primitive::<$t>::new(data_type, "a number", float::<$t>))
        };
    }
    macro_rules! timestamp {
        ($t:ty, $zone:expr) => {{
            let zone: Tz = $zone.parse().map_err(|e: ArrowError| e.to_string())?;
            let read = move |value: Scalar<'_>, _: Coercions| timestamp::<$t>(value, &zone);
            Box::new(Primitive::<$t>::new(data_type, "a timestamp", read))
        }};
    }
    let zone = |tz: &Option<Arc<str>>| tz.as_deref().unwrap_or("+00:00").to_string();
    Ok(match field.data_type() {
        DataType::Boolean => Box::new(Bools::new()),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float!(Float32Type),
        DataType::Float64 => float!(Float64Type),
        DataType::Date32 => Box::new(Primitive::<Date32Type>::new(data_type, "a date", date)),
        DataType::Timestamp(TimeUnit::Second, tz) => timestamp!(TimestampSecondType, zone(tz)),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            timestamp!(TimestampMillisecondType, zone(tz))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            timestamp!(TimestampMicrosecondType, zone(tz))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            timestamp!(TimestampNanosecondType, zone(tz))
        }
        DataType::Decimal128(precision, scale) => {
            let (precision, scale) = (*precision, *scale);
            let read = move |value: Scalar<'_>, _: Coercions| decimal(value, precision, scale);
            Box::new(Primitive::<Decimal128Type>::new(
                data_type,
                "a decimal",
                read,
            ))
        }
        DataType::Utf8 => Box::new(Strings::new(false)),
        DataType::Binary => Box::new(Strings::new(true)),
        DataType::List(item) => Box::new(List::new(item.clone())?),
        DataType::Struct(fields) => Box::new(Record::new(fields)?),
        other => {
            return Err(format!(
                "a JSON route cannot read column `{}` of type {other}",
                field.name()
            ));
        }
    })
}

/// A scalar value as written.
#[derive(Clone, Copy)]
enum Scalar<'t> {
    Number(Number<'t>),
    String(&'t str),
}

/// How a primitive column reads a value (a number or a string) into its type.
type Read<T> = dyn Fn(Scalar<'_>, Coercions) -> Result<T, String> + Send;

/// A column of one primitive type, read by `read` from a number or a string.
struct Primitive<P: ArrowPrimitiveType> {
    data_type: DataType,
    values: Vec<P::Native>,
    nulls: NullBufferBuilder,
    /// What a value must be, for a reason ("a number").
    expected: &'static str,
    read: Box<Read<P::Native>>,
}

impl<P: ArrowPrimitiveType> Primitive<P> {
    fn new(
        data_type: DataType,
        expected: &'static str,
        read: impl Fn(Scalar<'_>, Coercions) -> Result<P::Native, String> + Send + 'static,
    ) -> Self {
        Self {
            data_type,
            values: Vec::new(),
            nulls: NullBufferBuilder::new(0),
            expected,
            read: Box::new(read),
        }
    }
}

impl<P: ArrowPrimitiveType> Column for Primitive<P> {
    fn push(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, _: usize) -> Result<(), Problem> {
        let value = match scan.kind()? {
            Kind::Number => Scalar::Number(scan.number()?),
            Kind::String => Scalar::String(scan.string(&mut cx.scratch)?),
            other => return Err(mismatch(other, self.expected)),
        };
        let value = (self.read)(value, cx.coerce).map_err(Problem::Mismatch)?;
        self.values.push(value);
        self.nulls.append_non_null();
        Ok(())
    }

    fn push_null(&mut self) {
        self.values.push(P::Native::default());
        self.nulls.append_null();
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        // The next batch is likely as large: room for it up front saves growing.
        let rows = self.values.len();
        let values = ScalarBuffer::from(fitted(std::mem::replace(
            &mut self.values,
            Vec::with_capacity(rows),
        )));
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(rows)).finish();
        let array =
            PrimitiveArray::<P>::try_new(values, nulls)?.with_data_type(self.data_type.clone());
        Ok(Arc::new(array))
    }
}

fn mismatch(found: Kind, expected: &str) -> Problem {
    Problem::Mismatch(format!(
        "{} where {expected} is expected",
        found.described()
    ))
}

fn string_for_number(text: &str) -> String {
    format!(
        "{:?} is a string where a number is expected (allow it with `coerce: [string_to_number]`)",
        text.chars().take(40).collect::<String>()
    )
}

/// An integer: a number without a fraction (`2.0` only under `integral_float_to_int`),
/// or a numeric string under `string_to_number`.
fn int<P>(value: Scalar<'_>, coerce: Coercions) -> Result<P::Native, String>
where
    P: ArrowPrimitiveType + Parser,
    P::Native: FromStr + NumCast,
{
    match value {
        Scalar::Number(Number { text, float }) => {
            if float {
                let v: f64 = text
                    .parse()
                    .map_err(|_| format!("{text} is not a number"))?;
                if v.fract() != 0.0 {
                    return Err(format!("{v} is not an integer"));
                }
                if !coerce.integral_float_to_int {
                    return Err(format!(
                        "{v} is written as a float where an integer is expected (allow it with `coerce: [integral_float_to_int]`)"
                    ));
                }
            }
            json_number::<P::Native>(text)
                .ok_or_else(|| format!("{text} is out of range for {}", P::DATA_TYPE))
        }
        Scalar::String(s) if coerce.string_to_number => {
            P::parse(s).ok_or_else(|| format!("failed to parse {s:?} as {}", P::DATA_TYPE))
        }
        Scalar::String(s) => Err(string_for_number(s)),
    }
}

/// arrow-json's reading of a number's text: as the type, else as an `f64` cast to it.
fn json_number<T: FromStr + NumCast>(text: &str) -> Option<T> {
    text.parse::<T>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().and_then(NumCast::from))
}

fn float<P>(value: Scalar<'_>, coerce: Coercions) -> Result<P::Native, String>
where
    P: ArrowPrimitiveType + Parser,
    P::Native: FromStr + num_traits::Float,
{
    match value {
        // `1e400` would be infinity: refused, as the strict check did.
        Scalar::Number(n) => n
            .text
            .parse()
            .ok()
            .filter(|v: &P::Native| num_traits::Float::is_finite(*v))
            .ok_or_else(|| format!("{} is out of range for {}", n.text, P::DATA_TYPE)),
        Scalar::String(s) if coerce.string_to_number => {
            P::parse(s).ok_or_else(|| format!("failed to parse {s:?} as {}", P::DATA_TYPE))
        }
        Scalar::String(s) => Err(string_for_number(s)),
    }
}

fn date(value: Scalar<'_>, _: Coercions) -> Result<i32, String> {
    match value {
        Scalar::Number(n) => json_number(n.text),
        Scalar::String(s) => dates::date(s).or_else(|| Date32Type::parse(s)),
    }
    .ok_or_else(|| format!("failed to parse {} as a date", text(value)))
}

fn timestamp<P: ArrowTimestampType>(value: Scalar<'_>, zone: &Tz) -> Result<i64, String> {
    let s = match value {
        Scalar::Number(n) => {
            return n
                .text
                .parse::<i64>()
                .ok()
                .or_else(|| n.text.parse::<f64>().ok().map(|x| x as i64))
                .ok_or_else(|| format!("failed to parse {} as a timestamp", n.text));
        }
        Scalar::String(s) => s,
    };
    if let Some((seconds, nanos)) = dates::utc(s) {
        let nanos = nanos as i64;
        let value = match P::UNIT {
            TimeUnit::Second => Some(seconds),
            TimeUnit::Millisecond => Some(seconds * 1_000 + nanos / 1_000_000),
            TimeUnit::Microsecond => Some(seconds * 1_000_000 + nanos / 1_000),
            TimeUnit::Nanosecond => seconds
                .checked_mul(1_000_000_000)
                .and_then(|n| n.checked_add(nanos)),
        };
        if let Some(value) = value {
            return Ok(value);
        }
    }
    let at = string_to_datetime(zone, s)
        .map_err(|e| format!("failed to parse {s:?} as a timestamp: {e}"))?;
    match P::UNIT {
        TimeUnit::Second => Ok(at.timestamp()),
        TimeUnit::Millisecond => Ok(at.timestamp_millis()),
        TimeUnit::Microsecond => Ok(at.timestamp_micros()),
        TimeUnit::Nanosecond => at
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("{s:?} overflows 64-bit nanoseconds")),
    }
}

fn decimal(value: Scalar<'_>, precision: u8, scale: i8) -> Result<i128, String> {
    parse_decimal::<Decimal128Type>(text(value), precision, scale).map_err(|e| {
        format!(
            "failed to parse {:?} as decimal({precision}, {scale}): {e}",
            text(value)
        )
    })
}

fn text(value: Scalar<'_>) -> &str {
    match value {
        Scalar::Number(n) => n.text,
        Scalar::String(s) => s,
    }
}

struct Bools {
    values: BooleanBufferBuilder,
    nulls: NullBufferBuilder,
}

impl Bools {
    fn new() -> Self {
        Self {
            values: BooleanBufferBuilder::new(0),
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl Column for Bools {
    fn push(&mut self, scan: &mut Scan<'_>, _: &mut Cx, _: usize) -> Result<(), Problem> {
        match scan.kind()? {
            Kind::Bool => self.values.append(scan.bool()?),
            other => return Err(mismatch(other, "a boolean")),
        }
        self.nulls.append_non_null();
        Ok(())
    }

    fn push_null(&mut self) {
        self.values.append(false);
        self.nulls.append_null();
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let rows = self.values.len();
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(rows)).finish();
        Ok(Arc::new(BooleanArray::new(self.values.finish(), nulls)))
    }
}

/// Text, or bytes written as hex text (`binary`, as arrow-json reads it).
struct Strings {
    binary: bool,
    offsets: Vec<i32>,
    data: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Strings {
    fn new(binary: bool) -> Self {
        Self {
            binary,
            offsets: vec![0],
            data: Vec::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }

    fn end_row(&mut self) -> Result<(), Problem> {
        let end = i32::try_from(self.data.len())
            .map_err(|_| Problem::Mismatch("more than 2 GiB of text in one chunk".into()))?;
        self.offsets.push(end);
        Ok(())
    }
}

impl Column for Strings {
    fn push(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, _: usize) -> Result<(), Problem> {
        match scan.kind()? {
            Kind::String if self.binary => {
                let hex = scan.string(&mut cx.scratch)?;
                unhex(hex, &mut self.data).map_err(Problem::Mismatch)?;
            }
            Kind::String => scan.string_into(&mut self.data)?,
            other if self.binary => return Err(mismatch(other, "a hex string")),
            other => return Err(mismatch(other, "a string")),
        }
        self.nulls.append_non_null();
        self.end_row()
    }

    fn push_null(&mut self) {
        self.offsets
            .push(*self.offsets.last().expect("starts with 0"));
        self.nulls.append_null();
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        self.data.truncate(self.offsets[len] as usize);
        self.nulls.truncate(len);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (rows, bytes) = (self.offsets.len(), self.data.len());
        let offsets = fitted(std::mem::replace(&mut self.offsets, starts(rows)));
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let data = fitted(std::mem::replace(&mut self.data, Vec::with_capacity(bytes))).into();
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(rows)).finish();
        Ok(if self.binary {
            Arc::new(BinaryArray::try_new(offsets, data, nulls)?)
        } else {
            // SAFETY: the offsets only grow, each ends a value, and every value was
            // checked to be UTF-8 when it was read (`Scan::string_into`).
            Arc::new(unsafe { StringArray::new_unchecked(offsets, data, nulls) })
        })
    }
}

/// `values` without room to spare: an array keeps its buffer's whole allocation for
/// as long as a lane holds the batch.
fn fitted<T>(mut values: Vec<T>) -> Vec<T> {
    values.shrink_to_fit();
    values
}

/// Offsets for up to `rows` rows, the first one in.
fn starts(rows: usize) -> Vec<i32> {
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0);
    offsets
}

/// Hex text as bytes, appended to `out`; an odd last digit is a byte of its own (as
/// arrow-json reads it).
fn unhex(hex: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let not_hex = || format!("{:?} is not hex", hex.chars().take(40).collect::<String>());
    let pairs = hex.as_bytes().chunks_exact(2);
    if let [last] = pairs.remainder() {
        out.reserve(hex.len() / 2 + 1);
        let last = digit(*last).ok_or_else(not_hex)?;
        for pair in pairs {
            let (high, low) = digit(pair[0]).zip(digit(pair[1])).ok_or_else(not_hex)?;
            out.push(high << 4 | low);
        }
        out.push(last);
        return Ok(());
    }
    for pair in pairs {
        let (high, low) = digit(pair[0]).zip(digit(pair[1])).ok_or_else(not_hex)?;
        out.push(high << 4 | low);
    }
    Ok(())
}

struct List {
    field: FieldRef,
    offsets: Vec<i32>,
    item: Slot,
    nulls: NullBufferBuilder,
}

impl List {
    fn new(field: FieldRef) -> Result<Self, String> {
        Ok(Self {
            item: Slot::of(&field)?,
            field,
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
        })
    }

    fn items(&self) -> usize {
        *self.offsets.last().expect("starts with 0") as usize
    }
}

impl Column for List {
    fn push(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, depth: usize) -> Result<(), Problem> {
        match scan.kind()? {
            Kind::Array => {}
            other => return Err(mismatch(other, "an array")),
        }
        scan.nest(depth)?;
        scan.expect(b'[', "expected `[`")?;
        let mut items = self.items();
        if !scan.eat(b']') {
            loop {
                self.item.read(scan, cx, depth + 1)?;
                items += 1;
                if !scan.more(b']')? {
                    break;
                }
            }
        }
        let end = i32::try_from(items)
            .map_err(|_| Problem::Mismatch("more than 2^31 list items in one chunk".into()))?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn push_null(&mut self) {
        self.offsets
            .push(*self.offsets.last().expect("starts with 0"));
        self.nulls.append_null();
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        self.item.column.truncate(self.items());
        self.nulls.truncate(len);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let rows = self.offsets.len();
        let offsets = std::mem::replace(&mut self.offsets, starts(rows));
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let items = self.item.column.finish()?;
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(rows)).finish();
        Ok(Arc::new(ListArray::try_new(
            self.field.clone(),
            offsets,
            items,
            nulls,
        )?))
    }
}

/// The fields of an object: the top-level record, or a struct column. Names are
/// matched against the field after the last one found first (payloads mostly keep
/// one order), then looked up.
pub struct Record {
    fields: Fields,
    slots: Vec<Slot>,
    /// Each field's name in quotes, as JSON writes it when it needs no escape.
    quoted: Vec<Option<Box<[u8]>>>,
    index: HashMap<Box<[u8]>, usize>,
    /// Which fields the object being read has given.
    seen: Vec<bool>,
    nulls: NullBufferBuilder,
    len: usize,
}

impl Record {
    pub fn new(fields: &Fields) -> Result<Self, String> {
        let names: Vec<Box<[u8]>> = fields.iter().map(|f| f.name().as_bytes().into()).collect();
        Ok(Self {
            slots: fields.iter().map(Slot::of).collect::<Result<_, _>>()?,
            quoted: names
                .iter()
                .map(|n| {
                    let plain = !n.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
                    plain.then(|| [&b"\""[..], n, b"\""].concat().into())
                })
                .collect(),
            index: names.iter().cloned().zip(0..).collect(),
            seen: vec![false; names.len()],
            fields: fields.clone(),
            nulls: NullBufferBuilder::new(0),
            len: 0,
        })
    }

    /// Rows read so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads one object as a row. On an error some columns may hold part of it:
    /// [`Record::truncate`] takes it back.
    pub fn object(
        &mut self,
        scan: &mut Scan<'_>,
        cx: &mut Cx,
        depth: usize,
    ) -> Result<(), Problem> {
        match scan.kind()? {
            Kind::Object => {}
            other => return Err(mismatch(other, "an object")),
        }
        scan.nest(depth)?;
        scan.expect(b'{', "expected `{`")?;
        self.seen.fill(false);
        let mut guess = 0;
        if !scan.eat(b'}') {
            loop {
                // Most payloads keep one order: the next field's name, quoted, is
                // compared with the bytes first; any other name is read and looked up.
                let found = match self.quoted.get(guess) {
                    Some(Some(quoted)) if scan.eat_exactly(quoted) => Some(guess),
                    _ => self
                        .index
                        .get(scan.string(&mut cx.keys)?.as_bytes())
                        .copied(),
                };
                scan.expect(b':', "expected `:`")?;
                match found {
                    Some(i) => {
                        let slot = &mut self.slots[i];
                        if self.seen[i] {
                            // A repeated name: the last value counts (as in
                            // arrow-json), and every value must be one of the field's.
                            slot.column.truncate(self.len);
                        }
                        slot.read(scan, cx, depth + 1)
                            .map_err(|e| e.within(&slot.name))?;
                        self.seen[i] = true;
                        guess = i + 1;
                    }
                    None => scan.skip(depth + 1)?,
                }
                if !scan.more(b'}')? {
                    break;
                }
            }
        }
        for (slot, seen) in self.slots.iter_mut().zip(&self.seen) {
            if !seen {
                if !slot.nullable {
                    return Err(Problem::Mismatch(format!(
                        "field `{}` is missing",
                        slot.name
                    )));
                }
                slot.column.push_null();
            }
        }
        self.nulls.append_non_null();
        self.len += 1;
        Ok(())
    }

    pub fn truncate(&mut self, len: usize) {
        for slot in &mut self.slots {
            slot.column.truncate(len);
        }
        self.nulls.truncate(len);
        self.len = len;
    }

    /// Every field's rows so far; the record starts empty again.
    pub fn columns(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        self.nulls = NullBufferBuilder::new(0);
        self.len = 0;
        self.slots.iter_mut().map(|s| s.column.finish()).collect()
    }
}

impl Column for Record {
    fn push(&mut self, scan: &mut Scan<'_>, cx: &mut Cx, depth: usize) -> Result<(), Problem> {
        self.object(scan, cx, depth)
    }

    fn push_null(&mut self) {
        for slot in &mut self.slots {
            slot.column.push_null();
        }
        self.nulls.append_null();
        self.len += 1;
    }

    fn truncate(&mut self, len: usize) {
        Record::truncate(self, len);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let nulls = self.nulls.finish();
        let len = self.len;
        let columns = self.columns()?;
        let array = if columns.is_empty() {
            StructArray::try_new_with_length(self.fields.clone(), columns, nulls, len)?
        } else {
            StructArray::try_new(self.fields.clone(), columns, nulls)?
        };
        Ok(Arc::new(array))
    }
}
