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
    /// Its length in characters: the tokens it stands for.
    prefix_toks: usize,
    /// The literal text after the last wildcard (empty when the pattern ends in one).
    suffix: String,
    /// The literal runs between wildcards, in order: a text that lacks one in that order cannot
    /// match, and is refused without the matching below.
    inner: Vec<String>,
    /// The first inner run follows a `*` that cannot cross `/` and starts with `/` (the shape of
    /// every `~/` path: `/home/*/.aws/…`): it can only start at the first `/` after the prefix.
    inner_at_next_slash: bool,
}

thread_local! {
    /// The matcher's working rows, reused: matching allocates nothing once they have grown.
    static ROWS: std::cell::RefCell<(Vec<char>, Vec<bool>, Vec<bool>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
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
        // The literal runs: the first is the prefix, the last the suffix (when the pattern
        // starts or ends with one), the rest must appear in between, in order.
        let mut runs: Vec<String> = vec![String::new()];
        for t in &toks {
            match t {
                Tok::Lit(c) => runs.last_mut().expect("never empty").push(*c),
                _ => runs.push(String::new()),
            }
        }
        let star_then_slash = matches!(toks.get(runs[0].chars().count()), Some(Tok::Star { slash: false })) && runs.get(1).is_some_and(|r| r.starts_with('/'));
        let inner_at_next_slash = star_then_slash && runs.len() > 2;
        let prefix = runs.remove(0);
        let suffix = if runs.is_empty() { String::new() } else { runs.pop().unwrap_or_default() };
        let inner = runs.into_iter().filter(|r| !r.is_empty()).collect();
        Ok(Self { source: pat.to_string(), prefix_toks: prefix.chars().count(), toks, prefix, suffix, inner, inner_at_next_slash })
    }

    /// The pattern has no wildcard: it matches its own text only.
    pub fn literal(&self) -> bool {
        self.prefix_toks == self.toks.len()
    }

    pub fn matches(&self, s: &str) -> bool {
        if !s.starts_with(&self.prefix) {
            return false;
        }
        let rest = &s[self.prefix.len()..];
        if self.literal() {
            return rest.is_empty();
        }
        if !rest.ends_with(&self.suffix) {
            return false;
        }
        let mut at = 0;
        if self.inner_at_next_slash {
            let Some(j) = rest.find('/') else { return false };
            if !rest[j..].starts_with(self.inner[0].as_str()) {
                return false;
            }
            at = j + self.inner[0].len();
        }
        for lit in &self.inner[usize::from(self.inner_at_next_slash)..] {
            match rest[at..].find(lit.as_str()) {
                Some(i) => at += i + lit.len(),
                None => return false,
            }
        }
        ROWS.with(|rows| match rows.try_borrow_mut() {
            Ok(mut rows) => {
                let (cs, ok, next) = &mut *rows;
                self.matches_rest(rest, cs, ok, next)
            }
            // Only a glob matched inside a glob match would get here; it gets rows of its own.
            Err(_) => self.matches_rest(rest, &mut Vec::new(), &mut Vec::new(), &mut Vec::new()),
        })
    }

    /// The tokens after the prefix against the text after it: dynamic programming over the
    /// characters, in rows the caller lends.
    fn matches_rest(&self, rest: &str, cs: &mut Vec<char>, ok: &mut Vec<bool>, next: &mut Vec<bool>) -> bool {
        let skip = self.prefix_toks;
        cs.clear();
        cs.extend(rest.chars());
        // ok[j]: the tokens so far can match the first j characters.
        ok.clear();
        ok.resize(cs.len() + 1, false);
        next.clear();
        next.resize(cs.len() + 1, false);
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
            std::mem::swap(ok, next);
            if !ok.iter().any(|&b| b) {
                return false;
            }
        }
        ok[cs.len()]
    }
}

/// The first directory of an absolute path (`/etc` of `/etc/x/y`), when the text names one.
fn head(s: &str) -> Option<&str> {
    let i = s.get(1..)?.find('/')? + 1;
    s.starts_with('/').then(|| &s[..i])
}

/// Globs tested together (a rule's list, with `~/` expanded to every home on the host: often
/// hundreds). They are grouped by the first directory their literal prefix names, so a path is
/// tried only against the globs that can start like it and those that start with a wildcard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobSet {
    globs: Vec<Glob>,
    /// Patterns without a wildcard (`~/` expanded over a list of plain files gives many): looked
    /// up, not matched. By text, the globs that are that text.
    exact: Buckets,
    /// Globs whose literal suffix holds a `/` (`/home/*/.aws/credentials`), by the file name it
    /// ends with: only a path with that last component can match them.
    by_name: Buckets,
    /// The others, by the first directory their literal prefix names.
    by_head: Buckets,
    /// Globs pinned by neither (`**/.env*`, `/pro*`, `*.so`).
    loose: Vec<usize>,
}

type Buckets = std::collections::HashMap<String, Vec<usize>, foldhash::fast::FixedState>;

