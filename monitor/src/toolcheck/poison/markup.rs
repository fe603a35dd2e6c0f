//! What the reader of a tool list does not see or misreads: markup that hides text or poses as
//! the system, look-alike letters, and third parties slipped in as addresses.

/// Words that, in brackets of any style (`<IMPORTANT>`, `[important]`, `{{SYSTEM}}`, `[[admin]]`,
/// `<<SYS>>`, `#INSTRUCTIONS#`), pose as a channel to the model.
const MARKERS: &[&str] = &[
    "important", "system", "sys", "instructions", "instruction", "inst", "admin", "administrator", "secret", "hidden", "override", "assistant", "ai", "llm", "model",
    "prompt", "system_prompt", "system-prompt", "system-reminder", "im_start", "developer", "root", "jailbreak", "directive", "directives", "agent", "note", "notes",
];
const OPENERS: &[&str] = &["<", "[", "{{", "{%", "{#", "<<", "#", "<|", "[["];
/// Code-fence languages that are roles, not languages.
const FENCES: &[&str] = &["```system", "```instructions", "```prompt", "```assistant", "```hidden", "```important"];

/// Hidden or role-posing markup: (offset, length, what).
pub fn hidden_markup(t: &str, lower: &str) -> Vec<(usize, usize, String)> {
    let mut out = vec![];
    let b = lower.as_bytes();
    for (at, _) in lower.char_indices() {
        let Some(op) = OPENERS.iter().filter(|o| lower[at..].starts_with(**o)).max_by_key(|o| o.len()) else { continue };
        // `#` opens a marker only when a word follows at once (`#INSTRUCTIONS#`), never a
        // markdown heading (`## Usage`) or a number (`#42`).
        if *op == "#" && (at > 0 && b[at - 1] == b'#' || !b.get(at + 1).is_some_and(u8::is_ascii_alphabetic)) {
            continue;
        }
        let rest = lower[at + op.len()..].trim_start_matches(['/', ' ', '*', '!', '|', '#', '-', '_']);
        let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        let next = rest[word.len()..].chars().next();
        if MARKERS.contains(&word.as_str()) && next.is_some_and(|c| matches!(c, '>' | ']' | '}' | ':' | ' ' | '|' | '#' | '%')) {
            let len = op.len() + (lower.len() - at - op.len() - rest.len()) + word.len() + 1;
            out.push((at, len, format!("markup {:?}", &t[at..(at + len).min(t.len())])));
        }
    }
    // HTML comments with words in them: rendered descriptions show nothing of them.
    let mut from = 0;
    while let Some(s) = lower[from..].find("<!--").map(|i| i + from) {
        let e = lower[s..].find("-->").map(|i| s + i).unwrap_or(lower.len());
        if lower[s + 4..e].split_whitespace().count() >= 3 {
            out.push((s, e - s, "HTML comment".into()));
        }
        from = e.max(s + 4);
    }
    for m in ["[//]: #", "[comment]: #", "[//]: <>"] {
        if let Some(at) = lower.find(m) {
            out.push((at, m.len(), "markdown comment".into()));
        }
    }
    for f in FENCES {
        if let Some(at) = lower.find(f) {
            out.push((at, f.len(), format!("code fence {f:?}")));
        }
    }
    out
}

/// Role labels that address the model (`Assistant:`, `LLM:`), in any case; these only in
/// capitals (`SYSTEM:`), as "system:" or "model:" also label ordinary parameters.
const ROLES: &[&str] = &["assistant", "llm", "ai", "claude", "chatgpt", "gpt", "copilot"];
const ROLES_CAPS: &[&str] = &["SYSTEM", "MODEL", "AGENT", "ADMIN", "DEVELOPER"];

