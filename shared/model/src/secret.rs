//! A secret from the environment or a flag (a token, a signing secret, a
//! URL that carries credentials): never printed, and read only where it is
//! sent or checked.

/// A secret. `Debug` prints `"***"`; [`Secret::expose`] is the one way to
/// its text, called at the HTTP request or the signature check.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret's text, for the request or the check that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret, unless it is empty (an unset variable given as `""`).
    pub fn given(self) -> Option<Self> {
        (!self.0.is_empty()).then_some(self)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        assert_eq!(format!("{:?}", Secret::new("x")), "\"***\"");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(Secret::new("").given(), None);
        assert_eq!(Secret::new("k").given().map(|s| s.expose().to_owned()), Some("k".to_owned()));
    }
}
