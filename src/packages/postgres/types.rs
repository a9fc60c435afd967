//! PostgreSQL binary values (as sent by `COPY ... (FORMAT binary)`) → connagent values, in the
//! canonical text forms of `value.rs`. Types without a decoder here are refused with a clear
//! error naming the column and a way out (cast it in the query).

use crate::packages::value::Value;
use chrono::{Duration as ChronoDuration, NaiveDate, NaiveDateTime, NaiveTime};
use postgres_protocol::types as pt;
use postgres_types::{Kind, Type};

/// 2000-01-01, PostgreSQL's epoch.
fn pg_epoch_date() -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(2000, 1, 1)
}

/// An exact decimal string from NUMERIC's binary form.
pub fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let rd = |i: usize| -> Result<u16, String> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = rd(0)? as usize;
    let weight = rd(2)? as i16 as i32;
    let sign = rd(4)?;
    let dscale = rd(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(rd(8 + i * 2)?);
    }
    let digit = |i: i32| -> u16 {
        if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        }
    };
    let mut int_part = String::new();
    if weight < 0 {
        int_part.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            if i == 0 {
                int_part.push_str(&d.to_string());
            } else {
                int_part.push_str(&format!("{d:04}"));
            }
        }
    }
    let mut frac = String::new();
    if dscale > 0 {
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
    }
    let mut out = String::new();
    if sign == 0x4000 && (int_part != "0" || frac.chars().any(|c| c != '0')) {
        out.push('-');
    }
    out.push_str(&int_part);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// ISO 8601 duration for an INTERVAL (months, days, microseconds), e.g. `P1Y2M3DT4H5M6.5S`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    if months == 0 && days == 0 && micros == 0 {
        return "PT0S".into();
    }
    let mut s = String::from("P");
    let (y, m) = (months / 12, months % 12);
    if y != 0 {
        s.push_str(&format!("{y}Y"));
    }
    if m != 0 {
        s.push_str(&format!("{m}M"));
    }
    if days != 0 {
        s.push_str(&format!("{days}D"));
    }
    if micros != 0 {
        s.push('T');
        let neg = micros < 0;
        let abs = micros.unsigned_abs();
        let (h, rem) = (abs / 3_600_000_000, abs % 3_600_000_000);
        let (mi, rem) = (rem / 60_000_000, rem % 60_000_000);
        let (sec, us) = (rem / 1_000_000, rem % 1_000_000);
        let sign = if neg { "-" } else { "" };
        if h != 0 {
            s.push_str(&format!("{sign}{h}H"));
        }
        if mi != 0 {
            s.push_str(&format!("{sign}{mi}M"));
        }
        if sec != 0 || us != 0 {
            let frac = if us != 0 {
                format!(".{}", format!("{us:06}").trim_end_matches('0'))
            } else {
                String::new()
            };
            s.push_str(&format!("{sign}{sec}{frac}S"));
        }
    }
    s
}

/// A `float4` in its own shortest form (`0.1`, not the f64 widening `0.10000000149011612`).
fn float32_text(f: f32) -> String {
    crate::packages::value::special_float(f64::from(f))
        .map_or_else(|| f.to_string(), str::to_string)
}

fn timestamp(micros: i64) -> Option<NaiveDateTime> {
    let base = pg_epoch_date()?.and_hms_opt(0, 0, 0)?;
    base.checked_add_signed(ChronoDuration::microseconds(micros))
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// What decoding needs to know about the session.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Fraction digits of `money` under the session's `lc_monetary` (2 for C and most locales,
    /// 0 for e.g. ja_JP): money travels as an integer count of the smallest unit.
    pub money_digits: u32,
}

impl Default for Session {
    fn default() -> Self {
        Session { money_digits: 2 }
    }
}

/// `24:00:00` is a valid PostgreSQL `time` (and `timetz`); chrono has no such time of day.
const END_OF_DAY_US: i64 = 86_400_000_000;

fn time_text(us: i64) -> Result<Value, String> {
    if us == END_OF_DAY_US {
        return Ok(Value::Text("24:00:00".into()));
    }
    let t = NaiveTime::from_num_seconds_from_midnight_opt(
        u32::try_from(us / 1_000_000).map_err(err)?,
        u32::try_from((us % 1_000_000) * 1000).map_err(err)?,
    )
    .ok_or("time out of range")?;
    Ok(Value::Time(t))
}

