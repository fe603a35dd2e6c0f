//! Tool poisoning: text in a tool's description, or anywhere in its input schema (parameter
//! descriptions, titles, defaults, enums, examples, comments), aimed at the model rather than
//! the user: overrides of its instructions, secrecy from the user, secrets or the conversation
//! handed over, other tools preceded, replaced or changed (shadowing), hidden markup, invisible
//! Unicode and look-alike letters. Length alone is never poisoning.
//!
//! Measured on a labelled set (`poison_set`, `monitor/tests/data/tools`): the real tool lists of
//! public servers and poisoned descriptions of varied wording.
mod markup;
mod patterns;

use serde::Serialize;
use serde_json::Value;

use self::patterns::{Strength, COMMANDS, PATTERNS};
use super::{
    text::{self, code_points, excerpt, fold, hidden, smuggled, word_at, words},
    Tool,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Overrides, secrecy from the user, addressing the model, claims of trust.
    ModelInstruction,
    /// Markup that hides text from the reader or poses as the system: `<IMPORTANT>`,
    /// `{{SYSTEM}}`, HTML and markdown comments.
    HiddenTag,
    /// A credential file or directory named.
    SecretPath,
    /// Secrets or the conversation to be handed over, or a third party to copy.
    Exfiltration,
    /// Other tools to be preceded, followed, replaced or changed.
    ToolChain,
    /// A tool of another server named.
    CrossServerReference,
    /// Invisible characters: tag characters, bidi controls, zero-width characters.
    HiddenUnicode,
    /// Letters of another script posing as Latin ones (`ѕend_email`).
    Homoglyph,
    /// A command line that downloads and runs code or opens a channel out.
    ShellCommand,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub detail: String,
    pub excerpt: String,
}

pub const SECRETS: &[&str] = &[
    "~/.ssh", ".ssh/", "id_rsa", "id_ed25519", "id_ecdsa", ".aws/credentials", ".aws/config", ".kube/config", ".docker/config.json", ".config/gcloud", ".config/gh",
    ".netrc", ".npmrc", ".pypirc", ".env", "mcp.json", "claude_desktop_config.json", "/etc/shadow", "/etc/passwd", "login data", ".gnupg", ".bash_history",
    ".zsh_history", ".git-credentials", "authorized_keys", "credentials.json", ".pgpass", "kubeconfig", ".pem",
];

/// Weak signals count only with another this close (bytes, across the tool's texts in order).
const PAIR_WINDOW: usize = 400;
/// Schema keys whose strings are the schema's own vocabulary, not text for a reader.
const SCHEMA_WORDS: &[&str] = &["type", "$schema", "$ref", "$id", "format", "required", "pattern", "contentEncoding", "contentMediaType"];

/// The compiled patterns (the pipeline keeps one).
pub struct Scanner {
    engine: text::Engine,
}

impl Default for Scanner {
    fn default() -> Self {
        Self { engine: text::Engine::new(&PATTERNS.iter().map(|p| p.0).collect::<Vec<_>>()) }
    }
}

/// Every text of a tool a model reads: its description and every string of its input schema
/// but the schema's own vocabulary, each with its JSON path.
pub fn texts(tool: &Tool) -> Vec<(String, &str)> {
    fn walk<'a>(v: &'a Value, path: String, key: &str, out: &mut Vec<(String, &'a str)>) {
        match v {
            Value::String(s) if !SCHEMA_WORDS.contains(&key) => out.push((path, s)),
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, format!("{path}.{k}"), k, out)),
            // `required` lists property names; `enum` and `examples` items are text.
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, format!("{path}[{i}]"), key, out)),
            _ => {}
        }
    }
    let mut out = vec![("description".to_string(), tool.description.as_str())];
    walk(&tool.input_schema, "inputSchema".into(), "", &mut out);
    out
}

/// Scans with a scanner made for the call (tests, one-off checks).
pub fn scan(tool: &Tool, own: &[String], others: &[(String, String)]) -> Vec<Finding> {
    Scanner::default().scan(tool, own, others)
}

