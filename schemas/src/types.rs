//! The type expressions users write in schema files, parsed into Arrow types.
//!
//! Grammar (whitespace is free; any type may end with `?` to make it nullable):
//! ```text
//! type   := scalar | "list<" type ">" | "struct<" member ("," member)* ">"
//! member := name ":" type
//! scalar := bool | int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64
//!         | float32 | float64 | string | binary | date
//!         | "timestamp(" unit ["," zone] ")" | "decimal(" precision "," scale ")"
//! unit   := s | ms | us | ns          zone := UTC | +HH:MM | an IANA name
//! ```
//! A hand-written recursive-descent parser: the grammar is tiny and no crate parses
//! this notation, while error messages must point at the exact offending token.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};

/// A parsed type expression: the Arrow type and whether the value may be null.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub data_type: DataType,
    pub nullable: bool,
}

/// Arrow's conventional name for list elements; Iceberg and Parquet readers expect it.
pub const LIST_ITEM: &str = "element";

/// Parses a full type expression such as `list<struct<a: int64, b: string?>>?`.
pub fn parse_type(text: &str) -> Result<TypeExpr, String> {
    let mut parser = Parser { text, pos: 0 };
    let ty = parser.type_expr()?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("unexpected trailing text"));
    }
    Ok(ty)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at column {} of type `{}`", self.pos + 1, self.text)
    }

    fn skip_ws(&mut self) {
        while self.rest().starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`")))
        }
    }

    /// An identifier-like word: letters, digits, `_`, `/`, `+`, `-`, `.` (time zones).
    fn word(&mut self) -> Result<&str, String> {
        self.skip_ws();
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || "_/+-.:".contains(c)))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        self.pos += len;
        Ok(&self.text[start..self.pos])
    }

    /// A struct member name: like `word` but stops at `:`.
    fn member_name(&mut self) -> Result<String, String> {
        self.skip_ws();
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a field name"));
        }
        self.pos += len;
        Ok(self.text[start..self.pos].to_string())
    }

    fn number(&mut self) -> Result<u32, String> {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest().len());
        let digits = &self.rest()[..len];
        let value = digits
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        self.pos += len;
        Ok(value)
    }

    fn type_expr(&mut self) -> Result<TypeExpr, String> {
        self.skip_ws();
        let start = self.pos;
        let name_len = self
            .rest()
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(self.rest().len());
        let name = self.rest()[..name_len].to_ascii_lowercase();
        self.pos += name_len;
        let data_type = match name.as_str() {
            "list" => {
                self.expect("<")?;
                let item = self.type_expr()?;
                self.expect(">")?;
                DataType::List(Arc::new(Field::new(
                    LIST_ITEM,
                    item.data_type,
                    item.nullable,
                )))
            }
            "struct" => {
                self.expect("<")?;
                let mut fields = Vec::new();
                loop {
                    let member = self.member_name()?;
                    self.expect(":")?;
                    let ty = self.type_expr()?;
                    if fields.iter().any(|f: &Field| f.name() == &member) {
                        return Err(self.error(&format!("duplicate struct field `{member}`")));
                    }
                    fields.push(Field::new(member, ty.data_type, ty.nullable));
                    if !self.eat(",") {
                        break;
                    }
                }
                self.expect(">")?;
                DataType::Struct(Fields::from(fields))
            }
            "timestamp" => {
                self.expect("(")?;
                let unit_word = self.word()?.to_string();
                let unit = match unit_word.as_str() {
                    "s" => TimeUnit::Second,
                    "ms" => TimeUnit::Millisecond,
                    "us" => TimeUnit::Microsecond,
                    "ns" => TimeUnit::Nanosecond,
                    other => {
                        return Err(self.error(&format!(
                            "unknown timestamp unit `{other}` (use s, ms, us or ns)"
                        )));
                    }
                };
                let zone = if self.eat(",") {
                    Some(Arc::from(self.word()?.to_string()))
                } else {
                    None
                };
                self.expect(")")?;
                DataType::Timestamp(unit, zone)
            }
            "decimal" => {
                self.expect("(")?;
                let precision = self.number()?;
                self.expect(",")?;
                let scale = self.number()?;
                self.expect(")")?;
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(self.error(&format!(
                        "decimal({precision}, {scale}) needs 1 <= precision <= 38 and scale <= precision"
                    )));
                }
                DataType::Decimal128(precision as u8, scale as i8)
            }
            other => scalar(other).ok_or_else(|| {
                self.pos = start;
                self.error(&format!("unknown type `{other}`"))
            })?,
        };
        let nullable = self.eat("?");
        Ok(TypeExpr {
            data_type,
            nullable,
        })
    }
}

fn scalar(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" => DataType::Int32,
        "int64" | "long" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "string" => DataType::Utf8,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars_and_nullability() {
        assert_eq!(parse_type("int64").unwrap().data_type, DataType::Int64);
        assert!(parse_type("string?").unwrap().nullable);
        assert!(!parse_type("string").unwrap().nullable);
        assert_eq!(
            parse_type("decimal(18, 4)").unwrap().data_type,
            DataType::Decimal128(18, 4)
        );
        assert_eq!(
            parse_type("timestamp(us, UTC)").unwrap().data_type,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            parse_type("timestamp(ms, +02:00)").unwrap().data_type,
            DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into()))
        );
    }

    #[test]
    fn parses_nested_types() {
        let ty = parse_type("list<struct<a: int64, b: list<string?>?>>?").unwrap();
        assert!(ty.nullable);
        let DataType::List(item) = ty.data_type else {
            panic!("not a list")
        };
        let DataType::Struct(fields) = item.data_type() else {
            panic!("not a struct")
        };
        assert_eq!(fields.len(), 2);
        assert!(fields[1].is_nullable());
        assert!(matches!(fields[1].data_type(), DataType::List(_)));
    }

    #[test]
    fn reports_the_offending_token() {
        let err = parse_type("list<int65>").unwrap_err();
        assert!(err.contains("unknown type `int65`"), "{err}");
        assert!(
            parse_type("decimal(40, 2)")
                .unwrap_err()
                .contains("precision")
        );
        assert!(parse_type("int64 extra").unwrap_err().contains("trailing"));
        assert!(parse_type("timestamp(min)").unwrap_err().contains("unit"));
        assert!(
            parse_type("struct<a: int64, a: int32>")
                .unwrap_err()
                .contains("duplicate")
        );
    }
}
