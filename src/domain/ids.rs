//! Ids as types, so that a corp id can never be passed where a msgid is expected.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                $name(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name(value.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// A corporation's id (`ww…`), as configured and as WeCom names it.
    CorpId
);
string_id!(
    /// The id under which a mailbox entry is announced (`spec_notify_app`) and fetched.
    NotifyId
);
string_id!(
    /// A chat record's id, unique per corp.
    MsgId
);

/// One delivery of a callback: a digest of its corp and ciphertext. A WeCom retry carries the same
/// ciphertext and so the same key; two genuine callbacks never do (each starts with 16 random bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey(pub [u8; 20]);

impl DeliveryKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_with_text_and_display_as_it() {
        let corp = CorpId::from("ww1");
        assert_eq!(corp, "ww1");
        assert_eq!(corp.to_string(), "ww1");
        let map: std::collections::HashMap<CorpId, u8> = [(corp.clone(), 1)].into();
        assert_eq!(map.get("ww1"), Some(&1), "looked up by &str");
    }
}
