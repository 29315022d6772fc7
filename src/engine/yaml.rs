//! The one place that calls the YAML parser, so that options and error rendering agree.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Problem;

/// Parses `text` (from the file called `file`) into `T`, turning a YAML error into a
/// [`Problem`] located at `file:line:column`.
///
/// YAML 1.1 booleans (`yes`, `on`) stay strings, and `0755` stays the string `"0755"`
/// rather than becoming a number, so what the user typed is what the schema checks.
pub(crate) fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Problem> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let plain = e.without_snippet().to_string();
        let message = match plain.rsplit_once(" at line ") {
            Some((m, _)) => m.to_string(),
            None => plain,
        };
        let location = match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.to_string(),
        };
        Problem::new(location, message)
    })
}

/// A YAML mapping kept in file order (serde_json's map sorts its keys); an empty
/// document or a null value reads as an empty mapping.
pub(crate) struct Ordered<V>(pub(crate) Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }

        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

/// Reads a YAML document that must be a mapping (or empty) into ordered entries.
pub(crate) fn parse_ordered<V: DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<Vec<(String, V)>, Problem> {
    let doc: Option<Ordered<V>> = parse(file, text)?;
    Ok(doc.map(|o| o.0).unwrap_or_default())
}
