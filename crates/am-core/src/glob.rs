//! Shell-style name patterns, as operators write them in the configuration (`web-*`, `db-??`).

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.is_ascii() && text.is_ascii() {
        return matches(pattern.as_bytes(), text.as_bytes());
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    matches(&p, &t)
}

/// The matcher over characters (bytes when both sides are ASCII: no copy).
fn matches<C: Copy + PartialEq + From<u8>>(p: &[C], t: &[C]) -> bool {
    let (any, one) = (C::from(b'*'), C::from(b'?'));
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        match p.get(pi).copied() {
            Some(c) if c == one => {
                pi += 1;
                ti += 1;
            }
            Some(c) if c == any => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            Some(c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks_match_like_a_shell() {
        assert!(glob("web-*", "web-01"));
        assert!(glob("*", ""));
        assert!(glob("db-??", "db-12"));
        assert!(!glob("db-??", "db-123"));
        assert!(glob("*-prod-*", "eu-prod-7"));
        assert!(!glob("web-*", "api-01"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }
}
