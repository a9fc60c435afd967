//! SQL Server column types, test-friendly cell values, and their TDS 7.4 encodings
//! (MS-TDS 2.2.5.4 data type definitions, 2.2.5.5 TYPE_INFO, 2.2.5.5.4 sql_variant).
//!
//! Two encodings live here:
//! * [`type_info`]: the TYPE_INFO a column gets in COLMETADATA. Nullable int/bit/float/money/datetime
//!   columns use the nullable wire types (INTN, BITN, FLTN, MONEYN, DATETIMN), NOT NULL ones the
//!   fixed-length types (INT4, BIT, FLT8, ...), as SQL Server does. decimal, uniqueidentifier and the
//!   date/time types of SQL Server 2008 only exist as nullable wire types and are always sent that way.
//! * [`write_value`]: one cell as it appears inside a ROW/NBCROW token, with its length prefix:
//!   none for fixed-length types, a byte for BYTELEN types, a u16 for the (n)varchar/binary family,
//!   PLP (partially length-prefixed, chunked) for `(max)` types and xml, a text pointer for
//!   text/ntext/image, and a u32 total length for sql_variant.
//!
//! Errors are plain strings naming the problem; they are script mistakes (a value that does not fit
//! its column), which the responder reports to the client as a server error.

/// The collation every character column carries: `SQL_Latin1_General_CP1_CI_AS` (LCID 0x0409,
/// case-insensitive, accent-sensitive, kana- and width-insensitive, sort id 52 = code page 1252).
/// Bytes: the 4-byte LCID/flags word little-endian, then the sort id.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Size of the chunks PLP values are cut into (several chunks for long values, as SQL Server does).
pub const PLP_CHUNK: usize = 8000;

const PLP_NULL: u64 = u64::MAX;

/// A column type as SQL Server reports it. Lengths are in characters for `char`/`nchar` family
/// types and in bytes for `binary`; the `...Max` variants are the `(max)` types, sent as PLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    /// decimal(precision, scale)
    Decimal(u8, u8),
    /// numeric(precision, scale)
    Numeric(u8, u8),
    Money,
    SmallMoney,
    Real,
    Float,
    Char(u16),
    VarChar(u16),
    VarCharMax,
    NChar(u16),
    NVarChar(u16),
    NVarCharMax,
    Text,
    NText,
    Date,
    /// time(scale)
    Time(u8),
    DateTime,
    SmallDateTime,
    /// datetime2(scale)
    DateTime2(u8),
    /// datetimeoffset(scale)
    DateTimeOffset(u8),
    UniqueIdentifier,
    Binary(u16),
    VarBinary(u16),
    VarBinaryMax,
    Image,
    Xml,
    /// sql_variant; its cells are [`Cell::Variant`] carrying the base type.
    Variant,
}

impl SqlType {
    /// The type as written in T-SQL, for messages.
    pub fn sql_name(&self) -> String {
        use SqlType::*;
        match *self {
            TinyInt => "tinyint".into(),
            SmallInt => "smallint".into(),
            Int => "int".into(),
            BigInt => "bigint".into(),
            Bit => "bit".into(),
            Decimal(p, s) => format!("decimal({p},{s})"),
            Numeric(p, s) => format!("numeric({p},{s})"),
            Money => "money".into(),
            SmallMoney => "smallmoney".into(),
            Real => "real".into(),
            Float => "float".into(),
            Char(n) => format!("char({n})"),
            VarChar(n) => format!("varchar({n})"),
            VarCharMax => "varchar(max)".into(),
            NChar(n) => format!("nchar({n})"),
            NVarChar(n) => format!("nvarchar({n})"),
            NVarCharMax => "nvarchar(max)".into(),
            Text => "text".into(),
            NText => "ntext".into(),
            Date => "date".into(),
            Time(s) => format!("time({s})"),
            DateTime => "datetime".into(),
            SmallDateTime => "smalldatetime".into(),
            DateTime2(s) => format!("datetime2({s})"),
            DateTimeOffset(s) => format!("datetimeoffset({s})"),
            UniqueIdentifier => "uniqueidentifier".into(),
            Binary(n) => format!("binary({n})"),
            VarBinary(n) => format!("varbinary({n})"),
            VarBinaryMax => "varbinary(max)".into(),
            Image => "image".into(),
            Xml => "xml".into(),
            Variant => "sql_variant".into(),
        }
    }

