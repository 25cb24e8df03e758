//! The API key file (pure): what the Secret holds under `keys.yaml`, its
//! rules, and the lookup of a presented key.
//!
//! ```yaml
//! - name: sensors          # label in metrics and logs; never the key
//!   sha256: 9f86d081884c7d65...   # lowercase hex SHA-256 of the key
//!   scopes: [write]        # write: send events; read: query API
//! ```
//!
//! Keys are never stored in clear: a presented key is hashed with SHA-256
//! and its digest compared, in constant time, with every entry's.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// Longest key name: it is a metric label value and a log field.
pub const MAX_NAME_LEN: usize = 63;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Send events (TelemetryIngest, `POST /api/v1/events*`).
    Write,
    /// Query aggregates (TelemetryQuery, `GET /api/v1/*`).
    Read,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Write, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
        }
    }

    /// What the scope is needed for, as an error message says it.
    pub fn needed_to(self) -> &'static str {
        match self {
            Scope::Write => "send events",
            Scope::Read => "query",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryYaml {
    name: String,
    sha256: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// One valid key: its name, the digest of its text, its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: Arc<str>,
    digest: [u8; 32],
    write: bool,
    read: bool,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("write", &self.write)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Write => self.write,
            Scope::Read => self.read,
        }
    }
}

/// The keys of one version of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<ApiKey>,
}

impl KeySet {
    /// Parses and checks the file. Every rule broken is named with the
    /// entry (index and name) it is broken by.
    pub fn from_yaml(text: &str) -> Result<KeySet> {
        if text.trim().is_empty() {
            return Err(invalid(
                "the file is empty (write `[]` to accept no key at all)".into(),
            ));
        }
        let entries: Vec<EntryYaml> = serde_yaml::from_str(text).map_err(|e| {
            invalid(format!(
                "not a list of {{name, sha256, scopes}} entries: {e}"
            ))
        })?;
        let mut keys: Vec<ApiKey> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            let key = check_entry(index, entry)?;
            if let Some(first) = keys.iter().position(|k| k.name == key.name) {
                return Err(invalid(format!(
                    "entry {index} ('{}'): duplicate name; entry {first} has it too",
                    key.name
                )));
            }
            if let Some(other) = keys.iter().find(|k| k.digest == key.digest) {
                return Err(invalid(format!(
                    "entry {index} ('{}'): duplicate sha256; the key '{}' has the same one",
                    key.name, other.name
                )));
            }
            keys.push(key);
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.name)
    }

    /// The key whose digest is the presented text's. Every entry is
    /// compared, in constant time, whether or not an earlier one matched:
    /// how long the lookup takes says nothing about which bytes matched.
    pub fn find(&self, presented: &str) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

fn invalid(message: String) -> Error {
    Error::ApiKeys(message)
}

fn check_entry(index: usize, e: EntryYaml) -> Result<ApiKey> {
    let at = |rule: String| invalid(format!("entry {index} ('{}'): {rule}", e.name));
    if e.name.is_empty() || e.name.len() > MAX_NAME_LEN {
        return Err(at(format!("name must be 1 to {MAX_NAME_LEN} characters")));
    }
    if !e
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(at(
            "name may hold only ASCII letters, digits, '-', '_' and '.'".into(),
        ));
    }
    let digest = parse_hex_digest(&e.sha256).ok_or_else(|| {
        at("sha256 must be 64 lowercase hex digits (the SHA-256 of the key, not the key)".into())
    })?;
    if e.scopes.is_empty() {
        return Err(at("scopes is empty; give write, read or both".into()));
    }
    let (mut write, mut read) = (false, false);
    for s in &e.scopes {
        match Scope::parse(s) {
            Some(Scope::Write) => write = true,
            Some(Scope::Read) => read = true,
            None => return Err(at(format!("unknown scope '{s}'; known: write, read"))),
        }
    }
    Ok(ApiKey {
        name: e.name.into(),
        digest,
        write,
        read,
    })
}

