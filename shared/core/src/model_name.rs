//! Names users choose: model and alias names, and the S3 keys that carry them.
//!
//! Every name that becomes a path in the registry passes through [`ModelName`] or [`AliasName`]
//! first, so nothing outside the rule `^[a-z0-9][a-z0-9_-]{0,63}$` ever reaches the filesystem.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name {name:?} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")]
    BadName { kind: &'static str, name: String },
    #[error("key {key:?} is not under the models prefix {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    #[error("key {key:?} is not of the form <prefix><model>/<file>.onnx")]
    NotAModelKey { key: String },
    #[error("key {key:?} has a '..' segment, an empty segment or a control character")]
    UnsafeKey { key: String },
}

fn check_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if first_ok && rest_ok && bytes.len() <= 64 {
        Ok(())
    } else {
        Err(NameError::BadName {
            kind,
            name: name.to_string(),
        })
    }
}

macro_rules! checked_name {
    ($(#[$doc:meta])* $type:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $type(String);

        impl $type {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $type {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                check_name($kind, name)?;
                Ok(Self(name.to_string()))
            }
        }

        impl TryFrom<String> for $type {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                check_name($kind, &name)?;
                Ok(Self(name))
            }
        }

        impl From<$type> for String {
            fn from(name: $type) -> String {
                name.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_name!(
    /// A model's name: the directory under the registry root and the `{m}` of the inference routes.
    ModelName,
    "model"
);
checked_name!(
    /// An alias of a model (`live` by default): the file `aliases/<alias>.json`.
    AliasName,
    "alias"
);

impl AliasName {
    pub fn live() -> Self {
        Self("live".to_string())
    }
}

impl Default for AliasName {
    fn default() -> Self {
        Self::live()
    }
}

/// Decodes an object key as S3 puts it in event notifications: URL-encoded, `+` for a space.
pub fn decode_event_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes a key the way S3 does in event notifications (the inverse of [`decode_event_key`]).
pub fn encode_event_key(key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

/// What an uploaded object's key names: `<prefix><model>/<anything>.onnx`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKey {
    pub model: ModelName,
    pub key: String,
}

impl ModelKey {
    /// Parses a decoded key. `<anything>` may contain `/` but no `..`, empty segment or control
    /// character: such keys are refused even though they never become paths.
    pub fn parse(key: &str, prefix: &str) -> Result<Self, NameError> {
        let rest = key
            .strip_prefix(prefix)
            .ok_or_else(|| NameError::OutsidePrefix {
                key: key.to_string(),
                prefix: prefix.to_string(),
            })?;
        if rest
            .split('/')
            .any(|segment| segment == ".." || segment == "." || segment.is_empty())
            || key.chars().any(char::is_control)
        {
            return Err(NameError::UnsafeKey {
                key: key.to_string(),
            });
        }
        let (model, file) = rest
            .split_once('/')
            .ok_or_else(|| NameError::NotAModelKey {
                key: key.to_string(),
            })?;
        if !file.ends_with(".onnx") || file == ".onnx" {
            return Err(NameError::NotAModelKey {
                key: key.to_string(),
            });
        }
        Ok(Self {
            model: model.parse()?,
            key: key.to_string(),
        })
    }
}

/// The key of a model's optional contract object: `<prefix><model>/contract.json`.
pub fn contract_key(prefix: &str, model: &ModelName) -> String {
    format!("{prefix}{model}/contract.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_follow_the_rule() {
        for good in ["iris", "a", "0", "iris-v2_b", &"x".repeat(64)] {
            assert!(good.parse::<ModelName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Iris",
            "-iris",
            "_x",
            "ir is",
            "..",
            "a/b",
            "é",
            &"x".repeat(65),
            &"x".repeat(1000),
            "a\0",
            "\u{456}ris",   // Cyrillic і: looks like "iris"
            "\u{ff49}ris",  // fullwidth ｉ
            "iris\u{200b}", // zero-width space
        ] {
            assert!(bad.parse::<ModelName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_keys_are_decoded_with_plus_as_space() {
        assert_eq!(
            decode_event_key("models/iris/my+model%282%29.onnx"),
            "models/iris/my model(2).onnx"
        );
        assert_eq!(
            decode_event_key("models/iris/a%2Bb.onnx"),
            "models/iris/a+b.onnx"
        );
        let key = "models/iris/näive model+1.onnx";
        assert_eq!(decode_event_key(&encode_event_key(key)), key);
    }

    #[test]
    fn model_keys_name_the_model() {
        let parsed = ModelKey::parse("models/iris/v2/model.onnx", "models/").unwrap();
        assert_eq!(parsed.model.as_str(), "iris");
    }

    #[test]
    fn unsafe_or_foreign_keys_are_refused() {
        let cases = [
            ("other/iris/model.onnx", "prefix"),
            ("models/iris/../../etc/model.onnx", "unsafe"),
            ("models/../model.onnx", "unsafe"),
            ("models/iris//model.onnx", "unsafe"),
            ("models/Iris/model.onnx", "bad name"),
            ("models/iris/contract.json", "not onnx"),
            ("models/iris.onnx", "no model dir"),
            ("models/iris/model.onnx\n", "control"),
            ("models/iris/mo\0del.onnx", "NUL"),
            ("models/\u{456}ris/model.onnx", "look-alike name"),
        ];
        let long = format!("models/{}/model.onnx", "x".repeat(1000));
        assert!(
            ModelKey::parse(&long, "models/").is_err(),
            "a 1000-character name"
        );
        for (key, why) in cases {
            assert!(
                ModelKey::parse(key, "models/").is_err(),
                "{key} should be refused ({why})"
            );
        }
    }
}
