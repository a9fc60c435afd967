//! SQL Server values (as tiberius decodes them) in the canonical text forms of
//! [`crate::packages::value`], and SQL Server types as schema value types.
//!
//! | SQL Server | text |
//! |---|---|
//! | tinyint, smallint, int, bigint | decimal digits |
//! | bit | `true` / `false` |
//! | decimal, numeric | exact digits with the column's scale (`-12.50` for decimal(9,2)) |
//! | money, smallmoney | four decimals (`12.3400`); see the note on money below |
//! | real | shortest text that reads back to the same `f32` |
//! | float | shortest text that reads back to the same `f64` |
//! | char, varchar, nchar, nvarchar, text, ntext, xml | as is |
//! | date | `YYYY-MM-DD` |
//! | time | `HH:MM:SS[.fraction]`, trailing zeros dropped |
//! | datetime, smalldatetime, datetime2 | `YYYY-MM-DDTHH:MM:SS[.fraction]` (datetime in its 1/300 s steps rounded to milliseconds, as SQL Server shows it) |
//! | datetimeoffset | local time with its offset, `...+HH:MM` |
//! | uniqueidentifier | lower-case `8-4-4-4-12` |
//! | binary, varbinary, image, timestamp/rowversion | base64 |
//! | sql_variant | the text of the value it holds |
//!
//! Money: tiberius hands money over as an `f64` (the wire holds an exact integer count of
//! 1/10000). Every amount up to ±900 billion converts back to that exact integer; beyond that the
//! last digits of the driver's `f64` are already rounded. Cast such columns to `decimal(19,4)` in
//! the query when amounts that large matter.

use crate::packages::value::{Value, special_float};
use crate::schema::ValueType;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use tiberius::{ColumnData, ColumnType};

/// Fractional digits of money and smallmoney.
const MONEY_SCALE: u32 = 4;

fn date_from_days(days: i64, epoch: (i32, u32, u32)) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(epoch.0, epoch.1, epoch.2)?.checked_add_signed(Duration::days(days))
}

fn time_from(increments: u64, scale: u8) -> Option<NaiveTime> {
    // increments of 10^-scale seconds since midnight.
    let scale = u32::from(scale.min(7));
    let per_second = 10u64.pow(scale);
    let secs = increments / per_second;
    let frac = increments % per_second;
    let nanos = frac * 10u64.pow(9 - scale);
    NaiveTime::from_num_seconds_from_midnight_opt(
        u32::try_from(secs).ok()?,
        u32::try_from(nanos).ok()?,
    )
}

fn datetime2(d: tiberius::time::DateTime2) -> Option<NaiveDateTime> {
    let date = date_from_days(i64::from(d.date().days()), (1, 1, 1))?;
    let time = time_from(d.time().increments(), d.time().scale())?;
    Some(date.and_time(time))
}

/// `datetime`: days since 1900-01-01 and 1/300 s since midnight, shown rounded to milliseconds
/// (SQL Server's own .000/.003/.007 steps).
fn legacy_datetime(days: i64, fragments: u64) -> Option<NaiveDateTime> {
    let date = date_from_days(days, (1900, 1, 1))?;
    let millis = (fragments * 10 + 1) / 3; // round(fragments * 10 / 3)
    date.and_hms_opt(0, 0, 0)?
        .checked_add_signed(Duration::milliseconds(i64::try_from(millis).ok()?))
}

/// Exact decimal text of `value / 10^scale`.
pub fn scaled_text(value: i128, scale: u32) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    if scale == 0 {
        return format!("{sign}{abs}");
    }
    let p = 10u128.pow(scale);
    format!(
        "{sign}{}.{:0width$}",
        abs / p,
        abs % p,
        width = scale as usize
    )
}

fn money_text(f: f64) -> String {
    let scaled = (f * 10f64.powi(MONEY_SCALE as i32)).round();
    scaled_text(scaled as i128, MONEY_SCALE)
}

fn f32_text(f: f32) -> String {
    special_float(f64::from(f)).map_or_else(|| f.to_string(), str::to_string)
}

