//! Settings written as text in a pipeline file (`"500ms"`, `"float32?"`, `"mean(f0) as m"`) and
//! parsed with it, so that a bad value is an error with its key, line and column; each keeps its
//! text as written, for messages and for writing the file back (the DSL and the file stay
//! one-to-one).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A value a setting's text parses into.
pub trait Setting: Sized {
    /// Parses `text`; a config error says what is wrong (the file adds where).
    fn parse_setting(text: &str) -> Result<Self>;
}

/// A setting as written, with the value it parses into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<T> {
    text: String,
    value: T,
}

impl<T> Written<T> {
    /// A value with the text that writes it.
    pub(crate) fn new(text: impl Into<String>, value: T) -> Self {
        Written {
            text: text.into(),
            value,
        }
    }

    /// The parsed value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<T: Setting> FromStr for Written<T> {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Ok(Written::new(text, T::parse_setting(text)?))
    }
}

impl<T> fmt::Display for Written<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<T> Serialize for Written<T> {
    fn serialize<S: Serializer>(&self, out: S) -> std::result::Result<S::Ok, S::Error> {
        out.serialize_str(&self.text)
    }
}

impl<'de, T: Setting> Deserialize<'de> for Written<T> {
    fn deserialize<D: Deserializer<'de>>(input: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(input)?;
        text.parse().map_err(config_message)
    }
}

/// A config error as a serde error: its message only (serde adds the key, line and column).
fn config_message<E: serde::de::Error>(e: Error) -> E {
    match e {
        Error::Config { message, .. } => E::custom(message),
        other => E::custom(other),
    }
}
