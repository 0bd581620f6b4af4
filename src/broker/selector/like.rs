//! `LIKE` patterns: `%` any run of characters, `_` exactly one, everything else literal. An
//! `ESCAPE` character makes the `%`, `_` or escape character after it literal; before any other
//! character it is itself literal (ActiveMQ's `LikeExpression`). Matched without a regex and
//! without allocating, in O(pattern x text) at worst.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(char),
    AnyOne,
    AnyRun,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct LikePattern {
    parts: Vec<Part>,
}

impl LikePattern {
    /// `pattern` as written after `LIKE`, with the optional `ESCAPE` character.
    pub fn new(pattern: &str, escape: Option<char>) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut parts = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if Some(c) == escape && next.is_some_and(|n| n == '%' || n == '_' || Some(n) == escape)
            {
                parts.push(Part::Literal(next.unwrap_or(c)));
                i += 2;
                continue;
            }
            parts.push(match c {
                '%' => Part::AnyRun,
                '_' => Part::AnyOne,
                other => Part::Literal(other),
            });
            i += 1;
        }
        LikePattern { parts }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let (mut p, mut t) = (0usize, 0usize);
        // The last `%` seen: the pattern index after it and the text offset it resumes from.
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            let next_char = text[t..].chars().next();
            match (parts.get(p), next_char) {
                (Some(Part::AnyRun), _) => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                (Some(Part::AnyOne), Some(c)) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (Some(Part::Literal(want)), Some(c)) if *want == c => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            // Mismatch: let the last `%` swallow one more character, or fail.
            match backtrack {
                Some((after, from)) => match text[from..].chars().next() {
                    Some(c) => {
                        let resume = from + c.len_utf8();
                        backtrack = Some((after, resume));
                        p = after;
                        t = resume;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LikePattern;

    fn like(pattern: &str, escape: Option<char>, text: &str) -> bool {
        LikePattern::new(pattern, escape).matches(text)
    }

    #[test]
    fn jms_specification_examples() {
        assert!(like("12%3", None, "123"));
        assert!(like("12%3", None, "12993"));
        assert!(!like("12%3", None, "1234"));
        assert!(like("l_se", None, "lose"));
        assert!(!like("l_se", None, "loose"));
        assert!(like("\\_%", Some('\\'), "_foo"));
        assert!(!like("\\_%", Some('\\'), "bar"));
    }

    #[test]
    fn wildcards_escapes_and_unicode() {
        assert!(like("%", None, ""));
        assert!(like("%%", None, "x"));
        assert!(!like("_", None, ""));
        assert!(like("_", None, "é"));
        assert!(like("a%b%c", None, "aXbYbZc"));
        assert!(!like("a%b%c", None, "aXbYbZ"));
        assert!(like("100!%", Some('!'), "100%"));
        assert!(!like("100!%", Some('!'), "1000"));
        assert!(like("a!!b", Some('!'), "a!b"));
        // The escape before an ordinary character is literal itself.
        assert!(like("a!b", Some('!'), "a!b"));
        assert!(like("line_", None, "line\n"));
        assert!(like("%.%", None, "a.b"));
        assert!(!like("%.%", None, "ab"));
    }

    #[test]
    fn many_runs_stay_fast() {
        let pattern = "%a".repeat(30) + "b";
        let text = "a".repeat(200);
        assert!(!like(&pattern, None, &text));
    }
}
