//! Secrets in text a server returned: private-key blocks, tokens whose format is known by its
//! prefix (AWS, GitHub, Slack, OpenAI, Anthropic), JWTs, connection strings with a password, and
//! values assigned to password/secret/token keys (an entropy check for formats not on the list).
//! Every finding carries a masked form (a prefix and the length): alerts never repeat a secret.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    PrivateKey,
    AwsAccessKey,
    GithubToken,
    SlackToken,
    OpenaiKey,
    AnthropicKey,
    Jwt,
    ConnectionString,
    Password,
    GenericSecret,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrivateKey => "private_key",
            Self::AwsAccessKey => "aws_access_key",
            Self::GithubToken => "github_token",
            Self::SlackToken => "slack_token",
            Self::OpenaiKey => "openai_key",
            Self::AnthropicKey => "anthropic_key",
            Self::Jwt => "jwt",
            Self::ConnectionString => "connection_string",
            Self::Password => "password",
            Self::GenericSecret => "generic_secret",
        }
    }
}

/// One secret: its kind, its byte span in the scanned text, and how alerts show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Secret {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
    pub masked: String,
}

/// Token formats recognised by their prefix: (prefix, kind, least characters after the prefix,
/// characters allowed after it).
type Prefixed = (&'static str, SecretKind, usize, fn(u8) -> bool);

const PREFIXED: &[Prefixed] = &[
    ("AKIA", SecretKind::AwsAccessKey, 16, upper_digit),
    ("ASIA", SecretKind::AwsAccessKey, 16, upper_digit),
    ("ghp_", SecretKind::GithubToken, 30, alnum),
    ("gho_", SecretKind::GithubToken, 30, alnum),
    ("ghu_", SecretKind::GithubToken, 30, alnum),
    ("ghs_", SecretKind::GithubToken, 30, alnum),
    ("ghr_", SecretKind::GithubToken, 30, alnum),
    ("github_pat_", SecretKind::GithubToken, 40, token),
    ("xoxb-", SecretKind::SlackToken, 10, token),
    ("xoxp-", SecretKind::SlackToken, 10, token),
    ("xoxa-", SecretKind::SlackToken, 10, token),
    ("xoxr-", SecretKind::SlackToken, 10, token),
    ("xoxs-", SecretKind::SlackToken, 10, token),
    ("xoxe-", SecretKind::SlackToken, 10, token),
    ("sk-ant-", SecretKind::AnthropicKey, 20, token),
    ("sk-", SecretKind::OpenaiKey, 20, token),
];

/// Keys whose value is a password (any value that is not a placeholder counts).
const PASSWORD_KEYS: &[&str] = &["password", "passwd", "pwd", "passphrase", "pass"];
/// Keys whose value is a secret when it also looks random (the entropy check).
const SECRET_KEYS: &[&str] = &["secret", "secret_key", "secretkey", "api_key", "apikey", "api-key", "access_key", "accesskey", "token", "access_token", "accesstoken", "auth_token", "authtoken", "client_secret", "private_key", "credential", "credentials"];
/// Keys ending like a secret key that name something public (paging cursors, CSRF form fields).
const NOT_SECRET_KEYS: &[&str] = &["page", "next", "csrf", "cursor", "continuation", "sync", "type", "count", "expires", "file", "path", "name", "length", "url", "_id"];

fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}
fn token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}
fn b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'='
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut n = [0u32; 256];
    for b in s.bytes() {
        n[b as usize] += 1;
    }
    let len = s.len() as f64;
    n.iter().filter(|&&c| c > 0).map(|&c| c as f64 / len).map(|p| -p * p.log2()).sum()
}

/// A value written in place of a secret: documentation, templates, redactions, code.
fn placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    let starts = ['<', '$', '{', '%', '[', '(', '*', '#'];
    l.starts_with(starts)
        || ["example", "your", "xxxx", "****", "...", "…", "redacted", "dummy", "placeholder", "process.env", "getenv", "os.environ", "env("].iter().any(|p| l.contains(p))
        || ["password", "passwd", "secret", "pass", "none", "null", "nil", "true", "false", "undefined", "string", "str", "hidden", "masked", "required", "optional", "prompt", "stdin", "file"].contains(&l.as_str())
        || v.bytes().all(|b| b == v.as_bytes()[0])
        || code(v)
}

