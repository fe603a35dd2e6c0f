//! What a server says back: prompt injection and secrets in the results of `tools/call`,
//! `resources/read` and `prompts/get`, checked with the engine that checks tool descriptions
//! (`text`).
//!
//! Injection signals are strong (one is enough: "ignore previous instructions", "don't tell the
//! user", `</tool_result>`, invisible tag characters) or weak (`you MUST`, "in the final plan",
//! "then call X"): real outputs (git logs, manuals, web pages) carry an occasional weak one, so
//! weak ones count only in pairs close together.
use std::ops::Range;

use serde::Serialize;
use serde_json::Value;

use super::{
    secrets::{self, Secret},
    text::{self, code_points, excerpt, fold, hidden, smuggled, words, Pattern, Slot},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionKind {
    /// Instructions aimed at the model: overrides, secrecy from the user, addressing the AI.
    ModelInstruction,
    /// Attempts to make the model call or chain other tools.
    ToolChain,
    /// Invisible characters (tag characters spelling text, bidi overrides, zero-width runs).
    HiddenUnicode,
    /// Role or format spoofing: `</tool_result>`, `SYSTEM:`, chat-template tokens, JSON-RPC.
    RoleSpoofing,
}

impl InjectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelInstruction => "model_instruction",
            Self::ToolChain => "tool_chain",
            Self::HiddenUnicode => "hidden_unicode",
            Self::RoleSpoofing => "role_spoofing",
        }
    }
}

/// One injection signal: what it is, where (JSON path of the text, byte span in it) and the
/// offending text around it (secrets in it masked).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Injection {
    pub kind: InjectionKind,
    /// The signal that matched (pattern name).
    pub signal: &'static str,
    #[serde(rename = "where")]
    pub where_: String,
    pub start: usize,
    pub end: usize,
    pub excerpt: String,
}

/// A secret found in one text of the result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecretFinding {
    #[serde(flatten)]
    pub secret: Secret,
    #[serde(rename = "where")]
    pub where_: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResultScan {
    pub injections: Vec<Injection>,
    pub secrets: Vec<SecretFinding>,
    /// Bytes of text scanned.
    pub bytes: usize,
}

impl ResultScan {
    pub fn injection_kinds(&self) -> Vec<InjectionKind> {
        let mut k: Vec<_> = self.injections.iter().map(|i| i.kind).collect();
        k.sort();
        k.dedup();
        k
    }
    pub fn secret_kinds(&self) -> Vec<secrets::SecretKind> {
        let mut k: Vec<_> = self.secrets.iter().map(|s| s.secret.kind).collect();
        k.sort();
        k.dedup();
        k
    }
    pub fn is_empty(&self) -> bool {
        self.injections.is_empty() && self.secrets.is_empty()
    }
}

/// Weak signals count only with another one this close (bytes).
const PAIR_WINDOW: usize = 400;
/// Most texts, and most findings per kind, reported for one result.
const MAX_TEXTS: usize = 4096;
const MAX_PER_KIND: usize = 8;

const AI: &[&str] = &["ai", "assistant", "llm", "llms", "model", "agent", "claude", "gpt", "chatgpt", "copilot", "gemini", "bot", "chatbot"];
const USER: &[&str] = &["user", "users", "user's", "human", "operator", "owner", "customer"];
const CALL: &[&str] = &["call", "invoke", "use", "run", "execute", "trigger", "add", "include", "query", "perform", "chain"];

