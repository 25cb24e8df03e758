//! `$(VAR)` expansion in env values, command and args, with the kubelet's
//! rules: `$(NAME)` becomes NAME's value when NAME is defined and stays as
//! written otherwise, `$$` escapes a dollar, and any other `$` is literal.

/// Expands `$(NAME)` references in `input`, looking names up with `lookup`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                // An unclosed reference is literal text.
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<&'static str> {
        match name {
            "HOST" => Some("127.0.0.2"),
            "PORT" => Some("6379"),
            "EMPTY" => Some(""),
            _ => None,
        }
    }

    #[test]
    fn defined_references_are_replaced() {
        assert_eq!(
            expand("redis://$(HOST):$(PORT)/0", env),
            "redis://127.0.0.2:6379/0"
        );
        assert_eq!(expand("a$(EMPTY)b", env), "ab");
    }

    #[test]
    fn undefined_references_stay_as_written() {
        assert_eq!(expand("$(NOPE) and $(HOST)", env), "$(NOPE) and 127.0.0.2");
    }

    #[test]
    fn double_dollar_escapes_a_reference() {
        assert_eq!(expand("$$(HOST)", env), "$(HOST)");
        assert_eq!(expand("cost: $$5", env), "cost: $5");
    }

    #[test]
    fn lone_and_trailing_dollars_and_unclosed_references_are_literal() {
        assert_eq!(expand("$HOST $", env), "$HOST $");
        assert_eq!(expand("x $(HOST", env), "x $(HOST");
    }
}
