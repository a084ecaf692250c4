//! Rows for `COPY … FROM STDIN (FORMAT BINARY)`: the cheapest way to append many rows to
//! Postgres. A bulk `INSERT … SELECT FROM UNNEST(arrays)` makes Postgres build and take apart
//! one array per column; binary COPY hands it each value in its storage form
//! (measured: ~6 µs of Postgres CPU per transfer row against ~10 µs through `UNNEST`).
//!
//! The format (PostgreSQL docs, "COPY", binary format): a signature and two 32-bit fields,
//! then per row a 16-bit field count and per field a 32-bit length (-1 for NULL) and the bytes,
//! then -1 as a 16-bit trailer. Values are in network byte order; a NUMERIC is written
//! byte for byte as sqlx's `Encode` for `Decimal` writes a bound parameter (`numeric_bytes`).

use rust_decimal::Decimal;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::classify;
use crate::store::StoreError;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

pub(crate) struct CopyRows {
    bytes: Vec<u8>,
    rows: usize,
}

impl CopyRows {
    pub(crate) fn new() -> CopyRows {
        let mut bytes = Vec::with_capacity(64 * 1024);
        bytes.extend_from_slice(SIGNATURE);
        bytes.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        bytes.extend_from_slice(&0_i32.to_be_bytes()); // header extension length
        CopyRows { bytes, rows: 0 }
    }

    /// Starts a row of `fields` values.
    pub(crate) fn row(&mut self, fields: i16) {
        self.rows += 1;
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn null(&mut self) {
        self.bytes.extend_from_slice(&(-1_i32).to_be_bytes());
    }

    pub(crate) fn uuid(&mut self, value: Uuid) {
        self.field(value.as_bytes());
    }

    pub(crate) fn optional_uuid(&mut self, value: Option<Uuid>) {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub(crate) fn int8(&mut self, value: i64) {
        self.field(&value.to_be_bytes());
    }

    pub(crate) fn optional_int8(&mut self, value: Option<i64>) {
        match value {
            Some(value) => self.int8(value),
            None => self.null(),
        }
    }

    pub(crate) fn int2(&mut self, value: i16) {
        self.field(&value.to_be_bytes());
    }

    pub(crate) fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    pub(crate) fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// A `jsonb` value (its binary form: version 1, then the JSON text), or NULL for none.
    pub(crate) fn optional_jsonb(&mut self, json: Option<&str>) {
        let Some(json) = json else { return self.null() };
        self.bytes.extend_from_slice(&((json.len() + 1) as i32).to_be_bytes());
        self.bytes.push(1);
        self.bytes.extend_from_slice(json.as_bytes());
    }

    /// A one-dimensional array without NULLs of fixed-size elements of type `oid`, each
    /// written by `element` (the binary array format: dimensions, a has-NULL flag, the
    /// element type, then per dimension its length and lower bound, then the elements).
    fn array<T>(&mut self, oid: u32, values: &[T], element_len: i32, element: impl Fn(&T, &mut Vec<u8>)) {
        let length = 20 + values.len() * (4 + element_len as usize);
        self.bytes.extend_from_slice(&(length as i32).to_be_bytes());
        self.bytes.extend_from_slice(&1_i32.to_be_bytes()); // dimensions
        self.bytes.extend_from_slice(&0_i32.to_be_bytes()); // no NULLs
        self.bytes.extend_from_slice(&oid.to_be_bytes());
        self.bytes.extend_from_slice(&(values.len() as i32).to_be_bytes());
        self.bytes.extend_from_slice(&1_i32.to_be_bytes()); // lower bound
        for value in values {
            self.bytes.extend_from_slice(&element_len.to_be_bytes());
            element(value, &mut self.bytes);
        }
    }

    /// A `uuid[]`, or NULL for none.
    pub(crate) fn uuid_array_or_null(&mut self, values: &[Uuid]) {
        if values.is_empty() {
            return self.null();
        }
        self.array(2950, values, 16, |value, bytes| bytes.extend_from_slice(value.as_bytes()));
    }

    /// An `int8[]`, or NULL for none.
    pub(crate) fn int8_array_or_null(&mut self, values: &[i64]) {
        if values.is_empty() {
            return self.null();
        }
        self.array(20, values, 8, |value, bytes| bytes.extend_from_slice(&value.to_be_bytes()));
    }

    pub(crate) fn numeric(&mut self, value: Decimal) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&0_i32.to_be_bytes());
        numeric_bytes(value, &mut self.bytes);
        let length = (self.bytes.len() - start - 4) as i32;
        self.bytes[start..start + 4].copy_from_slice(&length.to_be_bytes());
    }

    pub(crate) fn optional_numeric(&mut self, value: Option<Decimal>) {
        match value {
            Some(value) => self.numeric(value),
            None => self.null(),
        }
    }

    /// Sends the rows with `statement` (a `COPY … FROM STDIN (FORMAT BINARY)`) and checks
    /// Postgres took every one.
    pub(crate) async fn send(mut self, connection: &mut PgConnection, statement: &str) -> Result<(), StoreError> {
        if self.rows == 0 {
            return Ok(());
        }
        self.bytes.extend_from_slice(&(-1_i16).to_be_bytes());
        let mut copy = connection.copy_in_raw(statement).await.map_err(classify)?;
        if let Err(error) = copy.send(self.bytes).await {
            let _ = copy.abort("send failed").await;
            return Err(classify(error));
        }
        let copied = copy.finish().await.map_err(classify)?;
        if copied != self.rows as u64 {
            return Err(StoreError::Corrupt(format!("COPY took {copied} of {} rows", self.rows)));
        }
        Ok(())
    }
}

