//! The decision on one call (pure): the `authorization` value it carries,
//! the keys, the scope the call needs → the key's name, or why not.

use super::keyfile::{KeySet, Scope};

/// Why a call is refused. No variant holds the presented text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization` header / metadata.
    Missing,
    /// Present, but not `Bearer <key>` (or not text).
    Malformed,
    /// A bearer token that is no key of the file (mistyped or revoked).
    Unknown,
    /// A known key without the scope the call needs.
    Scope { key: String, needs: Scope },
}

impl Denied {
    /// 401 / UNAUTHENTICATED, or 403 / PERMISSION_DENIED (wrong scope).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Denied::Scope { .. })
    }

    /// The message the client gets: the rule, never the key.
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => {
                "an API key is required: send the header `authorization: Bearer <key>`".into()
            }
            Denied::Malformed => {
                "the authorization header is not `Bearer <key>`; no key was read".into()
            }
            Denied::Unknown => "the API key is not known (mistyped, or revoked)".into(),
            Denied::Scope { key, needs } => format!(
                "the key '{key}' lacks scope {needs}, needed to {}",
                needs.needed_to()
            ),
        }
    }
}

/// The key's name when `authorization` holds a key of `keys` that has
/// `needs`. The scheme is matched case-insensitively (RFC 9110).
pub fn authorize<'k>(
    keys: &'k KeySet,
    authorization: Option<&[u8]>,
    needs: Scope,
) -> Result<&'k super::keyfile::ApiKey, Denied> {
    let value = authorization.ok_or(Denied::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| Denied::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Denied::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Denied::Malformed);
    }
    let key = keys.find(token).ok_or(Denied::Unknown)?;
    if !key.allows(needs) {
        return Err(Denied::Scope {
            key: key.name.to_string(),
            needs,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keyfile::sha256_hex;

    fn keys() -> KeySet {
        KeySet::from_yaml(&format!(
            "- {{name: sensors, sha256: {}, scopes: [write]}}\n\
             - {{name: dash, sha256: {}, scopes: [read]}}\n\
             - {{name: admin, sha256: {}, scopes: [read, write]}}\n",
            sha256_hex("tpk_w"),
            sha256_hex("tpk_r"),
            sha256_hex("tpk_rw"),
        ))
        .unwrap()
    }

    fn check(header: Option<&str>, needs: Scope) -> Result<String, Denied> {
        let keys = keys();
        authorize(&keys, header.map(str::as_bytes), needs).map(|k| k.name.to_string())
    }

    #[test]
    fn a_key_with_the_scope_passes_under_its_name() {
        assert_eq!(
            check(Some("Bearer tpk_w"), Scope::Write).unwrap(),
            "sensors"
        );
        assert_eq!(check(Some("bearer tpk_r"), Scope::Read).unwrap(), "dash");
        assert_eq!(
            check(Some("BEARER  tpk_rw "), Scope::Read).unwrap(),
            "admin"
        );
        assert_eq!(check(Some("Bearer tpk_rw"), Scope::Write).unwrap(), "admin");
    }

    #[test]
    fn a_key_without_the_scope_is_forbidden_and_the_message_names_key_and_scope() {
        let denied = check(Some("Bearer tpk_r"), Scope::Write).unwrap_err();
        assert!(denied.is_forbidden());
        assert_eq!(
            denied.message(),
            "the key 'dash' lacks scope write, needed to send events"
        );
        let denied = check(Some("Bearer tpk_w"), Scope::Read).unwrap_err();
        assert_eq!(
            denied.message(),
            "the key 'sensors' lacks scope read, needed to query"
        );
    }

    #[test]
    fn missing_malformed_and_unknown_are_unauthenticated_and_never_echo_the_value() {
        for (header, want) in [
            (None, Denied::Missing),
            (Some("tpk_w"), Denied::Malformed),
            (Some("Basic tpk_w"), Denied::Malformed),
            (Some("Bearer "), Denied::Malformed),
            (Some("Bearer tpk_nope"), Denied::Unknown),
            (Some("Bearer tpk_w2"), Denied::Unknown),
        ] {
            let denied = check(header, Scope::Write).unwrap_err();
            assert_eq!(denied, want, "{header:?}");
            assert!(!denied.is_forbidden());
            assert!(!denied.message().contains("tpk_"), "{}", denied.message());
        }
        let keys = keys();
        assert_eq!(
            authorize(&keys, Some(&[0xff, 0xfe]), Scope::Read).unwrap_err(),
            Denied::Malformed
        );
    }
}