    /// Checks the type's parameters are ones SQL Server allows.
    pub fn validate(&self) -> Result<(), String> {
        use SqlType::*;
        let ok = match *self {
            Decimal(p, s) | Numeric(p, s) => (1..=38).contains(&p) && s <= p,
            Time(s) | DateTime2(s) | DateTimeOffset(s) => s <= 7,
            Char(n) | VarChar(n) | Binary(n) | VarBinary(n) => (1..=8000).contains(&n),
            NChar(n) | NVarChar(n) => (1..=4000).contains(&n),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a valid SQL Server type",
                self.sql_name()
            ))
        }
    }
}

/// A calendar date (proleptic Gregorian), as a test writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

/// A time of day with nanoseconds; the column's scale decides how much of `nanos` is sent
/// (rounded half up, as SQL Server rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

/// A value in a result row. The responder encodes it according to its column's [`SqlType`]; a
/// cell that does not fit (wrong kind, too long, out of range) becomes a server error
/// "tds responder script error: ..." on the wire.
///
/// Accepted combinations: `Int` for all integer types, bit (0/1), decimal/numeric, money and float
/// types; `Bit` for bit; `Decimal` (exact text such as `"-12345.6789"`) for decimal/numeric, money
/// and smallmoney; `Float` for real/float and money; `Str` for every character type and xml;
/// `Bytes` for the binary types; `Guid` for uniqueidentifier; `Date`/`Time`/`DateTime`/
/// `DateTimeOffset` for the matching temporal types (`DateTime` also for datetime2,
/// smalldatetime and — at offset 0 — datetimeoffset); `Xml` for xml; `Variant` for sql_variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Bit(bool),
    /// An exact decimal number in text, e.g. `"-12345.6789"`.
    Decimal(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A GUID in its textual byte order (the order `6F9619FF-8B86-...` is written in); the
    /// responder sends it in SQL Server's mixed-endian wire order.
    Guid([u8; 16]),
    Date(Date),
    Time(Time),
    DateTime(Date, Time),
    /// Local date and time plus the offset from UTC in minutes; sent as UTC plus offset, as
    /// SQL Server stores it.
    DateTimeOffset(Date, Time, i16),
    Xml(String),
    /// A sql_variant value: its base type and the value (Null for a NULL variant).
    Variant(SqlType, Box<Cell>),
}

impl Cell {
    pub fn str(s: impl Into<String>) -> Cell {
        Cell::Str(s.into())
    }
    pub fn decimal(s: impl Into<String>) -> Cell {
        Cell::Decimal(s.into())
    }
    pub fn date(year: i32, month: u32, day: u32) -> Cell {
        Cell::Date(Date { year, month, day })
    }
    pub fn time(hour: u32, minute: u32, second: u32, nanos: u32) -> Cell {
        Cell::Time(Time {
            hour,
            minute,
            second,
            nanos,
        })
    }
    #[allow(clippy::too_many_arguments)]
    pub fn datetime(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> Cell {
        Cell::DateTime(Date::new(y, mo, d), Time::new(h, mi, s, nanos))
    }
    #[allow(clippy::too_many_arguments)]
    pub fn datetimeoffset(
        y: i32,
        mo: u32,
        d: u32,
        h: u32,
        mi: u32,
        s: u32,
        nanos: u32,
        offset_minutes: i16,
    ) -> Cell {
        Cell::DateTimeOffset(
            Date::new(y, mo, d),
            Time::new(h, mi, s, nanos),
            offset_minutes,
        )
    }
    /// A UTC date and time from seconds (and nanoseconds) since 1970-01-01.
    pub fn unix_datetime(secs: i64, nanos: u32) -> Cell {
        let (date, time) = from_unix(secs, nanos);
        Cell::DateTime(date, time)
    }
    /// Parses `"6F9619FF-8B86-D011-B42D-00C04FC964FF"` (braces and dashes optional).
    /// Panics on malformed text: it is test input, not network data.
    pub fn guid(text: &str) -> Cell {
        let hex: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b'-' | b'{' | b'}'))
            .collect();
        assert_eq!(hex.len(), 32, "not a GUID: {text}");
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).expect("GUID text");
            out[i] = u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("not a GUID: {text}"));
        }
        Cell::Guid(out)
    }
    pub fn variant(base: SqlType, value: impl Into<Cell>) -> Cell {
        Cell::Variant(base, Box::new(value.into()))
    }

    /// True for NULL, including a sql_variant holding NULL.
    pub fn is_null(&self) -> bool {
        match self {
            Cell::Null => true,
            Cell::Variant(_, inner) => inner.is_null(),
            _ => false,
        }
    }
}

