//! Which column type changes a running table may take: Iceberg's type promotions (int →
//! long, float → double, decimal precision up at the same scale), seen through Arrow.
//! One rule for the route (which writer schemas widen it) and for every sink (which
//! changes it applies), so they never disagree.

use arrow_schema::DataType;

/// Whether a column of type `from` may become `to` with every value kept exactly.
pub fn promotes(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (Float32, Float64) => true,
        (Decimal128(p, s), Decimal128(q, t)) => s == t && q > p,
        _ => false,
    }
}

/// Whether `to` keeps what `from` holds: the same type, or a promotion of it.
pub fn keeps(from: &DataType, to: &DataType) -> bool {
    from == to || promotes(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    #[test]
    fn promotions_are_icebergs() {
        assert!(promotes(&Int32, &Int64));
        assert!(promotes(&Int16, &Int32));
        assert!(promotes(&Float32, &Float64));
        assert!(promotes(&Decimal128(10, 2), &Decimal128(12, 2)));
        // Narrowing, a scale change, or another kind of type loses values.
        assert!(!promotes(&Int64, &Int32));
        assert!(!promotes(&Float64, &Float32));
        assert!(!promotes(&Int32, &Float64));
        assert!(!promotes(&Decimal128(10, 2), &Decimal128(12, 3)));
        assert!(!promotes(&Decimal128(12, 2), &Decimal128(10, 2)));
        assert!(!promotes(&Int64, &Utf8));
        assert!(!promotes(&Int32, &Int32));
        assert!(keeps(&Int32, &Int32));
    }
}
