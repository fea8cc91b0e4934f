//! Metric label values that callers cannot choose.
//!
//! prometheus-client writes a label value into the text exposition as it is, without
//! escaping, so a value holding `"`, `\` or a newline would end the series early or forge
//! another one, and every distinct value is a series kept for the life of the process.
//! Label values are therefore a [`Label`]: a string that lives as long as the program (a
//! constant or compiled-in data, never request text), made of characters that need no
//! escaping. Whatever a client sends is mapped onto a fixed set of them, [`Label::OTHER`]
//! for anything outside it.

#[cfg(test)]
mod tests;

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// One label value from a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(&'static str);

impl Label {
    /// The value for anything outside a label's set.
    pub const OTHER: Label = Label::new("other");

    /// A label from a constant; in a `const` an unsafe value fails the build.
    ///
    /// # Panics
    /// If `value` holds a character outside `[A-Za-z0-9_.:/-]`.
    pub const fn new(value: &'static str) -> Label {
        assert!(is_safe(value), "label values are [A-Za-z0-9_.:/-]");
        Label(value)
    }

    /// A label from compiled-in data: `value` if its characters are safe, else [`Label::OTHER`].
    pub fn from_static(value: &'static str) -> Label {
        if is_safe(value) {
            Label(value)
        } else {
            Label::OTHER
        }
    }

    /// The member of `set` equal to `value`, else [`Label::OTHER`].
    pub fn pick(value: &str, set: &[Label]) -> Label {
        set.iter()
            .copied()
            .find(|l| l.0 == value)
            .unwrap_or(Label::OTHER)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0)
    }
}

/// True when every byte of `value` is written as it is in both exposition formats.
pub const fn is_safe(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-')) {
            return false;
        }
        i += 1;
    }
    true
}