/// A program expression where a value would be: `auth[1]`, `getpass()`, `request.url.password`.
fn code(v: &str) -> bool {
    let dotted = v.split('.').count() >= 2 && v.split('.').all(|p| p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    v.contains(['[', '(', ')']) || dotted
}

/// How an alert shows a secret: a prefix and the length, never the rest.
pub fn mask(kind: SecretKind, s: &str) -> String {
    let keep = match kind {
        SecretKind::PrivateKey => s.find("KEY-----").map(|i| i + 8).unwrap_or(0),
        SecretKind::ConnectionString => return mask_url(s),
        _ => PREFIXED.iter().find(|(p, ..)| s.starts_with(p)).map(|(p, ..)| p.len()).unwrap_or(0).max(if s.starts_with("eyJ") { 3 } else { 0 }),
    };
    let keep = if keep == 0 { (s.len() / 8).min(3) } else { keep };
    let keep = crate::toolcheck::text::floor_char(s, keep.min(s.len()));
    format!("{}…[{} chars]", &s[..keep], s.chars().count())
}

/// `postgres://admin:hunter2@db:5432/app` → `postgres://admin:…[7 chars]@db:5432/app`.
fn mask_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://").map(|i| i + 3) else { return format!("…[{} chars]", s.len()) };
    let Some(at) = s[scheme_end..].find('@').map(|i| i + scheme_end) else { return s.to_string() };
    let colon = s[scheme_end..at].find(':').map(|i| i + scheme_end).unwrap_or(scheme_end);
    format!("{}:…[{} chars]{}", &s[..colon], s[colon + 1..at].chars().count(), &s[at..])
}

fn boundary_before(b: &[u8], i: usize) -> bool {
    i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'-')
}

/// Every secret in `text`, in order, overlaps resolved in favour of the more specific kind.
pub fn scan(text: &str) -> Vec<Secret> {
    let mut out = Vec::new();
    private_keys(text, &mut out);
    prefixed(text, &mut out);
    jwts(text, &mut out);
    urls(text, &mut out);
    assignments(text, &mut out);
    out.sort_by_key(|s| (s.start, s.kind));
    let mut kept: Vec<Secret> = Vec::new();
    for s in out {
        match kept.last() {
            Some(k) if s.start < k.end => {}
            _ => kept.push(s),
        }
    }
    kept
}

fn push(out: &mut Vec<Secret>, text: &str, kind: SecretKind, start: usize, end: usize) {
    if out.iter().any(|s| s.start <= start && end <= s.end) {
        return;
    }
    out.push(Secret { kind, start, end, masked: mask(kind, &text[start..end]) });
}

fn private_keys(text: &str, out: &mut Vec<Secret>) {
    let mut from = 0;
    while let Some(i) = text[from..].find("-----BEGIN ").map(|i| i + from) {
        let label_end = text[i + 11..].find("-----").map(|j| j + i + 11);
        from = i + 11;
        let Some(le) = label_end.filter(|le| le - i < 80) else { continue };
        if !text[i..le].contains("PRIVATE KEY") {
            continue;
        }
        let end = match text[le..].find("-----END ") {
            Some(e) => text[le + e + 9..].find("-----").map(|k| le + e + 9 + k + 5).unwrap_or(text.len()),
            None => crate::toolcheck::text::floor_char(text, (le + 8192).min(text.len())),
        };
        push(out, text, SecretKind::PrivateKey, i, end);
        from = end;
    }
}

fn prefixed(text: &str, out: &mut Vec<Secret>) {
    let b = text.as_bytes();
    for (prefix, kind, least, ok) in PREFIXED {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix).map(|i| i + from) {
            from = i + prefix.len();
            if !boundary_before(b, i) {
                continue;
            }
            let mut e = from;
            while e < b.len() && ok(b[e]) {
                e += 1;
            }
            let body = &text[from..e];
            let exact_aws = *kind != SecretKind::AwsAccessKey || body.len() == *least;
            let mixed = body.bytes().any(|c| c.is_ascii_digit()) && body.bytes().any(|c| c.is_ascii_alphabetic());
            if body.len() >= *least && exact_aws && mixed && (e == b.len() || !b[e].is_ascii_alphanumeric()) {
                push(out, text, *kind, i, e);
                from = e;
            }
        }
    }
}