/// `value` in NUMERIC's binary form: the number of base-10,000 digits, the weight of the first
/// (its power of 10,000), the sign, the display scale, then the digits, most significant first,
/// without trailing zero digits. The same bytes as sqlx's `Encode` for `Decimal` (zero, of any
/// sign or scale, as a positive 0 with scale 0; `the_bytes_are_sqlx_s` holds them equal), which
/// goes through a `PgNumeric` with a `Vec` of digits and a 128-bit division per digit: six
/// numerics per transfer made that ~1 % of a transfer's instructions (`scripts/callgrind`).
fn numeric_bytes(value: Decimal, out: &mut Vec<u8>) {
    const SIGN_NEGATIVE: u16 = 0x4000;
    if value.is_zero() {
        out.extend_from_slice(&[0; 8]);
        return;
    }
    let scale = value.scale();
    // Whole base-10,000 digits after the point: the mantissa gains the zeros that take its
    // scale to a multiple of four. `Decimal`'s 96-bit mantissa times at most 1,000 is below
    // 10^32, so two 64-bit halves of 16 decimal digits each hold it.
    // Most amounts fit 64 bits, whose division by a constant is a multiplication; a 128-bit
    // one is a library call.
    let mantissa = value.mantissa().unsigned_abs() * 10_u128.pow((4 - scale % 4) % 4);
    let (mut high, mut low) = match u64::try_from(mantissa) {
        Ok(mantissa) => (mantissa / 10_u64.pow(16), mantissa % 10_u64.pow(16)),
        Err(_) => ((mantissa / 10_u128.pow(16)) as u64, (mantissa % 10_u128.pow(16)) as u64),
    };
    let mut digits = [0_u16; 8]; // least significant first
    for digit in digits.iter_mut().take(4) {
        *digit = (low % 10_000) as u16;
        low /= 10_000;
    }
    for digit in digits.iter_mut().skip(4) {
        *digit = (high % 10_000) as u16;
        high /= 10_000;
    }
    let count = 8 - digits.iter().rev().take_while(|&&digit| digit == 0).count();
    let trailing_zeros = digits.iter().take_while(|&&digit| digit == 0).count();
    let weight = count as i16 - scale.div_ceil(4) as i16 - 1;
    let sign = if value.is_sign_negative() { SIGN_NEGATIVE } else { 0 };
    out.extend_from_slice(&((count - trailing_zeros) as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for digit in digits[trailing_zeros..count].iter().rev() {
        out.extend_from_slice(&digit.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgArgumentBuffer;
    use sqlx::{Encode, Postgres};

    use super::*;

    fn sqlx_bytes(value: Decimal) -> Vec<u8> {
        let mut buffer = PgArgumentBuffer::default();
        let _is_null = <Decimal as Encode<'_, Postgres>>::encode_by_ref(&value, &mut buffer).expect("sqlx encodes");
        buffer.to_vec()
    }

    #[test]
    fn the_bytes_are_sqlx_s() {
        let mut negative_zero = Decimal::new(0, 2);
        negative_zero.set_sign_negative(true);
        let mut cases = vec![
            Decimal::ZERO,
            Decimal::new(0, 7),
            negative_zero,
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::from_i128_with_scale(Decimal::MAX.mantissa(), 28),
            Decimal::new(10_000, 0),
            Decimal::new(100_000_000, 4),
            Decimal::new(12_345, 1),
        ];
        // Every scale over mantissas of every length, from a fixed-seed generator.
        let mut state: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834;
        for scale in 0..=28 {
            for digits in 0..=29 {
                for _ in 0..8 {
                    state = state.wrapping_mul(0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645).wrapping_add(1);
                    let bound = 10_i128.checked_pow(digits).unwrap_or(i128::MAX).min(Decimal::MAX.mantissa() + 1);
                    let mantissa = (state >> 24).cast_signed() % bound;
                    // Round numbers too, whose low base-10,000 digits are zero.
                    let mantissa =
                        if state & 2 == 0 { mantissa } else { mantissa / 10_000_i128.pow(2) * 10_000_i128.pow(2) };
                    let mantissa = if state & 1 == 0 { mantissa } else { -mantissa };
                    cases.push(Decimal::from_i128_with_scale(mantissa, scale));
                }
            }
        }
        for value in cases {
            let mut ours = Vec::new();
            numeric_bytes(value, &mut ours);
            assert_eq!(ours, sqlx_bytes(value), "{value} {:?}", value.unpack());
        }
    }

    #[test]
    fn a_field_is_its_length_then_its_bytes() {
        let mut rows = CopyRows::new();
        let header = rows.bytes.len();
        rows.numeric(Decimal::new(-12_345_678, 2));
        // -123456.78: digits 12, 3456, 7800; weight 1; negative; scale 2.
        let expected: &[u8] = &[0, 0, 0, 14, 0, 3, 0, 1, 0x40, 0, 0, 2, 0, 12, 0x0d, 0x80, 0x1e, 0x78];
        assert_eq!(&rows.bytes[header..], expected);
    }
}
