//! The crate's error type.

/// What went wrong while reading or checking an aggregation config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule; `field` is its path, e.g. `windows[1].name`.
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },

    /// The YAML (or JSON) document does not parse into the schema.
    #[error("aggregation config does not parse: {0}")]
    Parse(#[from] serde_yaml::Error),

    /// The file could not be read.
    #[error("cannot read aggregation config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