fn jwts(text: &str, out: &mut Vec<Secret>) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("eyJ").map(|i| i + from) {
        from = i + 3;
        if !boundary_before(b, i) {
            continue;
        }
        let mut e = i;
        let mut parts = vec![0usize];
        while e < b.len() && (b64url(b[e]) || b[e] == b'.') {
            if b[e] == b'.' {
                parts.push(0);
            } else {
                *parts.last_mut().unwrap() += 1;
            }
            e += 1;
        }
        if parts.len() == 3 && parts[0] >= 10 && parts[1] >= 10 && parts[2] >= 8 && text[i..].split('.').nth(1).is_some_and(|p| p.starts_with("eyJ")) {
            push(out, text, SecretKind::Jwt, i, e);
            from = e;
        }
    }
}

/// `scheme://user:password@host…` with a real password.
fn urls(text: &str, out: &mut Vec<Secret>) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("://").map(|i| i + from) {
        from = i + 3;
        let mut s = i;
        while s > 0 && (b[s - 1].is_ascii_alphanumeric() || matches!(b[s - 1], b'+' | b'.' | b'-')) {
            s -= 1;
        }
        if s == i {
            continue;
        }
        let mut e = from;
        while e < b.len() && !b[e].is_ascii_whitespace() && !matches!(b[e], b'"' | b'\'' | b'`' | b'<' | b'>' | b')' | b']' | b'\\') {
            e += 1;
        }
        let rest = &text[from..e];
        let Some(at) = rest.find('@') else { continue };
        let userinfo = &rest[..at];
        if userinfo.contains('/') {
            continue;
        }
        let Some((user, pass)) = userinfo.split_once(':') else { continue };
        if pass.is_empty() || placeholder(pass) || user.is_empty() || rest[at + 1..].is_empty() {
            continue;
        }
        push(out, text, SecretKind::ConnectionString, s, e);
        from = e;
    }
}