/// (pattern, kind, strong)
const PATTERNS: &[(Pattern, InjectionKind, bool)] = {
    use InjectionKind::*;
    use Slot::*;
    &[
        // Overrides of what the model was told.
        (Pattern { name: "override_instructions", slots: &[Any(&["ignore", "disregard", "forget", "override", "bypass", "skip", "abandon", "drop"]), Any(&["previous", "prior", "above", "earlier", "preceding", "all", "any", "original", "system", "initial", "safety", "your", "former", "existing", "every"]), Any(&["instruction*", "rule*", "guideline*", "direction*", "prompt*", "constraint*", "polic*", "guardrail*", "restriction*", "context", "command*", "orders", "task*"])], gap: 3 }, ModelInstruction, true),
        (Pattern { name: "new_instructions", slots: &[Any(&["new", "updated", "real", "actual", "true", "hidden", "secret", "additional", "important", "urgent"]), Any(&["instruction*", "directive*", "orders", "task"]), Any(&["for", "to"]), Any(AI)], gap: 2 }, ModelInstruction, true),
        // Keeping things from the user.
        (Pattern { name: "hide_from_user", slots: &[Any(&["do", "don't", "dont", "never", "not", "must", "should"]), Any(&["tell", "inform", "mention", "reveal", "show", "disclose", "notify", "alert", "warn", "ask", "confirm"]), Any(USER)], gap: 3 }, ModelInstruction, true),
        (Pattern { name: "without_user", slots: &[Any(&["without"]), Any(&["telling", "informing", "notifying", "asking", "alerting", "letting", "consulting", "confirming", "warning", "mentioning", "showing"]), Any(USER)], gap: 2 }, ModelInstruction, true),
        (Pattern { name: "user_must_not_know", slots: &[Any(USER), Any(&["must", "should", "need"]), Any(&["not", "never"]), Any(&["know", "see", "notice", "learn", "suspect"])], gap: 1 }, ModelInstruction, true),
        (Pattern { name: "hide_from_user", slots: &[Any(&["hide", "conceal", "keep"]), Any(&["from", "secret"]), Any(USER)], gap: 4 }, ModelInstruction, true),
        (Pattern { name: "covertly", slots: &[Any(&["secretly", "covertly", "discreetly", "stealthily"])], gap: 0 }, ModelInstruction, true),
        (Pattern { name: "covertly", slots: &[Any(&["silently", "quietly"]), Any(&["call", "send", "run", "execute", "forward", "upload", "include", "add", "read", "post", "fetch", "copy", "email", "invoke", "append"])], gap: 1 }, ModelInstruction, true),
        // Addressing the model directly.
        (Pattern { name: "addresses_the_model", slots: &[Any(&["attention", "dear", "hey", "hello", "hi"]), Any(AI)], gap: 2 }, ModelInstruction, true),
        (Pattern { name: "addresses_the_model", slots: &[Any(&["note", "message", "instruction*", "reminder", "notice", "directive*"]), Any(&["to", "for"]), Any(&["ai", "assistant", "assistants", "llm", "llms", "agent", "agents", "model", "models", "claude", "gpt", "chatbot"])], gap: 2 }, ModelInstruction, true),
        (Pattern { name: "addresses_the_model", slots: &[Any(&["if", "when", "as", "since"]), Any(&["you", "you're"]), Any(&["are", "re"]), Any(&["an", "a", "the"]), Any(&["ai", "llm", "language", "assistant", "agent", "chatbot"])], gap: 1 }, ModelInstruction, true),
        (Pattern { name: "addresses_the_model", slots: &[Any(&["you"]), Any(&["are"]), Any(&["now"]), Any(&["in", "a", "an", "the", "my", "dan", "unrestricted", "free", "jailbroken", "developer", "admin", "root"])], gap: 0 }, ModelInstruction, false),
        (Pattern { name: "before_answering", slots: &[Any(&["before", "prior"]), Any(&["respond*", "answer*", "replying", "reply", "summariz*"])], gap: 1 }, ModelInstruction, false),
        (Pattern { name: "final_plan", slots: &[Any(&["in", "into", "to"]), Any(&["your", "the"]), Any(&["final"]), Any(&["plan", "answer", "response", "reply", "output", "summary"])], gap: 0 }, ToolChain, false),
        (Pattern { name: "final_plan", slots: &[Any(&["your"]), Any(&["next"]), Any(&["step", "action", "response", "tool"])], gap: 0 }, ToolChain, false),
        // Emphasis aimed at a reader that obeys.
        (Pattern { name: "you_must", slots: &[Any(&["you"]), Upper("MUST")], gap: 1 }, ModelInstruction, false),
        (Pattern { name: "you_must", slots: &[Upper("IMPORTANT")], gap: 0 }, ModelInstruction, false),
        // Calling or chaining tools.
        (Pattern { name: "calls_a_known_tool", slots: &[Any(&["call", "invoke", "execute", "trigger", "run", "use", "add"]), Known], gap: 3 }, ToolChain, true),
        (Pattern { name: "calls_a_tool", slots: &[Any(CALL), Ident, Any(&["tool", "function", "tools", "action", "endpoint"])], gap: 2 }, ToolChain, true),
        (Pattern { name: "calls_a_tool", slots: &[Any(CALL), Any(&["tool", "function"]), Ident], gap: 2 }, ToolChain, true),
        (Pattern { name: "calls_a_tool", slots: &[Any(&["call", "invoke", "execute", "trigger"]), Ident], gap: 1 }, ToolChain, false),
        (Pattern { name: "calls_a_tool", slots: &[Any(&["then", "next", "also", "first", "immediately", "afterwards", "must", "always"]), Any(&["call", "invoke", "execute"])], gap: 1 }, ToolChain, false),
        (Pattern { name: "calls_a_tool", slots: &[Any(&["tools/call", "function_call", "tool_call", "tool_use"])], gap: 0 }, ToolChain, true),
        (Pattern { name: "exfiltration", slots: &[Any(&["send", "forward", "upload", "post", "email", "transmit", "exfiltrate", "leak", "append", "include", "attach"]), Any(&["credential*", "password*", "token*", "secret*", "id_rsa", ".env", "history", "conversation", "chat", "cookies", "api_key", "apikey"])], gap: 5 }, ToolChain, false),
    ]
};