/// One value in its canonical form. `column` tells money (an `f64` to tiberius) from float.
pub fn value(column: ColumnType, data: &ColumnData<'_>) -> Result<Value, String> {
    let out_of_range = || format!("a {column:?} value is out of the range connagent can write");
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, |v| Value::Decimal(f32_text(v))),
        ColumnData::F64(v) => match v {
            None => Value::Null,
            Some(v) if matches!(column, ColumnType::Money | ColumnType::Money4) => {
                Value::Decimal(money_text(*v))
            }
            Some(v) => Value::Float(*v),
        },
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v
            .as_ref()
            .map_or(Value::Null, |s| Value::Text(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, |g| Value::Guid(*g.as_bytes())),
        ColumnData::Binary(v) => v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::Decimal(scaled_text(n.value(), u32::from(n.scale())))
        }),
        ColumnData::Xml(v) => v
            .as_ref()
            .map_or(Value::Null, |x| Value::Text(x.as_ref().to_string())),
        ColumnData::DateTime(v) => match v {
            None => Value::Null,
            Some(d) => Value::DateTime(
                legacy_datetime(i64::from(d.days()), u64::from(d.seconds_fragments()))
                    .ok_or_else(out_of_range)?,
            ),
        },
        ColumnData::SmallDateTime(v) => match v {
            None => Value::Null,
            Some(d) => Value::DateTime(
                date_from_days(i64::from(d.days()), (1900, 1, 1))
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
                    .and_then(|dt| {
                        dt.checked_add_signed(Duration::minutes(i64::from(d.seconds_fragments())))
                    })
                    .ok_or_else(out_of_range)?,
            ),
        },
        ColumnData::Time(v) => match v {
            None => Value::Null,
            Some(t) => Value::Time(time_from(t.increments(), t.scale()).ok_or_else(out_of_range)?),
        },
        ColumnData::Date(v) => match v {
            None => Value::Null,
            Some(d) => Value::Date(
                date_from_days(i64::from(d.days()), (1, 1, 1)).ok_or_else(out_of_range)?,
            ),
        },
        ColumnData::DateTime2(v) => match v {
            None => Value::Null,
            Some(d) => Value::DateTime(datetime2(*d).ok_or_else(out_of_range)?),
        },
        ColumnData::DateTimeOffset(v) => match v {
            None => Value::Null,
            Some(d) => {
                // The wire holds UTC and the offset in minutes; show the local time.
                let utc = datetime2(d.datetime2()).ok_or_else(out_of_range)?;
                let offset =
                    FixedOffset::east_opt(i32::from(d.offset()) * 60).ok_or_else(out_of_range)?;
                Value::DateTimeOffset(DateTime::from_naive_utc_and_offset(utc, offset))
            }
        },
    })
}

/// The schema value type of a column type (never multi-valued in SQL Server).
pub fn value_type(column: ColumnType) -> ValueType {
    match column {
        ColumnType::Bit | ColumnType::Bitn => ValueType::Bool,
        ColumnType::Int1 => ValueType::Byte,
        ColumnType::Int2 => ValueType::Int16,
        ColumnType::Int4 => ValueType::Int32,
        ColumnType::Int8 | ColumnType::Intn => ValueType::Int64,
        ColumnType::Float4 | ColumnType::Float8 | ColumnType::Floatn => ValueType::Double,
        ColumnType::Datetime
        | ColumnType::Datetime4
        | ColumnType::Datetimen
        | ColumnType::Daten
        | ColumnType::Datetime2
        | ColumnType::DatetimeOffsetn => ValueType::DateTime,
        ColumnType::Guid => ValueType::Guid,
        ColumnType::BigVarBin | ColumnType::BigBinary | ColumnType::Image => ValueType::Binary,
        _ => ValueType::String,
    }
}

