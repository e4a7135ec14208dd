//! The one input, `text`, decoded into rows as both transports receive it: its name,
//! datatype and shape checked, raw `BYTES` split, each row validated as `Classify`
//! validates its text.

use sms_proto::validate_text;
use tonic::Status;

use super::{INPUT, MODEL_NAME, Oip};

/// Row `i`'s bytes as a validated, normalized text, or INVALID_ARGUMENT naming the row.
pub fn text_of_row(i: usize, row: &[u8]) -> Result<String, Status> {
    let text = std::str::from_utf8(row)
        .map_err(|e| Status::invalid_argument(format!("row {i} of input `{INPUT}` is not valid UTF-8: {e}")))?;
    validate_text(text).map_err(|e| Status::invalid_argument(format!("row {i} of input `{INPUT}`: {e}")))
}

/// The rows of a raw `BYTES` tensor: each a 4-byte little-endian length and that many
/// bytes, exactly `n` of them filling the buffer.
pub fn split_raw_bytes(raw: &[u8], n: usize) -> Result<Vec<&[u8]>, Status> {
    let bad = |why: String| {
        Status::invalid_argument(format!(
            "the raw contents of input `{INPUT}` do not add up: {why} (each BYTES element is a 4-byte \
             little-endian length and that many bytes)"
        ))
    };
    let mut rows = Vec::with_capacity(n);
    let mut rest = raw;
    while !rest.is_empty() {
        if rows.len() == n {
            return Err(bad(format!("{} bytes are left after the {n} rows the shape says", rest.len())));
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(bad(format!("row {} has a length prefix of {} bytes", rows.len(), rest.len())));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(bad(format!("row {} claims {len} bytes, {} are left", rows.len(), tail.len())));
        }
        let (row, tail) = tail.split_at(len);
        rows.push(row);
        rest = tail;
    }
    if rows.len() != n {
        return Err(bad(format!("they hold {} rows, the shape says {n}", rows.len())));
    }
    Ok(rows)
}

/// The refusal of a request whose input count is not one (both transports).
pub(crate) fn one_input_expected(count: usize) -> Status {
    Status::invalid_argument(format!(
        "the request has {count} inputs: model {MODEL_NAME} takes one, `{INPUT}` (BYTES, shape [N] or [N, 1])"
    ))
}

/// The one input's name and datatype checked, and its row count from its shape (both
/// transports).
pub(crate) fn check_input(oip: &Oip, name: &str, datatype: &str, shape: &[i64]) -> Result<usize, Status> {
    if name != INPUT {
        return Err(Status::invalid_argument(format!(
            "unknown input {name:?}: model {MODEL_NAME} takes one input, `{INPUT}` (BYTES, shape [N] or [N, 1])"
        )));
    }
    if datatype != "BYTES" {
        return Err(Status::invalid_argument(format!(
            "input `{INPUT}` has datatype {datatype:?}; it must be BYTES (one UTF-8 text per row)"
        )));
    }
    oip.rows_in(shape)
}

#[cfg(test)]
mod tests {
    use super::split_raw_bytes;

    #[test]
    fn raw_bytes_must_add_up() {
        let mut raw = Vec::new();
        for t in ["hi", "", "a longer text"] {
            raw.extend_from_slice(&(t.len() as u32).to_le_bytes());
            raw.extend_from_slice(t.as_bytes());
        }
        let rows = split_raw_bytes(&raw, 3).unwrap();
        assert_eq!(rows, [&b"hi"[..], b"", b"a longer text"]);
        for (bytes, n) in [(&raw[..raw.len() - 1], 3), (&raw[..], 2), (&raw[..], 4), (&raw[..3], 1), (&[][..], 1)] {
            let err = split_raw_bytes(bytes, n).unwrap_err();
            assert!(err.message().contains("do not add up"), "{}", err.message());
        }
        let mut lying = raw.clone();
        lying[0] = 200;
        assert!(split_raw_bytes(&lying, 3).is_err());
    }
}