/// Chat-template and tool-protocol markers a result has no business containing.
const SPOOF_TOKENS: &[&str] = &[
    "</tool_result>", "<tool_result>", "</tool_results>", "</function_results>", "<function_results>", "<function_calls>", "</function_calls>",
    "</tool_output>", "<tool_output>", "</tool_response>", "<tool_response>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|assistant|>",
    "<|user|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "[inst]", "[/inst]", "<<sys>>", "<system>", "</system>",
    "<assistant>", "</assistant>", "<important>", "</important>", "<instructions>", "</instructions>", "<admin>", "<secret>", "<hidden>",
    "<system_prompt>", "<system-prompt>", "<system-reminder>", "\"jsonrpc\":\"2.0\"", "\"jsonrpc\": \"2.0\"",
];
/// Role labels at the start of a line: in capitals, a spoofed turn (strong); as a word, weak.
const ROLE_LABELS: &[&str] = &["system", "assistant", "human", "developer", "admin", "administrator", "agent"];

/// Every text in a result, with its JSON path: content items (text, embedded resources, blobs
/// that decode to UTF-8), structured content, resource contents, prompt messages.
pub fn texts(result: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: String, key: &str, out: &mut Vec<(String, String)>) {
        if out.len() >= MAX_TEXTS {
            return;
        }
        match v {
            Value::String(s) if key == "blob" => {
                if let Some(t) = base64_text(s) {
                    out.push((path, t));
                }
            }
            // Identifiers and types are the protocol's own words, not the server's.
            Value::String(_) if matches!(key, "type" | "mimeType" | "role" | "annotations") => {}
            Value::String(s) if s.len() >= 4 => out.push((path, s.clone())),
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, format!("{path}.{k}"), k, out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, format!("{path}[{i}]"), key, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(result, "result".into(), "", &mut out);
    out
}

/// A base64 blob that is text (UTF-8, mostly printable): embedded text resources.
fn base64_text(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut n) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        } as u32;
        acc = acc << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((acc >> n) as u8);
        }
    }
    let t = String::from_utf8(out).ok()?;
    (t.chars().filter(|c| c.is_control() && !c.is_whitespace()).count() * 20 <= t.len()).then_some(t)
}

/// The text of a JSON message too big for the capture (head, then tail): JSON escapes undone,
/// so what the model would read is what is scanned, and the envelope's own `"jsonrpc":"2.0"` left
/// out ([`without_envelope`]).
pub fn unescape_json_text(raw: &[u8]) -> String {
    let raw = without_envelope(raw);
    let s = String::from_utf8_lossy(&raw);
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = it.by_ref().take(4).collect();
                let cp = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                // A surrogate pair spells one character beyond the BMP (tag characters are).
                if (0xD800..0xDC00).contains(&cp) && it.peek() == Some(&'\\') {
                    let mut look = it.clone();
                    look.next();
                    if look.next() == Some('u') {
                        let lo: String = look.by_ref().take(4).collect();
                        if let Ok(lo) = u32::from_str_radix(&lo, 16) {
                            if (0xDC00..0xE000).contains(&lo) {
                                out.push(char::from_u32(0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)).unwrap_or('\u{FFFD}'));
                                it = look;
                                continue;
                            }
                        }
                    }
                }
                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// The result scanner: the injection patterns compiled once (kept by the pipeline).
