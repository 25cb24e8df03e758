//! API keys on the client side: the key a command sends
//! (`--api-key`, `TELEMETRY_API_KEY`), and `telemetryctl key new`, which
//! makes one and prints the entry the server's key file takes.
//!
//! A key is `tpk_` and 64 hex digits (32 random bytes). The server's file
//! holds only its SHA-256, so the key is shown once, when it is made.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::cli::{KeyNewArgs, KeyScope};
use crate::{Error, Result};

/// The prefix of every key `key new` makes: easy to spot in a leaked file.
pub const KEY_PREFIX: &str = "tpk_";
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Longest key name the server takes (a metric label).
pub const MAX_NAME_LEN: usize = 63;

/// A key to send; its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl FromStr for ApiKey {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty key".into());
        }
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err("a key is printable ASCII without spaces".into());
        }
        Ok(ApiKey(s.to_string()))
    }
}

impl ApiKey {
    /// The value of the `authorization` header / metadata.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new key and the entry that lets it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub key: String,
    pub sha256: String,
    pub scopes: Vec<&'static str>,
}

impl NewKey {
    /// A key of `bytes` (random in use; fixed in tests).
    pub fn from_bytes(name: &str, scopes: &[KeyScope], bytes: [u8; KEY_BYTES]) -> Result<NewKey> {
        check_name(name)?;
        if scopes.is_empty() {
            return Err(Error::InvalidFlag(
                "--scope: give write, read or both".into(),
            ));
        }
        let key = format!("{KEY_PREFIX}{}", hex(&bytes));
        let mut names: Vec<&'static str> = scopes.iter().map(|s| s.as_str()).collect();
        names.sort_unstable_by_key(|s| std::cmp::Reverse(*s));
        names.dedup();
        Ok(NewKey {
            name: name.to_string(),
            sha256: sha256_hex(&key),
            key,
            scopes: names,
        })
    }

    /// The key file entry: name, hash and scopes, never the key.
    pub fn entry_yaml(&self) -> String {
        format!(
            "- name: {}\n  sha256: {}\n  scopes: [{}]\n",
            self.name,
            self.sha256,
            self.scopes.join(", ")
        )
    }

    /// What `key new` prints: the key once, then the entry.
    pub fn render(&self) -> String {
        format!(
            "# API key '{name}' (shown only now; the server keeps only its hash):\n\
             {key}\n\
             # Entry for keys.yaml:\n\
             {entry}",
            name = self.name,
            key = self.key,
            entry = self.entry_yaml()
        )
    }
}

/// `telemetryctl key new`.
pub fn new_key(args: &KeyNewArgs) -> Result<()> {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    print!(
        "{}",
        NewKey::from_bytes(&args.name, &args.scope, bytes)?.render()
    );
    Ok(())
}

/// The same rule as the server's key file.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidFlag(format!(
            "--name: must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::InvalidFlag(
            "--name: may hold only ASCII letters, digits, '-', '_' and '.'".into(),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lowercase hex SHA-256 of a key.
pub fn sha256_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_prefixed_hex_and_its_entry_holds_only_its_hash() {
        let k = NewKey::from_bytes(
            "sensors",
            &[KeyScope::Read, KeyScope::Write, KeyScope::Write],
            [7; 32],
        )
        .unwrap();
        assert_eq!(k.key, format!("tpk_{}", "07".repeat(32)));
        assert_eq!(k.sha256, sha256_hex(&k.key));
        assert_eq!(k.scopes, ["write", "read"]);
        let entry = k.entry_yaml();
        assert!(!entry.contains(&k.key), "{entry}");
        assert!(entry.contains(&format!("sha256: {}", k.sha256)));
        let shown = k.render();
        assert_eq!(shown.lines().nth(1), Some(k.key.as_str()));
        assert!(shown.ends_with(&entry));
    }

    #[test]
    fn bad_names_and_no_scope_are_refused_naming_the_flag() {
        let e = NewKey::from_bytes("a b", &[KeyScope::Write], [0; 32]).unwrap_err();
        assert!(e.to_string().starts_with("--name:"), "{e}");
        let e = NewKey::from_bytes("", &[KeyScope::Write], [0; 32]).unwrap_err();
        assert!(e.to_string().starts_with("--name:"), "{e}");
        let e = NewKey::from_bytes("a", &[], [0; 32]).unwrap_err();
        assert!(e.to_string().starts_with("--scope:"), "{e}");
    }

    #[test]
    fn a_key_is_hidden_in_debug_and_sent_as_bearer() {
        let key: ApiKey = "tpk_abc".parse().unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(key.bearer(), "Bearer tpk_abc");
        assert!("tpk a".parse::<ApiKey>().is_err());
        assert!("".parse::<ApiKey>().is_err());
    }
}