/// `password: hunter2`, `"api_key": "…"`, `DB_PASSWORD=…`, `Authorization: Bearer …`.
fn assignments(text: &str, out: &mut Vec<Secret>) {
    let folded = crate::toolcheck::text::fold(text);
    let b = text.as_bytes();
    let ws = crate::toolcheck::text::words(text, &folded);
    for (n, w) in ws.iter().enumerate() {
        let key = w.low.trim_start_matches(['-', '.']);
        let bearer = key == "bearer" || key == "token" && n > 0 && ws[n - 1].low == "authorization:";
        // The key itself, or an identifier ending in it after `_`/`-` (`DB_PASSWORD`, `api-key`).
        let names = |k: &str| key == k || (key.len() > k.len() && key.ends_with(k) && matches!(key.as_bytes()[key.len() - k.len() - 1], b'_' | b'-'));
        let is_password = PASSWORD_KEYS.iter().any(|k| names(k) || (k.len() > 4 && key.ends_with(k) && !key.ends_with("bypass")));
        let is_secret = SECRET_KEYS.iter().any(|k| names(k) || (k.len() >= 6 && key.ends_with(k))) && !NOT_SECRET_KEYS.iter().any(|x| key.contains(x));
        if !(is_password || is_secret || bearer) {
            continue;
        }
        // After the key: closing quote, `:`, `=` or `=>` (or a space, for Bearer), opening quote.
        let mut i = w.end;
        while i < b.len() && matches!(b[i], b'"' | b'\'') {
            i += 1;
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let sep = i < b.len() && matches!(b[i], b':' | b'=');
        if sep {
            i += 1;
            if b.get(i) == Some(&b'>') {
                i += 1;
            }
        } else if !bearer || w.end == i {
            continue;
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let quote = b.get(i).copied().filter(|c| matches!(c, b'"' | b'\''));
        if quote.is_some() {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && Some(b[i]) != quote && !(quote.is_none() && matches!(b[i], b',' | b';' | b'}' | b'"' | b'\'' | b')' | b'\\')) {
            i += 1;
        }
        let end = crate::toolcheck::text::floor_char(text, i);
        let v = &text[start..end];
        if v.len() < 6 || placeholder(v) {
            continue;
        }
        if is_password && !bearer {
            push(out, text, SecretKind::Password, start, end);
            continue;
        }
        // Formats not on the list: long, varied, random-looking.
        let classes = [v.bytes().any(|c| c.is_ascii_lowercase()), v.bytes().any(|c| c.is_ascii_uppercase()), v.bytes().any(|c| c.is_ascii_digit())].iter().filter(|x| **x).count();
        if v.len() >= 16 && classes >= 2 && entropy(v) >= 3.5 {
            push(out, text, SecretKind::GenericSecret, start, end);
        }
    }
}

/// `text` with every secret replaced by its mask (for excerpts shown in alerts).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for s in scan(text) {
        out.push_str(&text[last..s.start]);
        out.push_str(&s.masked);
        last = s.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(t: &str) -> Vec<SecretKind> {
        scan(t).into_iter().map(|s| s.kind).collect()
    }

    #[test]
    fn known_formats() {
        // Test values assembled at run time, so no scanner flags this source file.
        let gh = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
        let aws = format!("AKIA{}", "IOSFODNN7EXAMPLQ");
        let t = format!("token {gh} and key {aws} here");
        assert_eq!(kinds(&t), vec![SecretKind::GithubToken, SecretKind::AwsAccessKey]);
        let s = scan(&t);
        assert_eq!(s[0].masked, "ghp_…[40 chars]");
        assert_eq!(s[1].masked, "AKIA…[20 chars]");
        let ant = format!("sk-ant-api03-{}", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe");
        assert_eq!(kinds(&ant), vec![SecretKind::AnthropicKey]);
        assert_eq!(kinds(&format!("OPENAI_API_KEY=sk-proj-{}", "Ab12Cd34Ef56Gh78Ij90Kl12")), vec![SecretKind::OpenaiKey]);
        assert_eq!(kinds(&format!("xoxb-{}", "1234567890-abcdefABCDEF")), vec![SecretKind::SlackToken]);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(kinds(jwt), vec![SecretKind::Jwt]);
    }

    #[test]
    fn keys_urls_and_passwords_are_masked() {
        let key = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW");
        let s = scan(&format!("here: {key}"));
        assert_eq!(s[0].kind, SecretKind::PrivateKey);
        assert!(s[0].masked.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----…["), "{}", s[0].masked);
        let url = "DATABASE_URL=postgresql://admin:S3cr3t-Pa55@db.internal:5432/prod";
        let s = scan(url);
        assert_eq!(s[0].kind, SecretKind::ConnectionString);
        assert_eq!(s[0].masked, "postgresql://admin:…[11 chars]@db.internal:5432/prod");
        assert_eq!(kinds("password: Tr0ub4dor&3"), vec![SecretKind::Password]);
        assert_eq!(kinds(r#"{"db_password": "correct horse"}"#), vec![SecretKind::Password]);
        assert!(!redact("password: Tr0ub4dor&3 ok").contains("Tr0ub4dor"));
    }

    #[test]
    fn placeholders_hashes_and_prose_are_not_secrets() {
        for t in [
            "password: <your password>",
            "export API_KEY=${API_KEY}",
            "postgres://user:password@localhost/db",
            "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39",
            "The password prompt appears; enter a passphrase when asked.",
            r#"{"token_type": "bearer", "nextPageToken": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA", "expires_in": 3600}"#,
            "https://example.com/path?q=1 and ssh://git@github.com/org/repo.git",
            "integrity=\"sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC\"",
            "Use sk-learn for that; AKIA is a prefix of AWS keys.",
        ] {
            assert!(scan(t).is_empty(), "{t:?} → {:?}", scan(t));
        }
    }
}