fn parse_hex_digest(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The lowercase hex SHA-256 of a key: what the file holds for it.
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, key: &str, scopes: &str) -> String {
        format!(
            "- name: {name}\n  sha256: {}\n  scopes: {scopes}\n",
            sha256_hex(key)
        )
    }

    fn err(text: &str) -> String {
        KeySet::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_file_finds_each_key_by_its_text_with_its_scopes() {
        let text = entry("sensors", "tpk_a", "[write]") + &entry("dash", "tpk_b", "[read, write]");
        let keys = KeySet::from_yaml(&text).unwrap();
        assert_eq!(keys.len(), 2);
        let a = keys.find("tpk_a").unwrap();
        assert_eq!(&*a.name, "sensors");
        assert!(a.allows(Scope::Write) && !a.allows(Scope::Read));
        let b = keys.find("tpk_b").unwrap();
        assert!(b.allows(Scope::Write) && b.allows(Scope::Read));
        assert!(keys.find("tpk_c").is_none());
        assert!(keys.find("").is_none());
        // The digest is not the key: presenting the hash itself fails.
        assert!(keys.find(&sha256_hex("tpk_a")).is_none());
    }

    #[test]
    fn an_empty_list_accepts_no_key_and_an_empty_file_is_refused() {
        assert!(KeySet::from_yaml("[]").unwrap().is_empty());
        assert!(err("").contains("the file is empty"), "{}", err(""));
        assert!(err("  \n").contains("the file is empty"));
    }

    #[test]
    fn a_duplicate_name_is_refused_naming_both_entries() {
        let text = entry("a", "k1", "[write]") + &entry("a", "k2", "[read]");
        let e = err(&text);
        assert!(e.contains("entry 1 ('a'): duplicate name; entry 0"), "{e}");
    }

    #[test]
    fn a_duplicate_digest_is_refused() {
        let text = entry("a", "k1", "[write]") + &entry("b", "k1", "[read]");
        let e = err(&text);
        assert!(e.contains("entry 1 ('b'): duplicate sha256"), "{e}");
    }

    #[test]
    fn bad_hex_is_refused_whatever_is_wrong_with_it() {
        let upper = sha256_hex("k").to_uppercase();
        for bad in [
            "abc",
            "tpk_secret",
            &upper,
            &format!("{}0", sha256_hex("k")),
        ] {
            let text = format!("- name: a\n  sha256: \"{bad}\"\n  scopes: [write]\n");
            let e = err(&text);
            assert!(
                e.contains("entry 0 ('a'): sha256 must be 64 lowercase hex digits"),
                "{bad}: {e}"
            );
            assert!(!e.contains(bad), "the value is not echoed: {e}");
        }
    }

    #[test]
    fn an_unknown_scope_is_refused_and_named() {
        let e = err(&entry("a", "k", "[write, admin]"));
        assert!(
            e.contains("entry 0 ('a'): unknown scope 'admin'; known: write, read"),
            "{e}"
        );
    }

    #[test]
    fn empty_or_missing_scopes_are_refused() {
        assert!(err(&entry("a", "k", "[]")).contains("entry 0 ('a'): scopes is empty"));
        let text = format!("- name: a\n  sha256: {}\n", sha256_hex("k"));
        assert!(err(&text).contains("scopes is empty"));
    }

    #[test]
    fn bad_names_and_unknown_fields_are_refused() {
        assert!(err(&entry("\"\"", "k", "[read]")).contains("name must be 1 to 63"));
        assert!(err(&entry("a b", "k", "[read]")).contains("name may hold only"));
        let long = "x".repeat(64);
        assert!(err(&entry(&long, "k", "[read]")).contains("name must be 1 to 63"));
        let text = entry("a", "k", "[read]") + "  key: tpk_clear\n";
        assert!(err(&text).contains("unknown field `key`"), "{}", err(&text));
        assert!(err("name: a").contains("not a list"));
    }

    #[test]
    fn the_debug_form_shows_no_digest() {
        let keys = KeySet::from_yaml(&entry("a", "k", "[read]")).unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains(&sha256_hex("k")[..16]), "{shown}");
    }

    #[test]
    fn sha256_hex_is_the_standard_digest() {
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