/// The schema value type of a catalog type name (`sys.types.name`, or a
/// `system_type_name` such as `nvarchar(50)`).
pub fn value_type_of_name(name: &str) -> ValueType {
    let base = name
        .split('(')
        .next()
        .unwrap_or(name)
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "bit" => ValueType::Bool,
        "tinyint" => ValueType::Byte,
        "smallint" => ValueType::Int16,
        "int" => ValueType::Int32,
        "bigint" => ValueType::Int64,
        "real" | "float" => ValueType::Double,
        "date" | "datetime" | "smalldatetime" | "datetime2" | "datetimeoffset" => {
            ValueType::DateTime
        }
        "uniqueidentifier" => ValueType::Guid,
        "binary" | "varbinary" | "image" | "timestamp" | "rowversion" => ValueType::Binary,
        _ => ValueType::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiberius::numeric::Numeric;
    use tiberius::time;

    fn text(column: ColumnType, data: ColumnData<'_>) -> String {
        value(column, &data).unwrap().to_text().into_owned()
    }

    #[test]
    fn canonical_texts() {
        assert_eq!(text(ColumnType::Int1, ColumnData::U8(Some(255))), "255");
        assert_eq!(
            text(ColumnType::Int8, ColumnData::I64(Some(i64::MIN))),
            "-9223372036854775808"
        );
        assert_eq!(text(ColumnType::Bit, ColumnData::Bit(Some(true))), "true");
        assert_eq!(
            text(
                ColumnType::Decimaln,
                ColumnData::Numeric(Some(Numeric::new_with_scale(-1250, 2)))
            ),
            "-12.50"
        );
        assert_eq!(
            text(
                ColumnType::Decimaln,
                ColumnData::Numeric(Some(Numeric::new_with_scale(5, 4)))
            ),
            "0.0005"
        );
        assert_eq!(
            text(
                ColumnType::Numericn,
                ColumnData::Numeric(Some(Numeric::new_with_scale(
                    99_999_999_999_999_999_999_999_999_999_999_999_999,
                    0
                )))
            ),
            "99999999999999999999999999999999999999"
        );
        assert_eq!(
            text(ColumnType::Money, ColumnData::F64(Some(12.34))),
            "12.3400"
        );
        assert_eq!(
            text(ColumnType::Money4, ColumnData::F64(Some(-0.0001))),
            "-0.0001"
        );
        assert_eq!(
            text(
                ColumnType::Money,
                ColumnData::F64(Some(899_999_999_999.999_9))
            ),
            "899999999999.9999"
        );
        assert_eq!(text(ColumnType::Float8, ColumnData::F64(Some(0.1))), "0.1");
        assert_eq!(text(ColumnType::Float4, ColumnData::F32(Some(0.1))), "0.1");
        assert_eq!(
            text(ColumnType::Float8, ColumnData::F64(Some(f64::NAN))),
            "NaN"
        );
        assert_eq!(
            text(
                ColumnType::Daten,
                ColumnData::Date(Some(time::Date::new(0)))
            ),
            "0001-01-01"
        );
        assert_eq!(
            text(
                ColumnType::Daten,
                ColumnData::Date(Some(time::Date::new(738_944)))
            ),
            "2024-02-29"
        );
        // datetime: 1/300 s steps shown in milliseconds (.997 for 299 fragments).
        assert_eq!(
            text(
                ColumnType::Datetime,
                ColumnData::DateTime(Some(time::DateTime::new(45_349, 299)))
            ),
            "2024-02-29T00:00:00.997"
        );
        assert_eq!(
            text(
                ColumnType::Datetime,
                ColumnData::DateTime(Some(time::DateTime::new(-1, 0)))
            ),
            "1899-12-31T00:00:00"
        );
        assert_eq!(
            text(
                ColumnType::Datetime4,
                ColumnData::SmallDateTime(Some(time::SmallDateTime::new(45_349, 61)))
            ),
            "2024-02-29T01:01:00"
        );
        let t = time::Time::new(255_091_234_567, 7);
        assert_eq!(
            text(ColumnType::Timen, ColumnData::Time(Some(t))),
            "07:05:09.1234567"
        );
        assert_eq!(
            text(
                ColumnType::Timen,
                ColumnData::Time(Some(time::Time::new(255_091, 1)))
            ),
            "07:05:09.1"
        );
        let dt2 = time::DateTime2::new(time::Date::new(738_944), time::Time::new(25_509_120, 3));
        assert_eq!(
            text(ColumnType::Datetime2, ColumnData::DateTime2(Some(dt2))),
            "2024-02-29T07:05:09.12"
        );
        // datetimeoffset: 05:05:09 UTC at +02:00 is 07:05:09+02:00.
        let utc = time::DateTime2::new(time::Date::new(738_944), time::Time::new(18_309, 0));
        assert_eq!(
            text(
                ColumnType::DatetimeOffsetn,
                ColumnData::DateTimeOffset(Some(time::DateTimeOffset::new(utc, 120)))
            ),
            "2024-02-29T07:05:09+02:00"
        );
        let g = tiberius::Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(
            text(ColumnType::Guid, ColumnData::Guid(Some(g))),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        assert_eq!(
            text(
                ColumnType::BigVarBin,
                ColumnData::Binary(Some(vec![0, 255, 16].into()))
            ),
            "AP8Q"
        );
        assert_eq!(text(ColumnType::NVarchar, ColumnData::String(None)), "");
    }

    #[test]
    fn type_names() {
        assert_eq!(value_type_of_name("nvarchar(50)"), ValueType::String);
        assert_eq!(value_type_of_name("INT"), ValueType::Int32);
        assert_eq!(value_type_of_name("datetime2(7)"), ValueType::DateTime);
        assert_eq!(value_type_of_name("varbinary(max)"), ValueType::Binary);
        assert_eq!(value_type_of_name("decimal(10,2)"), ValueType::String);
    }
}
