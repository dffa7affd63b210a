//! The dbt fix for a renamed column: in each model that reads the table
//! directly (the first staging model), the new name aliased back to the
//! old one (`contact as email`), so every model, test and exposure built on
//! it sees what it saw. Done only where it is certain: the model names the
//! column exactly once in its SQL file, as a plain item of a select list;
//! anything else is left to a person, with why.

/// Where the old name stands in a model's SQL, or why it cannot be aliased
/// there. Comments, string literals, quoted identifiers and Jinja are read
/// past, never into.
pub(crate) fn alias(text: &str, from: &str, to: &str) -> Result<String, String> {
    let tokens = tokens(text);
    let hits: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == Kind::Word && t.text(text).eq_ignore_ascii_case(from))
        .map(|(i, _)| i)
        .collect();
    let [at] = hits.as_slice() else {
        return Err(if hits.is_empty() {
            format!("does not name {from} (it reads it some other way, say through *)")
        } else {
            format!("names {from} {} times", hits.len())
        });
    };
    let before = at.checked_sub(1).map(|i| &tokens[i]);
    let after = tokens.get(at + 1);
    let opens = before.is_some_and(|t| t.is(text, ",") || t.is_word(text, "select") || t.is_word(text, "distinct"));
    let closes = after.is_none_or(|t| t.is(text, ",") || t.is_word(text, "from"));
    if !(opens && closes && in_select_list(text, &tokens[..*at])) {
        return Err(format!("names {from} other than as a plain item of a select list"));
    }
    let token = &tokens[*at];
    Ok(format!("{}{to} as {from}{}", &text[..token.start], &text[token.end..]))
}

/// Whether what follows `before` is in a select list itself, not inside
/// parentheses within one (a function's arguments, a window) nor past it:
/// back from the end, the nearest `select` outside every parenthesis
/// comes before any clause keyword and any parenthesis left open.
fn in_select_list(text: &str, before: &[Token]) -> bool {
    let mut depth = 0u32;
    for token in before.iter().rev() {
        if token.is(text, ")") {
            depth += 1;
        } else if token.is(text, "(") {
            match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => return false,
            }
        } else if depth == 0 && token.kind == Kind::Word {
            let word = token.text(text).to_ascii_lowercase();
            match word.as_str() {
                "select" => return true,
                "from" | "where" | "group" | "order" | "having" | "join" | "on" | "union" | "limit" | "window" => {
                    return false;
                }
                _ => {}
            }
        }
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

impl Token {
    fn text<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
    fn is(&self, text: &str, punct: &str) -> bool {
        self.kind == Kind::Punct && self.text(text) == punct
    }
    fn is_word(&self, text: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(text).eq_ignore_ascii_case(word)
    }
}

/// Words and punctuation of SQL with Jinja; comments, literals, quoted
/// identifiers and Jinja blocks are skipped whole (a quoted identifier is
/// a word of its own kind, never the bare name).
fn tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, end: &str| text[from..].find(end).map_or(text.len(), |at| from + at + end.len());
    while i < bytes.len() {
        let rest = &text[i..];
        let c = bytes[i];
        if rest.starts_with("--") {
            i = skip_to(i, "\n");
        } else if rest.starts_with("/*") {
            i = skip_to(i + 2, "*/");
        } else if rest.starts_with("{{") {
            i = skip_to(i + 2, "}}");
        } else if rest.starts_with("{%") {
            i = skip_to(i + 2, "%}");
        } else if rest.starts_with("{#") {
            i = skip_to(i + 2, "#}");
        } else if c == b'\'' || c == b'"' {
            // A literal or a quoted identifier: to its closing quote (a
            // doubled quote inside stays inside).
            let mut j = i + 1;
            while j < bytes.len() {
                if bytes[j] == c {
                    if bytes.get(j + 1) == Some(&c) {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            tokens.push(Token { kind: Kind::Punct, start: i, end: (j + 1).min(bytes.len()) });
            i = j + 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '$'))
                .map_or(text.len(), |n| i + n);
            tokens.push(Token { kind: Kind::Word, start: i, end });
            i = end;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else {
            let len = rest.chars().next().map_or(1, char::len_utf8);
            tokens.push(Token { kind: Kind::Punct, start: i, end: i + len });
            i += len;
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::alias;

    #[test]
    fn a_plain_select_item_is_aliased_and_nothing_else_is() {
        let staging = "-- email is in the comment\nwith source as (\n    select * from {{ source('shop', 'orders') }}\n),\n\
                       renamed as (\n    select id as order_id, email, amount from source\n)\nselect * from renamed\n";
        let aliased = alias(staging, "email", "contact").unwrap();
        assert!(aliased.contains("select id as order_id, contact as email, amount from source"), "{aliased}");
        assert!(aliased.starts_with("-- email is in the comment"), "{aliased}");
        assert_eq!(alias("select id, EMAIL from t", "email", "contact").unwrap(), "select id, contact as email from t");
        assert_eq!(alias("select email\nfrom t", "email", "contact").unwrap(), "select contact as email\nfrom t");
        let case = "select case when a then 1 end as flag, email from t";
        assert_eq!(alias(case, "email", "contact").unwrap(), case.replace(", email", ", contact as email"));
        for (sql, why) in [
            ("select * from t", "does not name"),
            ("select email from t where email <> ''", "2 times"),
            ("select lower(email) as email_l from t", "other than"),
            ("select email as mail from t", "other than"),
            ("select id from t where email is not null", "other than"),
            ("select t.email from t", "other than"),
            ("select coalesce(a, email, b) from t", "other than"),
            ("select count(*) over (partition by x, email) from t", "other than"),
        ] {
            let error = alias(sql, "email", "contact").unwrap_err();
            assert!(error.contains(why), "{sql}: {error}");
        }
        // Quoted, in a literal or in Jinja: not the bare name.
        assert!(alias("select \"email\", 'email', {{ email }} from t", "email", "contact").is_err());
    }
}