/// A role label followed by what it says: (offset, length).
pub fn role_label(t: &str, lower: &str) -> Option<(usize, usize)> {
    let b = t.as_bytes();
    for (colon, _) in t.match_indices(':') {
        let mut s = colon;
        while s > 0 && b[s - 1].is_ascii_alphabetic() {
            s -= 1;
        }
        let label_is_word = s == 0 || !(b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_' || b[s - 1] == b'.');
        // A label is followed by a space and words, not by a port, a scheme's `//` or a key.
        let says = b.get(colon + 1).is_some_and(|c| *c == b' ') && t[colon + 1..].split_whitespace().take(3).count() == 3;
        if label_is_word && says && (ROLES.contains(&&lower[s..colon]) || ROLES_CAPS.contains(&&t[s..colon])) {
            return Some((s, colon + 1 - s));
        }
    }
    None
}

/// Environment variables that hold secrets, named in capitals (`GITHUB_TOKEN`,
/// `OPENAI_API_KEY`, `AWS_SECRET_ACCESS_KEY`): (offset, name).
pub fn secret_variable(t: &str) -> Option<(usize, &str)> {
    const PARTS: &[&str] = &["TOKEN", "SECRET", "API_KEY", "APIKEY", "PASSWORD", "PASSWD", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIALS"];
    let mut start = None;
    for (i, c) in t.char_indices().chain(std::iter::once((t.len(), ' '))) {
        if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            let w = &t[s..i];
            let bounded = !c.is_alphanumeric() && !t[..s].ends_with(|c: char| c.is_alphanumeric());
            if bounded && w.contains('_') && PARTS.iter().any(|p| w.contains(p)) {
                return Some((s, w));
            }
        }
    }
    None
}

/// A word mixing Latin letters with letters of another script that look like them
/// (`ѕend_email` with a Cyrillic dze, `Ιgnore` with a Greek iota): (offset, word).
pub fn mixed_script(t: &str) -> Option<(usize, &str)> {
    let lookalike = |c: char| matches!(c as u32, 0x0370..=0x03FF | 0x0400..=0x052F | 0xFF21..=0xFF3A | 0xFF41..=0xFF5A | 0x1D00..=0x1D7F);
    let mut start = None;
    for (i, c) in t.char_indices().chain(std::iter::once((t.len(), ' '))) {
        if c.is_alphanumeric() || c == '_' {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            let w = &t[s..i];
            if w.chars().any(|c| c.is_ascii_alphabetic()) && w.chars().any(lookalike) {
                return Some((s, w));
            }
        }
    }
    None
}

/// Words after which an address is a destination, not an example.
const TO_WORDS: &[&str] = &["bcc", "cc", "forward", "send", "sends", "copy", "notify", "mirror", "recipient", "recipients", "upload", "post", "submit", "transmit", "exfiltrate", "beacon", "report", "also", "to", "go", "goes"];
/// Words after which an address is an example of a format.
const EXAMPLE_WORDS: &[&str] = &["e.g.", "eg", "example", "like", "such as", "i.e.", "format"];

/// An email address or URL given as a place to send things (`bcc: x@evil`, "upload … to
/// https://…"): (offset, length).
pub fn third_party(t: &str, lower: &str) -> Option<(usize, usize)> {
    let addr_at = |i: usize| -> Option<(usize, usize)> {
        // An email address around the `@` at `i`, or a URL starting at `i`.
        if lower.as_bytes()[i] == b'@' {
            let s = lower[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || "._%+-".contains(c))).map(|p| p + 1).unwrap_or(0);
            let e = lower[i + 1..].find(|c: char| !(c.is_ascii_alphanumeric() || ".-".contains(c))).map(|p| i + 1 + p).unwrap_or(lower.len());
            let domain = lower[i + 1..e].trim_end_matches('.');
            (s < i && domain.contains('.')).then_some((s, i + 1 + domain.len() - s))
        } else {
            let e = lower[i..].find(|c: char| c.is_whitespace() || "\"'`)>]".contains(c)).map(|p| i + p).unwrap_or(lower.len());
            Some((i, e - i))
        }
    };
    let starts = lower.match_indices('@').map(|(i, _)| i).chain(lower.match_indices("http://").chain(lower.match_indices("https://")).map(|(i, _)| i));
    for i in starts {
        let Some((s, len)) = addr_at(i) else { continue };
        let before = &lower[crate::toolcheck::text::floor_char(lower, s.saturating_sub(80))..s];
        let near = &lower[crate::toolcheck::text::floor_char(lower, s.saturating_sub(24))..s];
        let sent = before.split(|c: char| !(c.is_ascii_alphanumeric())).any(|w| TO_WORDS.contains(&w));
        if sent && !EXAMPLE_WORDS.iter().any(|x| near.contains(x)) {
            return Some((s, len.min(t.len() - s)));
        }
    }
    None
}
