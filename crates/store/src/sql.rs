//! Moving values between Shoal and SQLite, and quoting names safely in generated SQL.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};
use shoal_core::Value;

use crate::error::{Result, StoreError};

/// A table or column name as a quoted SQL identifier, whatever characters it holds.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value bound as a statement parameter exactly as it is: text as its raw bytes.
pub(crate) struct Bind<'a>(pub(crate) &'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value borrowed from an encoded change, bound exactly as it is.
pub(crate) struct BindRef<'a>(pub(crate) shoal_core::ValueRef<'a>);

impl ToSql for BindRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use shoal_core::ValueRef as V;
        Ok(ToSqlOutput::Borrowed(match self.0 {
            V::Null => ValueRef::Null,
            V::Integer(i) => ValueRef::Integer(i),
            V::Real(r) => ValueRef::Real(r),
            V::Text(t) => ValueRef::Text(t),
            V::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value read from SQLite, byte for byte.
pub(crate) fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(t.to_vec()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The stored form of a primary key.
pub(crate) fn key_blob(key: &[Value]) -> Vec<u8> {
    postcard::to_stdvec(key).unwrap_or_default()
}

/// Reads a stored primary key back.
pub(crate) fn key_from_blob(blob: &[u8]) -> Result<Vec<Value>> {
    postcard::from_bytes(blob).map_err(|e| StoreError::Damaged {
        what: "a stored primary key".into(),
        detail: e.to_string(),
    })
}

/// A result of Shoal's inside a row mapper, which must give rusqlite's errors: the
/// error is carried as a conversion failure of column `column`.
pub(crate) fn in_row<T>(column: usize, result: Result<T>) -> rusqlite::Result<T> {
    result.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// `"a" IS ?n AND "b" IS ?n+1 ...` for the key columns, parameters from `first`.
pub(crate) fn key_match(key_columns: &[String], first: usize) -> String {
    key_columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} IS ?{}", ident(c), first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A key as people read it: `(1, 'abc')`.
pub(crate) fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key.iter().map(Value::to_sql_literal).collect();
    format!("({})", parts.join(", "))
}
