//! Identifiers compared as the database compares them.
//!
//! PostgreSQL folds an unquoted identifier to lower case (ASCII letters
//! only) and keeps a quoted one exactly; `U&"…"` names carry Unicode escapes.
//! SQLite keeps a name as written and compares names without regard to ASCII
//! case, quoted or not.

use sqlparser::ast::{Ident, ObjectName};

use mend_model::Dialect;

/// An identifier as the database names the object.
pub(super) fn resolve(dialect: Dialect, ident: &Ident) -> String {
    match (dialect, ident.quote_style) {
        (Dialect::Postgres, None) => ident.value.to_ascii_lowercase(),
        _ => ident.value.clone(),
    }
}

/// Whether the resolved identifier `name` is the catalog name `object`.
pub(super) fn same(dialect: Dialect, name: &str, object: &str) -> bool {
    match dialect {
        Dialect::Postgres => name == object,
        Dialect::Sqlite => name.eq_ignore_ascii_case(object),
    }
}

/// The parts of a (possibly qualified) name, resolved; None when a part is
/// not a plain identifier.
pub(super) fn parts(dialect: Dialect, name: &ObjectName) -> Option<Vec<String>> {
    name.0.iter().map(|part| part.as_ident().map(|ident| resolve(dialect, ident))).collect()
}

/// Rewrites PostgreSQL's `U&"…"` identifiers (with an optional `UESCAPE
/// 'c'`) as plain quoted identifiers, which sqlparser reads; everything else
/// is left as written. String literals, quoted identifiers, comments and
/// dollar-quoted strings are skipped whole, so only a real `U&"` is read.
pub(super) fn unicode_identifiers(sql: &str) -> Result<String, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // Start of a token that is skipped whole: copy it as it is.
        let skip_to = match c {
            '\'' => {
                Some(quoted_end(&chars, i, '\'', i > 0 && matches!(chars[i - 1], 'e' | 'E')).unwrap_or(chars.len()))
            }
            '"' => Some(quoted_end(&chars, i, '"', false).unwrap_or(chars.len())),
            '-' if next == Some('-') => Some(chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p)),
            '/' if next == Some('*') => Some(block_comment_end(&chars, i)),
            '$' if i == 0 || !word(chars[i - 1]) => dollar_end(&chars, i),
            _ => None,
        };
        if let Some(end) = skip_to {
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        let unicode = matches!(c, 'u' | 'U') && next == Some('&') && (i == 0 || !word(chars[i - 1]));
        if unicode && chars.get(i + 2) == Some(&'"') {
            let Some(end) = quoted_end(&chars, i + 2, '"', false) else {
                return Err("an unterminated U&\"…\" identifier".into());
            };
            if end == i + 4 {
                return Err("an empty U&\"\" identifier".into());
            }
            let body: String = chars[i + 3..end - 1].iter().collect::<String>().replace("\"\"", "\"");
            let (escape, after) = uescape(&chars, end)?;
            let name = unescape(&body, escape)?;
            out.push('"');
            out.push_str(&name.replace('"', "\"\""));
            out.push('"');
            i = after;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Ok(out)
}

/// The index after the quoted token starting at `start` (its closing quote
/// included; doubled quotes and, in E'' strings, backslash escapes inside);
/// None when it is not closed.
fn quoted_end(chars: &[char], start: usize, quote: char, backslashes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if backslashes => i += 2,
            c if c == quote && chars.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after a (nested) block comment starting at `start`.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// The index after a dollar-quoted string `$tag$…$tag$` starting at
/// `start`, if one starts there.
fn dollar_end(chars: &[char], start: usize) -> Option<usize> {
    let close = chars[start + 1..].iter().position(|&c| c == '$')? + start + 1;
    let tag = &chars[start..=close];
    if !tag[1..tag.len() - 1].iter().all(|c| c.is_alphanumeric() || *c == '_') {
        return None;
    }
    let rest = &chars[close + 1..];
    let found = rest.windows(tag.len()).position(|w| w == tag).map_or(chars.len(), |p| close + 1 + p + tag.len());
    Some(found)
}

/// An optional `UESCAPE 'c'` after a `U&` token ending at `at`: the escape
/// character and the index after the clause.
fn uescape(chars: &[char], at: usize) -> Result<(char, usize), String> {
    let mut i = at;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let keyword: String = chars.get(i..i + 7).map(|w| w.iter().collect()).unwrap_or_default();
    if !keyword.eq_ignore_ascii_case("uescape") {
        return Ok(('\\', at));
    }
    i += 7;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    match chars.get(i..i + 3) {
        Some(['\'', c, '\'']) if !c.is_ascii_hexdigit() && !"+'\" \t\n\r".contains(*c) => Ok((*c, i + 3)),
        _ => Err("UESCAPE needs one character in quotes, not a hex digit, +, a quote or a space".into()),
    }
}

/// Decodes the escapes of a `U&` body: `\XXXX`, `\+XXXXXX`, `\\` (with
/// `escape` in place of the backslash).
fn unescape(body: &str, escape: char) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != escape {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&escape) {
            chars.next();
            out.push(escape);
            continue;
        }
        let digits = if chars.peek() == Some(&'+') {
            chars.next();
            6
        } else {
            4
        };
        let hex: String = chars.by_ref().take(digits).collect();
        let code = (hex.len() == digits).then(|| u32::from_str_radix(&hex, 16).ok()).flatten();
        match code.and_then(char::from_u32).filter(|c| *c != '\0') {
            Some(decoded) => out.push(decoded),
            None => return Err(format!("an invalid Unicode escape {escape}{hex} in a U& identifier")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_identifiers_are_read_as_postgresql_reads_them() {
        let cases = [
            (r#"ALTER TABLE U&"\006Frders" ADD x TEXT"#, r#"ALTER TABLE "orders" ADD x TEXT"#),
            (r#"ALTER TABLE u&"!006Frders" UESCAPE '!' ADD x TEXT"#, r#"ALTER TABLE "orders" ADD x TEXT"#),
            (r#"ALTER TABLE U&"\+00006Frders" ADD x TEXT"#, r#"ALTER TABLE "orders" ADD x TEXT"#),
            (r#"ALTER TABLE U&"a""b\\" ADD x TEXT"#, r#"ALTER TABLE "a""b\" ADD x TEXT"#),
            // Not identifiers: left alone.
            (r#"SELECT 'U&"\0061"', E'\'U&"x"', $$U&"\0061"$$ -- U&"\0061""#, ""),
            (r#"SELECT menu&"x""#, ""),
        ];
        for (sql, expected) in cases {
            let expected = if expected.is_empty() { sql } else { expected };
            assert_eq!(unicode_identifiers(sql).as_deref(), Ok(expected), "{sql}");
        }
        for bad in [r#"U&"\00""#, r#"U&"\0000""#, r#"U&"x" UESCAPE 'a'"#, r#"U&"x"#, r#"U&"x"""#, r#"U&"""#] {
            assert!(unicode_identifiers(bad).is_err(), "{bad}");
        }
    }
}