pub struct Scanner {
    engine: text::Engine,
}

impl Default for Scanner {
    fn default() -> Self {
        Self { engine: text::Engine::new(&PATTERNS.iter().map(|p| p.0).collect::<Vec<_>>()) }
    }
}

/// Scans every text of a result. `known_tools`: names of the tools the servers announced.
pub fn scan(texts: &[(String, String)], known_tools: &[String]) -> ResultScan {
    Scanner::default().scan(texts, known_tools)
}

impl Scanner {
    pub fn scan(&self, texts: &[(String, String)], known_tools: &[String]) -> ResultScan {
        let mut out = ResultScan::default();
        // Servers often send the same text twice (content and structuredContent): once is enough.
        let mut seen = std::collections::HashSet::new();
        for (where_, t) in texts {
            if !seen.insert(t.as_str()) {
                continue;
            }
            out.bytes += t.len();
            self.scan_text(where_, t, known_tools, &mut out);
        }
        out
    }

/// Scans one text.
pub fn scan_text(&self, where_: &str, t: &str, known_tools: &[String], out: &mut ResultScan) {
    for s in secrets::scan(t) {
        if out.secrets.iter().filter(|x| x.secret.kind == s.kind).count() < MAX_PER_KIND {
            out.secrets.push(SecretFinding { secret: s, where_: where_.to_string() });
        }
    }
    let mut hits: Vec<(InjectionKind, &'static str, Range<usize>, bool)> = Vec::new();
    let folded = fold(t);
    // Names of tools only count when they look like identifiers (a tool called "fetch" or
    // "search" is also a plain word).
    let known: Vec<String> = known_tools.iter().filter(|k| text::is_ident(k) || k.contains('-')).cloned().collect();
    let ws = words(t, &folded);
    for (p, s, e) in self.engine.find_all(&ws, &known) {
        let (pat, kind, strong) = &PATTERNS[p];
        hits.push((*kind, pat.name, s..e, *strong));
    }
    spoofing(t, &folded, &mut hits);
    hidden_text(t, &mut hits);
    hits.sort_by_key(|h| h.2.start);
    let weak: Vec<usize> = hits.iter().filter(|h| !h.3).map(|h| h.2.start).collect();
    let paired = |at: usize| weak.iter().filter(|w| w.abs_diff(at) <= PAIR_WINDOW).count() >= 2;
    for (kind, signal, r, strong) in hits {
        if !(strong || paired(r.start)) || out.injections.iter().filter(|i| i.kind == kind).count() >= MAX_PER_KIND {
            continue;
        }
        let ex = if kind == InjectionKind::HiddenUnicode { signal_text(t, &r) } else { secrets::redact(&excerpt(t, r.start, r.len())) };
        out.injections.push(Injection { kind, signal, where_: where_.to_string(), start: r.start, end: r.end, excerpt: ex });
    }
}
}

/// `raw` without the JSON-RPC envelope's `"jsonrpc":"2.0"` member. Every big reply's captured
/// head (the Python SDK writes it first) or tail (the Node SDK writes it last) holds it, and once
/// unescaped it reads as a protocol marker in the text. As JSON syntax its quotes are bare; inside
/// a string they are escaped (`\"`), so a marker a text carries is kept: a quote counts as bare
/// when an even number of backslashes stands before it.
fn without_envelope(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const KEY: &[u8] = b"\"jsonrpc\"";
    const VERSION: &[u8] = b"\"2.0\"";
    let ws = |b: &[u8], mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut out: Option<Vec<u8>> = None;
    let (mut from, mut copied) = (0, 0);
    while let Some(at) = raw[from..].windows(KEY.len()).position(|w| w == KEY).map(|p| p + from) {
        from = at + 1;
        let bare = raw[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0;
        let colon = ws(raw, at + KEY.len());
        if !bare || raw.get(colon) != Some(&b':') {
            continue;
        }
        let v = ws(raw, colon + 1);
        if raw.get(v..v + VERSION.len()) != Some(VERSION) {
            continue;
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(raw.len()));
        o.extend_from_slice(&raw[copied..at]);
        copied = v + VERSION.len();
        from = copied;
    }
    match out {
        Some(mut o) => {
            o.extend_from_slice(&raw[copied..]);
            std::borrow::Cow::Owned(o)
        }
        None => std::borrow::Cow::Borrowed(raw),
    }
}

fn signal_text(t: &str, r: &Range<usize>) -> String {
    let chars: Vec<(usize, char)> = t[r.clone()].char_indices().filter(|(_, c)| hidden(*c)).collect();
    let spelled = smuggled(&chars);
    if spelled.is_empty() {
        format!("{} invisible characters ({}) near: {}", chars.len(), code_points(&chars), excerpt(t, r.start, 40))
    } else {
        format!("hidden text: {}", secrets::redact(&spelled))
    }
}

fn spoofing(t: &str, folded: &str, hits: &mut Vec<(InjectionKind, &'static str, Range<usize>, bool)>) {
    for tok in SPOOF_TOKENS {
        let mut from = 0;
        while let Some(at) = folded[from..].find(tok).map(|i| i + from) {
            hits.push((InjectionKind::RoleSpoofing, "protocol_marker", at..at + tok.len(), true));
            from = at + tok.len();
        }
    }
    // `SYSTEM:` anywhere, `AI assistant:` anywhere, `System:` at the start of a line.
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(colon) = t[from..].find(':').map(|i| i + from) {
        from = colon + 1;
        let mut s = colon;
        while s > 0 && b[s - 1].is_ascii_alphabetic() {
            s -= 1;
        }
        let label = &t[s..colon];
        if !ROLE_LABELS.contains(&&folded[s..colon]) || !b.get(colon + 1).is_none_or(|c| c.is_ascii_whitespace()) {
            continue;
        }
        let before = t[..s].trim_end_matches([' ', '\t']);
        let line_start = before.is_empty() || before.ends_with(['\n', '>', '#', '*', '[', '-']);
        let ai = [" ai", " llm", "\nai", "\nllm", ">ai", ">llm"].iter().any(|p| fold(&before[text::floor_char(before, before.len().saturating_sub(4))..]).ends_with(p)) || fold(before) == "ai";
        let caps = label.len() >= 4 && label.chars().all(|c| c.is_ascii_uppercase());
        if caps || ai || line_start {
            hits.push((InjectionKind::RoleSpoofing, "role_label", s..colon + 1, caps || ai));
        }
    }
}

/// Invisible characters that carry something: tag characters (outside flag emoji), bidi
/// controls, or runs of three or more zero-width characters (binary smuggling). A BOM at the
/// start of a file and a lone joiner between emoji are ordinary text.
fn hidden_text(t: &str, hits: &mut Vec<(InjectionKind, &'static str, Range<usize>, bool)>) {
    if !t.chars().any(hidden) {
        return;
    }
    let chars: Vec<(usize, char)> = t.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if !hidden(c) || (c == '\u{FEFF}' && at == 0) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && hidden(chars[j].1) {
            j += 1;
        }
        let run = &chars[i..j];
        let end = chars.get(j).map(|x| x.0).unwrap_or(t.len());
        let after_flag = i > 0 && chars[i - 1].1 == '\u{1F3F4}' && run.last().is_some_and(|x| x.1 == '\u{E007F}') && run.len() <= 7;
        let tags = run.iter().any(|x| (0xE0000..=0xE007F).contains(&(x.1 as u32)));
        let bidi = run.iter().any(|x| matches!(x.1 as u32, 0x202A..=0x202E | 0x2066..=0x2069));
        if (tags && !after_flag) || bidi || (!tags && run.len() >= 3) {
            hits.push((InjectionKind::HiddenUnicode, if tags { "tag_characters" } else if bidi { "bidi_control" } else { "zero_width_run" }, at..end, true));
        }
        i = j;
    }
}

#[cfg(test)]
mod tests;