/// Decodes one value of type `ty`. `Err` names what cannot be decoded.
pub fn decode(ty: &Type, raw: Option<&[u8]>, session: Session) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    match ty.kind() {
        Kind::Array(elem) => {
            let arr = pt::array_from_sql(raw).map_err(err)?;
            let mut dims = arr.dimensions();
            let mut ndims = 0;
            while fallible_iterator::FallibleIterator::next(&mut dims)
                .map_err(err)?
                .is_some()
            {
                ndims += 1;
            }
            if ndims > 1 {
                return Err(format!(
                    "a {ndims}-dimensional array has no export form (a connection table column holds a list of values); unnest it or cast it to text in the query"
                ));
            }
            let mut values = Vec::new();
            let mut it = arr.values();
            while let Some(v) = fallible_iterator::FallibleIterator::next(&mut it).map_err(err)? {
                values.push(decode(elem, v, session)?);
            }
            return Ok(Value::Multi(values));
        }
        Kind::Enum(_) => {
            return pt::text_from_sql(raw)
                .map(|s| Value::Text(s.to_string()))
                .map_err(err);
        }
        Kind::Domain(inner) => return decode(inner, Some(raw), session),
        _ => {}
    }
    let v = match *ty {
        Type::BOOL => Value::Bool(pt::bool_from_sql(raw).map_err(err)?),
        Type::INT2 => Value::Int(i64::from(pt::int2_from_sql(raw).map_err(err)?)),
        Type::INT4 => Value::Int(i64::from(pt::int4_from_sql(raw).map_err(err)?)),
        Type::INT8 => Value::Int(pt::int8_from_sql(raw).map_err(err)?),
        Type::OID => Value::Int(i64::from(pt::oid_from_sql(raw).map_err(err)?)),
        Type::FLOAT4 => Value::Decimal(float32_text(pt::float4_from_sql(raw).map_err(err)?)),
        Type::FLOAT8 => Value::Float(pt::float8_from_sql(raw).map_err(err)?),
        Type::NUMERIC => Value::Decimal(numeric_text(raw)?),
        Type::MONEY => {
            let units = pt::int8_from_sql(raw).map_err(err)?;
            let sign = if units < 0 { "-" } else { "" };
            let abs = units.unsigned_abs();
            let digits = session.money_digits.min(18);
            if digits == 0 {
                Value::Decimal(format!("{sign}{abs}"))
            } else {
                let scale = 10u64.pow(digits);
                Value::Decimal(format!(
                    "{sign}{}.{:0width$}",
                    abs / scale,
                    abs % scale,
                    width = digits as usize
                ))
            }
        }
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::XML
        | Type::JSON => Value::Text(pt::text_from_sql(raw).map_err(err)?.to_string()),
        Type::JSONB => {
            let (version, body) = raw.split_first().ok_or("empty jsonb")?;
            if *version != 1 {
                return Err(format!("jsonb version {version} is not known"));
            }
            Value::Text(std::str::from_utf8(body).map_err(err)?.to_string())
        }
        Type::CHAR => {
            Value::Text(char::from(pt::char_from_sql(raw).map_err(err)? as u8).to_string())
        }
        Type::BYTEA => Value::Bytes(pt::bytea_from_sql(raw).to_vec()),
        Type::UUID => Value::Guid(pt::uuid_from_sql(raw).map_err(err)?),
        Type::DATE => {
            let days = pt::date_from_sql(raw).map_err(err)?;
            match days {
                i32::MAX => Value::Text("infinity".into()),
                i32::MIN => Value::Text("-infinity".into()),
                d => Value::Date(
                    pg_epoch_date()
                        .and_then(|e| e.checked_add_signed(ChronoDuration::days(i64::from(d))))
                        .ok_or("the date is beyond what connagent can write (years -262143 to 262143); cast the column to text in the query")?,
                ),
            }
        }
        Type::TIME => time_text(pt::time_from_sql(raw).map_err(err)?)?,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let us = pt::timestamp_from_sql(raw).map_err(err)?;
            match us {
                i64::MAX => Value::Text("infinity".into()),
                i64::MIN => Value::Text("-infinity".into()),
                us => {
                    let dt = timestamp(us).ok_or("the timestamp is beyond what connagent can write (years -262143 to 262143); cast the column to text in the query")?;
                    if *ty == Type::TIMESTAMPTZ {
                        Value::DateTimeOffset(dt.and_utc().fixed_offset())
                    } else {
                        Value::DateTime(dt)
                    }
                }
            }
        }
        Type::TIMETZ => {
            let us = i64::from_be_bytes(
                raw.get(0..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated timetz")?,
            );
            let zone = i32::from_be_bytes(
                raw.get(8..12)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated timetz")?,
            );
            // PostgreSQL sends seconds west of UTC; ISO 8601 writes east.
            let east = -zone;
            let sign = if east < 0 { '-' } else { '+' };
            let a = east.unsigned_abs();
            let base = time_text(us)?.to_text().into_owned();
            Value::Text(format!(
                "{base}{sign}{:02}:{:02}",
                a / 3600,
                (a % 3600) / 60
            ))
        }
        Type::INTERVAL => {
            let us = i64::from_be_bytes(
                raw.get(0..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated interval")?,
            );
            let days = i32::from_be_bytes(
                raw.get(8..12)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated interval")?,
            );
            let months = i32::from_be_bytes(
                raw.get(12..16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated interval")?,
            );
            Value::Text(interval_text(months, days, us))
        }
        Type::INET | Type::CIDR => {
            let inet = pt::inet_from_sql(raw).map_err(err)?;
            let full = if inet.addr().is_ipv4() { 32 } else { 128 };
            if *ty == Type::INET && inet.netmask() == full {
                Value::Text(inet.addr().to_string())
            } else {
                Value::Text(format!("{}/{}", inet.addr(), inet.netmask()))
            }
        }
        _ => {
            return Err(format!(
                "the type {} has no export form in connagent yet; cast the column to text in the query (column::text)",
                ty.name()
            ));
        }
    };
    Ok(v)
}

/// The schema value type for a PostgreSQL type.
pub fn value_type(ty: &Type) -> (crate::schema::ValueType, bool) {
    use crate::schema::ValueType as V;
    if let Kind::Array(elem) = ty.kind() {
        return (value_type(elem).0, true);
    }
    if let Kind::Domain(inner) = ty.kind() {
        return value_type(inner);
    }
    let v = match *ty {
        Type::BOOL => V::Bool,
        Type::INT2 => V::Int16,
        Type::INT4 => V::Int32,
        // oid is unsigned 32-bit: values above 2^31 do not fit Int32.
        Type::INT8 | Type::OID => V::Int64,
        Type::FLOAT4 | Type::FLOAT8 => V::Double,
        Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ => V::DateTime,
        Type::UUID => V::Guid,
        Type::BYTEA => V::Binary,
        _ => V::String,
    };
    (v, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [ndigits, weight as u16, sign, dscale] {
            v.extend(x.to_be_bytes());
        }
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_are_exact() {
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 5000])).unwrap(),
            "12.50"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0x4000, 4, &[1])).unwrap(),
            "-0.0001"
        );
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 6, &[1200])).unwrap(),
            "0.000012"
        );
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 8, &[12])).unwrap(),
            "0.00000012"
        );
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 0, &[1, 0])).unwrap(),
            "10000"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(
            numeric_text(&numeric(3, 2, 0, 0, &[9, 9999, 9999])).unwrap(),
            "999999999"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }

    #[test]
    fn money_follows_the_session_fraction_digits() {
        let raw = (-12345i64).to_be_bytes();
        let text = |digits| match decode(
            &Type::MONEY,
            Some(&raw),
            Session {
                money_digits: digits,
            },
        ) {
            Ok(Value::Decimal(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(2), "-123.45");
        assert_eq!(text(0), "-12345");
        assert_eq!(text(3), "-12.345");
        let end = END_OF_DAY_US.to_be_bytes();
        assert!(
            matches!(decode(&Type::TIME, Some(&end), Session::default()), Ok(Value::Text(t)) if t == "24:00:00")
        );
    }

    #[test]
    fn intervals_are_iso_8601() {
        assert_eq!(
            interval_text(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(interval_text(0, 0, 0), "PT0S");
        assert_eq!(interval_text(0, -1, -1_000_000), "P-1DT-1S");
    }
}