impl Date {
    pub fn new(year: i32, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }
}

impl Time {
    pub fn new(hour: u32, minute: u32, second: u32, nanos: u32) -> Time {
        Time {
            hour,
            minute,
            second,
            nanos,
        }
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Cell {
        Cell::Int(v)
    }
}
impl From<i32> for Cell {
    fn from(v: i32) -> Cell {
        Cell::Int(v.into())
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Cell {
        Cell::Bit(v)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Cell {
        Cell::Float(v)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Cell {
        Cell::Str(v.to_owned())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Str(v)
    }
}
impl From<Vec<u8>> for Cell {
    fn from(v: Vec<u8>) -> Cell {
        Cell::Bytes(v)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Cell {
        v.map_or(Cell::Null, Into::into)
    }
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (Howard Hinnant's days_from_civil / civil_from_days).

/// Days from 1970-01-01 to the given proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UTC date and time from a Unix timestamp.
pub fn from_unix(secs: i64, nanos: u32) -> (Date, Time) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    (
        Date::new(y as i32, m, d),
        Time::new(sod / 3600, sod / 60 % 60, sod % 60, nanos),
    )
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn check_date(d: &Date) -> Result<(), String> {
    if (1..=9999).contains(&d.year)
        && (1..=12).contains(&d.month)
        && d.day >= 1
        && d.day <= days_in_month(d.year, d.month)
    {
        Ok(())
    } else {
        Err(format!("{d:?} is not a valid date"))
    }
}

fn check_time(t: &Time) -> Result<(), String> {
    if t.hour < 24 && t.minute < 60 && t.second < 60 && t.nanos < 1_000_000_000 {
        Ok(())
    } else {
        Err(format!("{t:?} is not a valid time of day"))
    }
}

/// Days since 0001-01-01 (the `date` wire value).
fn days_since_0001(d: &Date) -> i64 {
    days_from_civil(d.year.into(), d.month, d.day) - days_from_civil(1, 1, 1)
}

fn nanos_of_day(t: &Time) -> u64 {
    ((u64::from(t.hour) * 60 + u64::from(t.minute)) * 60 + u64::from(t.second)) * 1_000_000_000
        + u64::from(t.nanos)
}

/// Bytes of a `time(scale)` value: 3 bytes for scale 0-2, 4 for 3-4, 5 for 5-7.
fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// Writes a `time(scale)` value (10^-scale second increments since midnight, little-endian).
/// Returns `true` when rounding carried the value to midnight of the next day.
fn put_time(out: &mut Vec<u8>, t: &Time, scale: u8) -> Result<bool, String> {
    check_time(t)?;
    let unit = 10u64.pow(9 - u32::from(scale));
    let mut increments = (nanos_of_day(t) + unit / 2) / unit;
    let day = 86_400 * 10u64.pow(u32::from(scale));
    let carried = increments >= day;
    if carried {
        increments -= day;
    }
    out.extend_from_slice(&increments.to_le_bytes()[..time_len(scale)]);
    Ok(carried)
}

fn put_date_days(out: &mut Vec<u8>, days: i64) -> Result<(), String> {
    if !(0..=3_652_058).contains(&days) {
        return Err(format!("date {days} days after 0001-01-01 is out of range"));
    }
    out.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
    Ok(())
}

/// datetime2 wire value: time then date. A time that rounds up to midnight moves to the next day.
fn put_datetime2(out: &mut Vec<u8>, d: &Date, t: &Time, scale: u8) -> Result<(), String> {
    check_date(d)?;
    let carried = put_time(out, t, scale)?;
    put_date_days(out, days_since_0001(d) + i64::from(carried))
}

/// The UTC date and time of a local date/time at `offset` minutes east of UTC.
fn to_utc(d: &Date, t: &Time, offset: i16) -> Result<(Date, Time), String> {
    check_date(d)?;
    check_time(t)?;
    if !(-840..=840).contains(&offset) {
        return Err(format!("offset {offset} minutes is outside -14:00..+14:00"));
    }
    let local = days_from_civil(d.year.into(), d.month, d.day) * 86_400
        + i64::from(t.hour * 3600 + t.minute * 60 + t.second);
    Ok(from_unix(local - i64::from(offset) * 60, t.nanos))
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// Parses exact decimal text into a mantissa at `scale` (value = mantissa / 10^scale).
fn decimal_mantissa(text: &str, scale: u8) -> Result<i128, String> {
    let bad = || format!("{text:?} is not a decimal number");
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > usize::from(scale) {
        return Err(format!(
            "{text:?} has more than {scale} fractional digits (the responder does not round)"
        ));
    }
    let mut m: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        m = m
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    for _ in frac.len()..usize::from(scale) {
        m = m.checked_mul(10).ok_or_else(bad)?;
    }
    Ok(if neg { -m } else { m })
}

/// The mantissa of a cell for a decimal/money column of the given scale.
fn exact(cell: &Cell, scale: u8, ty: SqlType) -> Result<i128, String> {
    match cell {
        Cell::Decimal(s) => decimal_mantissa(s, scale),
        Cell::Int(v) => i128::from(*v)
            .checked_mul(10i128.pow(scale.into()))
            .ok_or_else(|| format!("{v} overflows {}", ty.sql_name())),
        Cell::Float(f) if matches!(ty, SqlType::Money | SqlType::SmallMoney) && f.is_finite() => {
            Ok((f * 10_000.0).round() as i128)
        }
        other => Err(mismatch(other, ty)),
    }
}

/// Magnitude bytes of a decimal of the given precision (MS-TDS 2.2.5.5.1.6).
fn decimal_bytes(precision: u8) -> usize {
    match precision {
        1..=9 => 4,
        10..=19 => 8,
        20..=28 => 12,
        _ => 16,
    }
}

fn put_decimal(out: &mut Vec<u8>, m: i128, precision: u8, ty: SqlType) -> Result<(), String> {
    if m.unsigned_abs() >= 10u128.pow(precision.into()) {
        return Err(format!("value does not fit {}", ty.sql_name()));
    }
    out.push(u8::from(m >= 0));
    out.extend_from_slice(&m.unsigned_abs().to_le_bytes()[..decimal_bytes(precision)]);
    Ok(())
}

fn int_in(cell: &Cell, ty: SqlType, min: i64, max: i64) -> Result<i64, String> {
    match cell {
        Cell::Int(v) if (min..=max).contains(v) => Ok(*v),
        Cell::Int(v) => Err(format!("{v} is out of range for {}", ty.sql_name())),
        other => Err(mismatch(other, ty)),
    }
}

fn mismatch(cell: &Cell, ty: SqlType) -> String {
    format!(
        "a {cell:?} cell cannot be sent in a {} column",
        ty.sql_name()
    )
}

// ---------------------------------------------------------------------------------------------
// Strings and bytes.

/// Code page 1252 bytes of a string, or an error naming a character 1252 cannot represent.
fn cp1252(s: &str) -> Result<Vec<u8>, String> {
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(s);
    if unmappable {
        return Err(format!(
            "{s:?} has characters outside code page 1252 (use an n-type column)"
        ));
    }
    Ok(bytes.into_owned())
}

fn utf16(s: &str, out: &mut Vec<u8>) -> usize {
    let mut units = 0;
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
        units += 1;
    }
    units
}

fn text_of(cell: &Cell, ty: SqlType) -> Result<&str, String> {
    match cell {
        Cell::Str(s) | Cell::Xml(s) => Ok(s),
        other => Err(mismatch(other, ty)),
    }
}

// ---------------------------------------------------------------------------------------------
// Encodings.

/// How a column's values are framed inside a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// Fixed-length type: the bare value.
    Fixed,
    /// BYTELEN: a length byte (0 = NULL), then the value.
    ByteLen,
    /// USHORTLEN: a u16 length (0xFFFF = NULL), then the value.
    UShortLen,
    /// PLP: u64 total length (all ones = NULL), u32-prefixed chunks, a zero terminator.
    Plp,
    /// text/ntext/image: text pointer length (0 = NULL), pointer, timestamp, u32 length, value.
    TextPtr,
    /// sql_variant: u32 total length (0 = NULL), base type, property bytes, value.
    Variant,
}

fn wire(ty: SqlType, nullable: bool) -> Wire {
    use SqlType::*;
    match ty {
        TinyInt | SmallInt | Int | BigInt | Bit | Money | SmallMoney | Real | Float | DateTime
        | SmallDateTime => {
            if nullable {
                Wire::ByteLen
            } else {
                Wire::Fixed
            }
        }
        Decimal(..) | Numeric(..) | Date | Time(_) | DateTime2(_) | DateTimeOffset(_)
        | UniqueIdentifier => Wire::ByteLen,
        Char(_) | VarChar(_) | NChar(_) | NVarChar(_) | Binary(_) | VarBinary(_) => Wire::UShortLen,
        VarCharMax | NVarCharMax | VarBinaryMax | Xml => Wire::Plp,
        Text | NText | Image => Wire::TextPtr,
        Variant => Wire::Variant,
    }
}

/// Appends the TYPE_INFO of a column (MS-TDS 2.2.5.5); for text/ntext/image also the TableName
/// that COLMETADATA carries for them.
pub fn type_info(ty: SqlType, nullable: bool, out: &mut Vec<u8>) -> Result<(), String> {
    use SqlType::*;
    ty.validate()?;
    let fixed_or_n = |fixed: u8, n: u8, len: u8, out: &mut Vec<u8>| {
        if nullable {
            out.extend_from_slice(&[n, len]);
        } else {
            out.push(fixed);
        }
    };
    match ty {
        TinyInt => fixed_or_n(0x30, 0x26, 1, out),
        SmallInt => fixed_or_n(0x34, 0x26, 2, out),
        Int => fixed_or_n(0x38, 0x26, 4, out),
        BigInt => fixed_or_n(0x7F, 0x26, 8, out),
        Bit => fixed_or_n(0x32, 0x68, 1, out),
        Money => fixed_or_n(0x3C, 0x6E, 8, out),
        SmallMoney => fixed_or_n(0x7A, 0x6E, 4, out),
        Real => fixed_or_n(0x3B, 0x6D, 4, out),
        Float => fixed_or_n(0x3E, 0x6D, 8, out),
        DateTime => fixed_or_n(0x3D, 0x6F, 8, out),
        SmallDateTime => fixed_or_n(0x3A, 0x6F, 4, out),
        Decimal(p, s) => out.extend_from_slice(&[0x6A, 1 + decimal_bytes(p) as u8, p, s]),
        Numeric(p, s) => out.extend_from_slice(&[0x6C, 1 + decimal_bytes(p) as u8, p, s]),
        UniqueIdentifier => out.extend_from_slice(&[0x24, 16]),
        Date => out.push(0x28),
        Time(s) => out.extend_from_slice(&[0x29, s]),
        DateTime2(s) => out.extend_from_slice(&[0x2A, s]),
        DateTimeOffset(s) => out.extend_from_slice(&[0x2B, s]),
        Char(n) => ushort_collated(out, 0xAF, n),
        VarChar(n) => ushort_collated(out, 0xA7, n),
        VarCharMax => ushort_collated(out, 0xA7, 0xFFFF),
        NChar(n) => ushort_collated(out, 0xEF, n * 2),
        NVarChar(n) => ushort_collated(out, 0xE7, n * 2),
        NVarCharMax => ushort_collated(out, 0xE7, 0xFFFF),
        Binary(n) => {
            out.push(0xAD);
            out.extend_from_slice(&n.to_le_bytes());
        }
        VarBinary(n) => {
            out.push(0xA5);
            out.extend_from_slice(&n.to_le_bytes());
        }
        VarBinaryMax => out.extend_from_slice(&[0xA5, 0xFF, 0xFF]),
        Text => long_len(out, 0x23, 0x7FFF_FFFF, true),
        NText => long_len(out, 0x63, 0x7FFF_FFFE, true),
        Image => long_len(out, 0x22, 0x7FFF_FFFF, false),
        // No schema collection.
        Xml => out.extend_from_slice(&[0xF1, 0x00]),
        Variant => {
            out.push(0x62);
            out.extend_from_slice(&8009u32.to_le_bytes());
        }
    }
    Ok(())
}

fn ushort_collated(out: &mut Vec<u8>, ty: u8, max: u16) {
    out.push(ty);
    out.extend_from_slice(&max.to_le_bytes());
    out.extend_from_slice(&COLLATION);
}

/// LONGLEN types (text, ntext, image): max length, collation for the character ones, and the
/// TableName (NumParts, then each part as US_VARCHAR) that follows in COLMETADATA.
fn long_len(out: &mut Vec<u8>, ty: u8, max: u32, collated: bool) {
    out.push(ty);
    out.extend_from_slice(&max.to_le_bytes());
    if collated {
        out.extend_from_slice(&COLLATION);
    }
    out.push(2);
    for part in ["dbo", "responder"] {
        out.extend_from_slice(&(part.len() as u16).to_le_bytes());
        utf16(part, out);
    }
}

/// Appends one cell as it appears in a ROW token (length prefix included). NULL is encoded inline
/// (NBCROW callers skip NULL cells instead of calling this).
pub fn write_value(
    ty: SqlType,
    nullable: bool,
    cell: &Cell,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let w = wire(ty, nullable);
    if cell.is_null() {
        match w {
            Wire::Fixed => {
                return Err(format!(
                    "NULL in a NOT NULL {} column (declare it nullable)",
                    ty.sql_name()
                ));
            }
            Wire::ByteLen | Wire::TextPtr => out.push(0),
            Wire::UShortLen => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
            Wire::Plp => out.extend_from_slice(&PLP_NULL.to_le_bytes()),
            Wire::Variant => out.extend_from_slice(&0u32.to_le_bytes()),
        }
        return Ok(());
    }
    match w {
        Wire::Fixed => raw(ty, cell, out),
        Wire::ByteLen => {
            let at = out.len();
            out.push(0);
            raw(ty, cell, out)?;
            out[at] = (out.len() - at - 1) as u8;
            Ok(())
        }
        Wire::UShortLen => {
            let at = out.len();
            out.extend_from_slice(&[0, 0]);
            raw(ty, cell, out)?;
            let len = (out.len() - at - 2) as u16;
            out[at..at + 2].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Wire::Plp => {
            let mut value = Vec::new();
            raw(ty, cell, &mut value)?;
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            for chunk in value.chunks(PLP_CHUNK) {
                out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                out.extend_from_slice(chunk);
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            Ok(())
        }
        Wire::TextPtr => {
            out.push(16);
            out.extend_from_slice(&[0xAB; 16]); // text pointer (opaque to the client)
            out.extend_from_slice(&[0; 8]); // timestamp
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            raw(ty, cell, out)?;
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Wire::Variant => {
            let Cell::Variant(base, inner) = cell else {
                return Err(mismatch(cell, ty));
            };
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            variant_header(*base, out)?;
            raw(*base, inner, out)?;
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
    }
}

/// sql_variant base type byte, property byte count and properties (MS-TDS 2.2.5.5.4).
fn variant_header(base: SqlType, out: &mut Vec<u8>) -> Result<(), String> {
    use SqlType::*;
    base.validate()?;
    let collated = |out: &mut Vec<u8>, ty: u8, max: u16| {
        out.extend_from_slice(&[ty, 7]);
        out.extend_from_slice(&COLLATION);
        out.extend_from_slice(&max.to_le_bytes());
    };
    match base {
        TinyInt => out.extend_from_slice(&[0x30, 0]),
        SmallInt => out.extend_from_slice(&[0x34, 0]),
        Int => out.extend_from_slice(&[0x38, 0]),
        BigInt => out.extend_from_slice(&[0x7F, 0]),
        Bit => out.extend_from_slice(&[0x32, 0]),
        Real => out.extend_from_slice(&[0x3B, 0]),
        Float => out.extend_from_slice(&[0x3E, 0]),
        Money => out.extend_from_slice(&[0x3C, 0]),
        SmallMoney => out.extend_from_slice(&[0x7A, 0]),
        DateTime => out.extend_from_slice(&[0x3D, 0]),
        SmallDateTime => out.extend_from_slice(&[0x3A, 0]),
        UniqueIdentifier => out.extend_from_slice(&[0x24, 0]),
        Date => out.extend_from_slice(&[0x28, 0]),
        Time(s) => out.extend_from_slice(&[0x29, 1, s]),
        DateTime2(s) => out.extend_from_slice(&[0x2A, 1, s]),
        DateTimeOffset(s) => out.extend_from_slice(&[0x2B, 1, s]),
        Decimal(p, s) => out.extend_from_slice(&[0x6A, 2, p, s]),
        Numeric(p, s) => out.extend_from_slice(&[0x6C, 2, p, s]),
        Char(n) => collated(out, 0xAF, n),
        VarChar(n) => collated(out, 0xA7, n),
        NChar(n) => collated(out, 0xEF, n * 2),
        NVarChar(n) => collated(out, 0xE7, n * 2),
        Binary(n) => {
            out.extend_from_slice(&[0xAD, 2]);
            out.extend_from_slice(&n.to_le_bytes());
        }
        VarBinary(n) => {
            out.extend_from_slice(&[0xA5, 2]);
            out.extend_from_slice(&n.to_le_bytes());
        }
        other => {
            return Err(format!(
                "{} cannot be the base type of a sql_variant",
                other.sql_name()
            ));
        }
    }
    Ok(())
}

/// The bare value bytes of a non-NULL cell (no length prefix).
fn raw(ty: SqlType, cell: &Cell, out: &mut Vec<u8>) -> Result<(), String> {
    use SqlType::*;
    match ty {
        TinyInt => out.push(int_in(cell, ty, 0, 255)? as u8),
        SmallInt => {
            let v = int_in(cell, ty, i16::MIN.into(), i16::MAX.into())? as i16;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Int => {
            let v = int_in(cell, ty, i32::MIN.into(), i32::MAX.into())? as i32;
            out.extend_from_slice(&v.to_le_bytes());
        }
        BigInt => out.extend_from_slice(&int_in(cell, ty, i64::MIN, i64::MAX)?.to_le_bytes()),
        Bit => match cell {
            Cell::Bit(b) => out.push(u8::from(*b)),
            Cell::Int(v @ (0 | 1)) => out.push(*v as u8),
            other => return Err(mismatch(other, ty)),
        },
        Decimal(p, s) | Numeric(p, s) => {
            let m = exact(cell, s, ty)?;
            put_decimal(out, m, p, ty)?;
        }
        Money => {
            let m = i64::try_from(exact(cell, 4, ty)?)
                .map_err(|_| format!("value does not fit {}", ty.sql_name()))?;
            // High 32 bits first, then the low 32 bits, each little-endian.
            out.extend_from_slice(&((m >> 32) as i32).to_le_bytes());
            out.extend_from_slice(&(m as u32).to_le_bytes());
        }
        SmallMoney => {
            let m = i32::try_from(exact(cell, 4, ty)?)
                .map_err(|_| format!("value does not fit {}", ty.sql_name()))?;
            out.extend_from_slice(&m.to_le_bytes());
        }
        Real | Float => {
            let v = match cell {
                Cell::Float(f) => *f,
                Cell::Int(i) => *i as f64,
                other => return Err(mismatch(other, ty)),
            };
            if ty == Real {
                out.extend_from_slice(&(v as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Char(n) | VarChar(n) => {
            let bytes = cp1252(text_of(cell, ty)?)?;
            if bytes.len() > usize::from(n) {
                return Err(format!(
                    "{} bytes do not fit {}",
                    bytes.len(),
                    ty.sql_name()
                ));
            }
            out.extend_from_slice(&bytes);
            if let Char(_) = ty {
                out.resize(out.len() + usize::from(n) - bytes.len(), b' ');
            }
        }
        VarCharMax | Text => out.extend_from_slice(&cp1252(text_of(cell, ty)?)?),
        NChar(n) | NVarChar(n) => {
            let units = utf16(text_of(cell, ty)?, out);
            if units > usize::from(n) {
                return Err(format!("{units} UTF-16 units do not fit {}", ty.sql_name()));
            }
            if let NChar(_) = ty {
                for _ in units..usize::from(n) {
                    out.extend_from_slice(&[b' ', 0]);
                }
            }
        }
        NVarCharMax | NText | Xml => {
            utf16(text_of(cell, ty)?, out);
        }
        Binary(n) | VarBinary(n) => {
            let Cell::Bytes(b) = cell else {
                return Err(mismatch(cell, ty));
            };
            if b.len() > usize::from(n) {
                return Err(format!("{} bytes do not fit {}", b.len(), ty.sql_name()));
            }
            out.extend_from_slice(b);
            if let Binary(_) = ty {
                out.resize(out.len() + usize::from(n) - b.len(), 0);
            }
        }
        VarBinaryMax | Image => match cell {
            Cell::Bytes(b) => out.extend_from_slice(b),
            other => return Err(mismatch(other, ty)),
        },
        UniqueIdentifier => {
            let Cell::Guid(g) = cell else {
                return Err(mismatch(cell, ty));
            };
            // Data1 (u32), Data2 (u16) and Data3 (u16) little-endian, Data4 as is.
            let mut w = *g;
            w[0..4].reverse();
            w[4..6].reverse();
            w[6..8].reverse();
            out.extend_from_slice(&w);
        }
        Date => {
            let Cell::Date(d) = cell else {
                return Err(mismatch(cell, ty));
            };
            check_date(d)?;
            put_date_days(out, days_since_0001(d))?;
        }
        Time(s) => {
            let Cell::Time(t) = cell else {
                return Err(mismatch(cell, ty));
            };
            if put_time(out, t, s)? {
                return Err(format!("{t:?} rounds to 24:00 at time({s})"));
            }
        }
        DateTime2(s) => {
            let Cell::DateTime(d, t) = cell else {
                return Err(mismatch(cell, ty));
            };
            put_datetime2(out, d, t, s)?;
        }
        DateTimeOffset(s) => {
            let (d, t, offset) = match cell {
                Cell::DateTimeOffset(d, t, o) => (d, t, *o),
                Cell::DateTime(d, t) => (d, t, 0),
                other => return Err(mismatch(other, ty)),
            };
            let (ud, ut) = to_utc(d, t, offset)?;
            put_datetime2(out, &ud, &ut, s)?;
            out.extend_from_slice(&offset.to_le_bytes());
        }
        DateTime => {
            let Cell::DateTime(d, t) = cell else {
                return Err(mismatch(cell, ty));
            };
            check_date(d)?;
            check_time(t)?;
            if d.year < 1753 {
                return Err(format!("{d:?} is before 1753-01-01, the first datetime"));
            }
            // Days since 1900-01-01, then 1/300 second ticks since midnight (rounded).
            let mut days =
                days_from_civil(d.year.into(), d.month, d.day) - days_from_civil(1900, 1, 1);
            let mut ticks = (nanos_of_day(t) * 3 + 5_000_000) / 10_000_000;
            if ticks >= 300 * 86_400 {
                ticks -= 300 * 86_400;
                days += 1;
            }
            out.extend_from_slice(&(days as i32).to_le_bytes());
            out.extend_from_slice(&(ticks as u32).to_le_bytes());
        }
        SmallDateTime => {
            let Cell::DateTime(d, t) = cell else {
                return Err(mismatch(cell, ty));
            };
            check_date(d)?;
            check_time(t)?;
            // Days since 1900-01-01 and minutes since midnight; 29.998 s and up round up.
            let mut days =
                days_from_civil(d.year.into(), d.month, d.day) - days_from_civil(1900, 1, 1);
            let mut minutes = (nanos_of_day(t) + 30_002_000_000) / 60_000_000_000;
            if minutes >= 1440 {
                minutes -= 1440;
                days += 1;
            }
            let days = u16::try_from(days)
                .map_err(|_| format!("{d:?} is outside the smalldatetime range"))?;
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&(minutes as u16).to_le_bytes());
        }
        Variant => return Err("a sql_variant cannot nest another sql_variant".into()),
    }
    Ok(())
}
