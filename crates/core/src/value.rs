//! SQLite values as Shoal carries them: the five storage classes, byte for byte.

use serde::{Deserialize, Serialize};

/// One SQLite value. Text is kept as raw bytes, because SQLite stores whatever bytes it
/// is given as text, valid UTF-8 or not, and Shoal must hand back exactly those bytes.
/// Reals are kept as their IEEE 754 bits, so `-0.0`, infinities and NaN payloads
/// survive encoding unchanged (SQLite itself stores a NaN as NULL).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text, as the bytes SQLite holds.
    Text(#[serde(with = "serde_bytes_vec")] Vec<u8>),
    /// A blob.
    Blob(#[serde(with = "serde_bytes_vec")] Vec<u8>),
}

impl Value {
    /// The value as SQL text, for people to read: strings quoted, blobs in hex.
    pub fn to_sql_literal(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Integer(i) => i.to_string(),
            Value::Real(r) => format!("{r:?}"),
            Value::Text(t) => format!("'{}'", String::from_utf8_lossy(t).replace('\'', "''")),
            Value::Blob(b) => format!("X'{}'", hex::encode_upper(b)),
        }
    }

    /// Parses the form `to_sql_literal` prints, plus bare words as text; for
    /// values that people type on a command line.
    pub fn parse_literal(s: &str) -> Value {
        let t = s.trim();
        if t.eq_ignore_ascii_case("null") {
            return Value::Null;
        }
        if let Ok(i) = t.parse::<i64>() {
            return Value::Integer(i);
        }
        if let Ok(r) = t.parse::<f64>() {
            return Value::Real(r);
        }
        if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
            return Value::Text(t[1..t.len() - 1].replace("''", "'").into_bytes());
        }
        if t.len() >= 3
            && (t.starts_with("X'") || t.starts_with("x'"))
            && t.ends_with('\'')
            && let Ok(b) = hex::decode(&t[2..t.len() - 1])
        {
            return Value::Blob(b);
        }
        Value::Text(s.as_bytes().to_vec())
    }
}

/// Values are equal when they are the same bytes: `-0.0 != 0.0`, and a NaN equals a
/// NaN with the same bits. This is identity, not SQL comparison.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            (Value::Text(a), Value::Text(b)) | (Value::Blob(a), Value::Blob(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// Hashes what `eq` compares: the storage class and the exact bytes.
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Integer(i) => i.hash(state),
            Value::Real(r) => r.to_bits().hash(state),
            Value::Text(b) | Value::Blob(b) => b.hash(state),
        }
    }
}

/// Serializes byte vectors as one length-prefixed run instead of element by element.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::from_bits(0x7ff8_dead_beef_0001)),
            ]
            .prop_map(Value::Real),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Text),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip_byte_for_byte(v in any_value()) {
            let bytes = postcard::to_stdvec(&v).expect("encode");
            let back: Value = postcard::from_bytes(&bytes).expect("decode");
            prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn extremes_round_trip() {
        for v in [
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(-0.0),
            Value::Real(f64::NAN),
            Value::Text(vec![0xff, 0xfe, b'a']),
        ] {
            let bytes = postcard::to_stdvec(&v).expect("encode");
            assert_eq!(postcard::from_bytes::<Value>(&bytes).expect("decode"), v);
        }
        assert_ne!(Value::Real(0.0), Value::Real(-0.0));
        assert_ne!(Value::Text(b"a".to_vec()), Value::Blob(b"a".to_vec()));
    }

    #[test]
    fn literals_parse_back() {
        for v in [
            Value::Null,
            Value::Integer(-5),
            Value::Real(2.5),
            Value::Text(b"it's".to_vec()),
            Value::Blob(vec![1, 0xab]),
        ] {
            assert_eq!(Value::parse_literal(&v.to_sql_literal()), v);
        }
        assert_eq!(
            Value::parse_literal("hello"),
            Value::Text(b"hello".to_vec())
        );
    }
}
