//! Reading payload JSON into each host's small typed structs.
//!
//! The structs name only the fields hookci uses. Their fields are read
//! leniently (a field of the wrong type reads as absent), so that every
//! problem with a payload surfaces as one precise [`ParseError::Missing`]
//! naming the field, checked where the host's parser requires it, rather
//! than as a serde message. Unknown fields are skipped without recursion, and
//! serde_json's recursion limit bounds the nesting of fields that are read.

use super::ParseError;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Reads a whole body: UTF-8 JSON with an object at the top.
pub(super) fn object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    // Checked up front because serde_json does not validate the bytes of
    // strings it skips.
    let text = std::str::from_utf8(body).map_err(|_| ParseError::Json)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de
        .deserialize_any(ObjectVisitor::<T>(PhantomData))
        .map_err(|_| ParseError::Json)?;
    de.end().map_err(|_| ParseError::Json)?;
    value.ok_or(ParseError::Missing("top-level object"))
}

/// `deserialize_with` for a string field: `None` when absent, null or not a string.
pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(StringVisitor)
}

/// `deserialize_with` for a flag: true only for JSON `true`.
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(FlagVisitor)
}

/// `deserialize_with` for a nested object: `None` when absent, null or not an object.
pub(super) fn nested<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_any(ObjectVisitor::<T>(PhantomData))
}

/// `deserialize_with` for a list of objects: elements that are not objects
/// are dropped; a value that is not a list reads as empty.
pub(super) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_any(ListVisitor::<T>(PhantomData))
}

/// Skips the rest of a list or map that is not of the expected type.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The scalar cases every lenient visitor maps to "absent".
macro_rules! absent_scalars {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    absent_scalars!(None);

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        drain_seq(seq).map(|()| false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        drain_map(map).map(|()| false)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    absent_scalars!(None);

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

/// One element of a lenient list: `None` unless it is an object.
struct Element<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Element<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        nested(d).map(Element)
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    absent_scalars!(Vec::new());

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Element(item)) = seq.next_element::<Element<T>>()? {
            out.extend(item);
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Shape {
        #[serde(default, deserialize_with = "string")]
        name: Option<String>,
        #[serde(default, deserialize_with = "flag")]
        on: bool,
        #[serde(default, deserialize_with = "nested")]
        inner: Option<Inner>,
        #[serde(default, deserialize_with = "list")]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    struct Inner {
        #[serde(default, deserialize_with = "string")]
        id: Option<String>,
    }

    #[test]
    fn fields_of_the_wrong_type_read_as_absent() {
        let s: Shape =
            object(br#"{"name": 5, "on": "yes", "inner": [1], "items": [{"id": "a"}, 3, null]}"#)
                .unwrap();
        assert_eq!(s.name, None);
        assert!(!s.on);
        assert!(s.inner.is_none());
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].id.as_deref(), Some("a"));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        assert_eq!(
            object::<Shape>(b"[]").unwrap_err(),
            ParseError::Missing("top-level object")
        );
        assert_eq!(
            object::<Shape>(b"null").unwrap_err(),
            ParseError::Missing("top-level object")
        );
        assert_eq!(object::<Shape>(b"{} x").unwrap_err(), ParseError::Json);
        assert_eq!(
            object::<Shape>(b"{\"x\": \"\xff\"}").unwrap_err(),
            ParseError::Json
        );
    }

    #[test]
    fn deep_nesting_is_skipped_or_refused_without_overflow() {
        let mut body = String::from("{\"inner\": {\"id\": ");
        body.push_str(&"{\"a\": ".repeat(200));
        body.push('1');
        body.push_str(&"}".repeat(200));
        body.push_str("}}");
        // Skipped values are not depth-limited but are skipped iteratively.
        assert!(object::<Shape>(body.as_bytes()).is_ok());
        let deep = format!(
            "{{\"items\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(object::<Shape>(deep.as_bytes()).unwrap().items.is_empty());
        let unclosed = "[".repeat(100_000);
        assert_eq!(
            object::<Shape>(unclosed.as_bytes()).unwrap_err(),
            ParseError::Json
        );
    }
}
