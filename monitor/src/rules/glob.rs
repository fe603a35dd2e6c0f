//! Glob patterns: `*` (any run of characters, not `/` in path fields), `**` (anything, `/`
//! included), `?` (one character), `[abc]`, `[a-z]`, `[!x]`. Matching is linear-time dynamic
//! programming, so no pattern can make evaluation blow up.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    /// `*`: any run; `slash` says whether it may cross `/`.
    Star { slash: bool },
    Class { neg: bool, items: Vec<(char, char)> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pub source: String,
    toks: Vec<Tok>,
    /// The literal text before the first wildcard: most paths fail here without any matching.
    prefix: String,
}

impl Glob {
    /// `path`: `*` stops at `/` (only `**` crosses directories).
    pub fn new(pat: &str, path: bool) -> Result<Self, String> {
        let cs: Vec<char> = pat.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < cs.len() {
            match cs[i] {
                '*' => {
                    let double = cs.get(i + 1) == Some(&'*');
                    toks.push(Tok::Star { slash: double || !path });
                    i += if double { 2 } else { 1 };
                    continue;
                }
                '?' => toks.push(Tok::Any),
                '[' => {
                    let end = cs[i + 1..].iter().position(|&c| c == ']').map(|p| p + i + 1);
                    let Some(end) = end.filter(|&e| e > i + 1) else {
                        return Err(format!("glob {pat:?}: unclosed '['"));
                    };
                    let mut body = &cs[i + 1..end];
                    let neg = matches!(body.first(), Some('!') | Some('^'));
                    if neg {
                        body = &body[1..];
                    }
                    let mut items = Vec::new();
                    let mut j = 0;
                    while j < body.len() {
                        if j + 2 < body.len() && body[j + 1] == '-' {
                            items.push((body[j], body[j + 2]));
                            j += 3;
                        } else {
                            items.push((body[j], body[j]));
                            j += 1;
                        }
                    }
                    toks.push(Tok::Class { neg, items });
                    i = end;
                }
                '\\' if i + 1 < cs.len() => {
                    toks.push(Tok::Lit(cs[i + 1]));
                    i += 1;
                }
                c => toks.push(Tok::Lit(c)),
            }
            i += 1;
        }
        let prefix = toks.iter().map_while(|t| if let Tok::Lit(c) = t { Some(*c) } else { None }).collect();
        Ok(Self { source: pat.to_string(), toks, prefix })
    }

    pub fn matches(&self, s: &str) -> bool {
        if !s.starts_with(&self.prefix) {
            return false;
        }
        let skip = self.prefix.chars().count();
        let cs: Vec<char> = s[self.prefix.len()..].chars().collect();
        // ok[j]: the tokens so far can match the first j characters.
        let mut ok = vec![false; cs.len() + 1];
        let mut next = vec![false; cs.len() + 1];
        ok[0] = true;
        for t in &self.toks[skip..] {
            next.iter_mut().for_each(|b| *b = false);
            match t {
                Tok::Star { slash } => {
                    for j in 0..=cs.len() {
                        next[j] = ok[j] || (j > 0 && next[j - 1] && (*slash || cs[j - 1] != '/'));
                    }
                }
                _ => {
                    for j in 1..=cs.len() {
                        next[j] = ok[j - 1] && one(t, cs[j - 1]);
                    }
                }
            }
            std::mem::swap(&mut ok, &mut next);
            if !ok.iter().any(|&b| b) {
                return false;
            }
        }
        ok[cs.len()]
    }
}

fn one(t: &Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => *l == c,
        Tok::Any => c != '/',
        Tok::Class { neg, items } => items.iter().any(|&(a, b)| a <= c && c <= b) != *neg,
        Tok::Star { .. } => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p, true).unwrap().matches(s)
    }

    #[test]
    fn path_globs() {
        assert!(m("/home/*/.ssh/id_*", "/home/alice/.ssh/id_ed25519"));
        assert!(!m("/home/*/.ssh/id_*", "/home/a/b/.ssh/id_rsa"));
        assert!(m("/home/**/.ssh/id_*", "/home/a/b/.ssh/id_rsa"));
        assert!(m("**/.git/hooks/*", "/src/p/.git/hooks/pre-commit"));
        assert!(m("/tmp/?", "/tmp/x") && !m("/tmp/?", "/tmp/xy"));
        assert!(m("*.[ch]", "main.c") && !m("*.[!ch]", "main.c") && m("[a-c]x", "bx"));
        assert!(m("/etc/cron*/**", "/etc/cron.d/job") && m("/etc/cron*", "/etc/crontab"));
        assert!(!m("", "x") && m("", ""));
        assert!(Glob::new("[abc", true).is_err());
        // Non-path fields: `*` crosses '/'.
        assert!(Glob::new("*curl *|*sh*", false).unwrap().matches("sh -c curl http://x/y | sh"));
        // Long inputs stay linear.
        assert!(!m("*a*a*a*a*a*a*a*b", &"a".repeat(5000)));
    }
}