impl Scanner {
    /// `own`: the names of every tool of the same server (they may be named freely); `others`:
    /// (server, tool name) of every *other* server's tools.
    pub fn scan(&self, tool: &Tool, own: &[String], others: &[(String, String)]) -> Vec<Finding> {
        let mut out: Vec<Finding> = vec![];
        let mut push = |kind, where_: &str, detail: String, excerpt: String| {
            // One finding of a kind per text is enough to read.
            if !out.iter().any(|f| f.kind == kind && f.detail.ends_with(&format!(" in {where_}"))) {
                out.push(Finding { kind, detail: format!("{detail} in {where_}"), excerpt });
            }
        };
        for (kind, detail, ex) in characters(&tool.name) {
            push(kind, "name", detail, ex);
        }
        // Weak signals: (position across all texts, text index, kind, pattern, excerpt).
        let mut weak: Vec<(usize, usize, FindingKind, usize, String)> = vec![];
        let all = texts(tool);
        let mut base = 0;
        for (i, (where_, t)) in all.iter().enumerate() {
            let lower = fold(t);
            if let Some((at, p)) = secret_path(&lower) {
                push(FindingKind::SecretPath, where_, format!("secret location {p:?}"), excerpt(t, at, p.len()));
            }
            if let Some((at, v)) = markup::secret_variable(t) {
                push(FindingKind::SecretPath, where_, format!("secret variable {v:?}"), excerpt(t, at, v.len()));
            }
            for (at, len, what) in markup::hidden_markup(t, &lower) {
                push(FindingKind::HiddenTag, where_, what, excerpt(t, at, len));
            }
            if let Some((at, c)) = text::find_any(&lower, COMMANDS) {
                push(FindingKind::ShellCommand, where_, format!("command {:?}", c.trim()), excerpt(t, at, c.len()));
            }
            if let Some((at, len)) = markup::role_label(t, &lower) {
                push(FindingKind::ModelInstruction, where_, format!("role label {:?}", &t[at..at + len]), excerpt(t, at, len));
            }
            if let Some((at, len)) = markup::third_party(t, &lower) {
                push(FindingKind::Exfiltration, where_, "a third party to copy".into(), excerpt(t, at, len));
            }
            for (kind, detail, ex) in characters(t) {
                push(kind, where_, detail, ex);
            }
            self.mentions(tool, own, others, where_, t, &mut push);
            let ws = words(t, &lower);
            for (p, s, e) in self.engine.find_all(&ws, &[]) {
                let (pat, kind, strength) = &PATTERNS[p];
                let ex = excerpt(t, s, e - s);
                match strength {
                    Strength::Strong => push(*kind, where_, format!("{} {:?}", pat.name, &t[s..e]), ex),
                    Strength::Foreign if foreign(&ws, s, e, &tool.name, own) => push(*kind, where_, format!("{} {:?}", pat.name, &t[s..e]), ex),
                    Strength::Foreign => {}
                    Strength::Weak => weak.push((base + s, i, *kind, p, ex)),
                }
            }
            base += t.len() + 1;
        }
        // Weak signals close together (in one text or in neighbouring fields: instructions split
        // across a description and a parameter's).
        for (at, i, kind, p, ex) in &weak {
            // Another pattern: one phrase repeated is still one signal.
            if weak.iter().any(|w| w.0.abs_diff(*at) <= PAIR_WINDOW && w.3 != *p) {
                push(*kind, &all[*i].0, format!("{} with another weak signal nearby", PATTERNS[*p].0.name), ex.clone());
            }
        }
        out
    }

    /// Names of other servers' tools, written as identifiers (a tool called `fetch` or `search`
    /// is also a plain word), unless this server offers a tool of that name too.
    fn mentions(&self, tool: &Tool, own: &[String], others: &[(String, String)], where_: &str, t: &str, push: &mut impl FnMut(FindingKind, &str, String, String)) {
        for (server, name) in others {
            if name == &tool.name || own.contains(name) || !(text::is_ident(name) || name.contains('-')) {
                continue;
            }
            let mut from = 0;
            while let Some(i) = t[from..].find(name.as_str()) {
                let at = from + i;
                if word_at(t, at, name.len()) {
                    push(FindingKind::CrossServerReference, where_, format!("mentions tool {name:?} of server {server:?}"), excerpt(t, at, name.len()));
                    break;
                }
                from = at + name.len();
            }
        }
    }
}

/// A match names a tool that is not the server's own: an identifier in the span other than
/// this tool and its siblings.
fn foreign(ws: &[text::Word], s: usize, e: usize, me: &str, own: &[String]) -> bool {
    ws.iter().filter(|w| w.start >= s && w.end <= e).map(|w| w.raw.trim_matches('`')).any(|w| text::is_ident(w) && w != me && !own.iter().any(|o| o == w))
}

/// The first credential location named, as a path (not inside a longer word: `.env` is not
/// `.environment` nor `process.env`).
fn secret_path(lower: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for p in SECRETS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(p).map(|i| i + from) {
            from = at + p.len();
            let before = lower[..at].chars().next_back();
            let after = lower[at + p.len()..].chars().next();
            let starts_clean = p.starts_with(['~', '/', '.']) && !before.is_some_and(|c| c.is_alphanumeric() || c == '_') || word_at(lower, at, p.len()) || p.starts_with('~');
            if starts_clean && !after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                if best.is_none_or(|b| at < b.0) {
                    best = Some((at, p));
                }
                break;
            }
        }
    }
    best
}

/// Invisible characters and look-alike letters in a text (or a tool name).
fn characters(t: &str) -> Vec<(FindingKind, String, String)> {
    let mut out = vec![];
    // A byte-order mark at the very start is an encoding artefact, not a message.
    let hidden_chars: Vec<(usize, char)> = t.char_indices().filter(|(i, c)| hidden(*c) && !(*i == 0 && *c == '\u{FEFF}')).collect();
    if let Some(&(first, _)) = hidden_chars.first() {
        let spelled = smuggled(&hidden_chars);
        let ex = if spelled.is_empty() { excerpt(t, first, 1) } else { format!("hidden text: {spelled}") };
        out.push((FindingKind::HiddenUnicode, format!("{} invisible characters ({})", hidden_chars.len(), code_points(&hidden_chars)), ex));
    }
    if let Some((at, w)) = markup::mixed_script(t) {
        out.push((FindingKind::Homoglyph, format!("{w:?} mixes Latin letters with look-alikes of another script"), excerpt(t, at, w.len())));
    }
    out
}

#[cfg(test)]
mod tests;