/// The last component of a path (after its last `/`).
fn name(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl GlobSet {
    pub fn new(globs: Vec<Glob>) -> Self {
        let (mut by_name, mut by_head, mut loose) = (Buckets::default(), Buckets::default(), Vec::new());
        let mut exact = Buckets::default();
        for (i, g) in globs.iter().enumerate() {
            if g.literal() {
                exact.entry(g.prefix.clone()).or_default().push(i);
            } else if g.suffix.contains('/') {
                by_name.entry(name(&g.suffix).to_string()).or_default().push(i);
            } else if let Some(h) = head(&g.prefix) {
                by_head.entry(h.to_string()).or_default().push(i);
            } else {
                loose.push(i);
            }
        }
        Self { globs, exact, by_name, by_head, loose }
    }

    /// How many globs the set holds.
    pub fn len(&self) -> usize {
        self.globs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The globs, in the order given.
    pub fn globs(&self) -> &[Glob] {
        &self.globs
    }

    /// The globs that can match `s` without being literals: those pinned to its name or its
    /// first directory, and the loose ones.
    fn candidates<'a>(&'a self, s: &str) -> impl Iterator<Item = usize> + 'a {
        let named = self.by_name.get(name(s)).map(Vec::as_slice).unwrap_or(&[]);
        let near = head(s).and_then(|h| self.by_head.get(h)).map(Vec::as_slice).unwrap_or(&[]);
        named.iter().chain(near).chain(&self.loose).copied()
    }

    pub fn matches(&self, s: &str) -> bool {
        self.exact.contains_key(s) || self.candidates(s).any(|i| self.globs[i].matches(s))
    }

    /// Calls `hit` with the index of every glob that matches `s`, leaving out, unmatched, those
    /// `wanted` turns down (a caller that only needs one match per group of globs).
    pub fn each_match(&self, s: &str, mut wanted: impl FnMut(usize) -> bool, mut hit: impl FnMut(usize)) {
        for &i in self.exact.get(s).map(Vec::as_slice).unwrap_or(&[]) {
            if wanted(i) {
                hit(i);
            }
        }
        for i in self.candidates(s) {
            if wanted(i) && self.globs[i].matches(s) {
                hit(i);
            }
        }
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

    /// The reference: backtracking over the pattern as written (exponential, for tests only).
    fn naive(p: &[char], s: &[char], path: bool) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => {
                let double = p.get(1) == Some(&'*');
                let rest = if double { &p[2..] } else { &p[1..] };
                (0..=s.len()).take_while(|&k| k == 0 || double || !path || s[k - 1] != '/').any(|k| naive(rest, &s[k..], path))
            }
            Some('?') => s.first().is_some_and(|c| *c != '/') && naive(&p[1..], &s[1..], path),
            Some(c) => s.first() == Some(c) && naive(&p[1..], &s[1..], path),
        }
    }

    #[test]
    fn a_set_finds_what_its_globs_find() {
        let pats = ["/home/*/.ssh/id_*", "/root/.ssh/id_*", "**/.env", "/pro*/x", "/etc/cron.d/*", "/", "*.so", "/etc", "/home/*/.aws/credentials", "**/x/", "*/y"];
        let set = super::GlobSet::new(pats.iter().map(|p| Glob::new(p, true).unwrap()).collect());
        for t in ["/home/u/.ssh/id_rsa", "/root/.ssh/id_ed", "/srv/a/.env", "/proc/x", "/etc/cron.d/j", "/", "lib.so", "/etc", "/etc/hostname", "/home/u/x", "", "etc/cron.d/j", "/home/u/.aws/credentials", "/home/u/v/.aws/credentials", "/credentials", "/a/x/", "a/y", "/y"] {
            assert_eq!(set.matches(t), pats.iter().any(|p| m(p, t)), "{t:?}");
        }
    }

    #[test]
    fn agrees_with_backtracking() {
        let pats = ["*", "**", "a*", "*a", "a*b", "*a*b*", "/h/*/x", "/h/**/x", "a?c*", "**/.e*v", "x*x*x", "é*ü", "/a/*/b*c/d", "ab*b", "/h/*/.s/*", "/h/*/.s/*/k*", "/h/*/.s"];
        let texts = ["", "a", "ab", "abb", "a/b", "/h/u/x", "/h/u/v/x", "abc", "acc/x", "/s/.env", "/s/.e/v", "xxx", "xax/x", "éaü", "ü", "/a/x/bqc/d", "bab", "/h/u/.s/k", "/h/u/.s/", "/h/u/v/.s/k", "/h//.s/q/k1", "/h/u/.s", "/h/.s/x"];
        for p in pats {
            let pc: Vec<char> = p.chars().collect();
            for path in [true, false] {
                let g = Glob::new(p, path).unwrap();
                for t in texts {
                    let tc: Vec<char> = t.chars().collect();
                    assert_eq!(g.matches(t), naive(&pc, &tc, path), "{p:?} on {t:?} (path: {path})");
                }
            }
        }
    }

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
        // The literal runs refuse early; what they let through is still matched in full.
        assert!(m("/a/*/b*c/d", "/a/x/bqc/d") && !m("/a/*/b*c/d", "/a/x/y/bqc/d") && !m("/a/*/b*c/d", "/a/x/c/b/d"));
        assert!(m("**/.env", "/srv/.env") && !m("**/.env", "/srv/.env.example") && !m("ab*b", "ab"));
        // Long inputs stay linear.
        assert!(!m("*a*a*a*a*a*a*a*b", &"a".repeat(5000)));
    }
}
