//! YAML (and JSON, its subset) read into `serde_json::Value`s with the expansion of
//! aliases bounded. An alias repeats the node its anchor names, so a few hundred bytes can
//! stand for billions of values ("billion laughs"); serde_yaml stops deep nesting of
//! aliases, but not one anchor of thousands of values named thousands of times, whose
//! expansion grows with the square of the text. Every value a document expands to is
//! counted as it is built, and reading stops with [`YamlError::TooLarge`] once a text has
//! expanded to more than one value per byte plus [`ALIAS_ALLOWANCE`]: a text without
//! aliases never gets there, since every value it holds takes at least a byte.
//!
//! Every YAML input istiod reads goes through here: `--configDir` files, the mesh config
//! (file or ConfigMap) and `pilot-discovery validate -f`.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Values a text may expand to beyond one per byte: Go's YAML decoder, which upstream
/// istiod uses, lets any aliasing through below 400,000 decoded values.
pub const ALIAS_ALLOWANCE: usize = 400_000;

/// Why a YAML text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{0}")]
    Syntax(#[from] serde_yaml::Error),
    #[error("the text expands to more than {limit} values: its aliases repeat too much")]
    TooLarge { limit: usize },
    /// Valid YAML that does not fit the type asked for ([`from_value`]).
    #[error("{0}")]
    Shape(#[from] serde_json::Error),
}

/// The documents of a multi-document text, in order. A document that fails ends the
/// stream: YAML cannot resume after an error.
pub fn documents(text: &str) -> Documents<'_> {
    Documents {
        inner: serde_yaml::Deserializer::from_str(text),
        budget: Budget::for_text(text),
        failed: false,
    }
}

/// The one document of `text` (`Value::Null` when empty); more than one is an error.
pub fn single(text: &str) -> Result<Value, YamlError> {
    let budget = Budget::for_text(text);
    let result = Bounded { budget: &budget }.deserialize(serde_yaml::Deserializer::from_str(text));
    result.map_err(|e| budget.error(e))
}

/// Converts a value read here to `T`.
pub fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, YamlError> {
    Ok(serde_json::from_value(value)?)
}

/// See [`documents`].
pub struct Documents<'a> {
    inner: serde_yaml::Deserializer<'a>,
    budget: Budget,
    failed: bool,
}

impl Iterator for Documents<'_> {
    type Item = Result<Value, YamlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let de = self.inner.next()?;
        let result = Bounded {
            budget: &self.budget,
        }
        .deserialize(de)
        .map_err(|e| self.budget.error(e));
        self.failed = result.is_err();
        Some(result)
    }
}

/// How many more values the text may expand to.
struct Budget {
    limit: usize,
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn for_text(text: &str) -> Self {
        let limit = text.len().saturating_add(ALIAS_ALLOWANCE);
        Budget {
            limit,
            left: Cell::new(limit),
            exceeded: Cell::new(false),
        }
    }

    /// Takes one value; false once the budget is spent.
    fn take(&self) -> bool {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.exceeded.set(true);
                false
            }
        }
    }

    fn error(&self, e: serde_yaml::Error) -> YamlError {
        if self.exceeded.get() {
            YamlError::TooLarge { limit: self.limit }
        } else {
            YamlError::Syntax(e)
        }
    }
}

/// Builds a `Value` as `serde_json::Value`'s own `Deserialize` does, counting each value.
#[derive(Clone, Copy)]
struct Bounded<'b> {
    budget: &'b Budget,
}

impl Bounded<'_> {
    fn count<E: serde::de::Error>(self) -> Result<(), E> {
        if self.budget.take() {
            Ok(())
        } else {
            Err(E::custom("alias expansion limit exceeded"))
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        self.count()?;
        serde::Deserialize::deserialize(serde::de::value::I128Deserializer::<E>::new(v))
            .map(Value::Number)
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        self.count()?;
        <Number as serde::Deserialize>::deserialize(serde::de::value::U128Deserializer::<E>::new(v))
            .map(Value::Number)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(self))? {
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, as in JSON; counted like any value.
struct Key<'b>(Bounded<'b>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        self.0.count()?;
        <String as serde::Deserialize>::deserialize(deserializer)
    }
}

#[cfg(test)]
pub(crate) mod tests;
