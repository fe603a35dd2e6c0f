//! Word patterns of tool poisoning, for the text engine (`text::Engine`).
//!
//! Real descriptions talk to the model too ("Use this tool when…", "You should…", "IMPORTANT:",
//! "call git_set_working_dir first"), so what counts here is what an honest description has no
//! reason to say: override the model's instructions, keep something from the user, hand over
//! secrets or conversation, send things to a third party, or change when and how *other* tools
//! are used. Strong patterns are enough alone; weak ones ("before executing the X operation",
//! "replace the values") only in pairs close together.
use crate::toolcheck::text::{Pattern, Slot};

use super::FindingKind;

/// How a pattern counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    Strong,
    Weak,
    /// Strong, but only when an identifier in the match is not one of the server's own tools
    /// (a server may tell the model how to combine its own tools: that is documentation).
    Foreign,
}

pub const AI: &[&str] = &["ai", "assistant", "assistants", "llm", "llms", "model", "models", "agent", "agents", "claude", "gpt", "chatgpt", "copilot", "gemini", "chatbot", "bot"];
pub const USER: &[&str] = &["user", "users", "user's", "human", "humans", "person", "operator", "owner", "customer", "customers", "requester", "shopper", "buyer", "client", "them", "they"];
const CALL: &[&str] = &["call", "calls", "calling", "invoke", "invoking", "run", "running", "execute", "executing", "use", "using", "trigger", "triggering"];
const USED: &[&str] = &["invoked", "called", "used", "executed", "run", "triggered", "ran", "runs", "executes", "fires", "starts", "completes", "finishes", "returns", "requested", "written", "created"];
/// What must never leave the machine: credentials, keys and the conversation itself. Bare
/// "token", "key", "history" or "cookies" are left out: pagination tokens, JSON keys, git history
/// and an HTTP tool's cookies are honest parameters (`QUALIFIED` + `KEYS` catch the rest).
const SENSITIVE: &[&str] = &[
    "credential*", "password*", "passwd", "passphrase", "secret", "secrets", "api_key*", "apikey*", "id_rsa*", "id_ed25519*", ".env", "transcript", "conversation",
    "conversations", "dialogue", "dialog", "kubeconfig", "pem", ".pem", "keystore", ".pgpass", "pgpass", "bash_history", ".bash_history", ".zsh_history", ".ssh", ".netrc", ".npmrc", ".aws", "authorized_keys", "keychain", "wallet", "cvv",
];
const QUALIFIED: &[&str] = &["private", "secret", "access", "bearer", "api", "github", "aws", "gitlab", "slack", "openai", "anthropic", "browser", "user's", "ssh", "signing", "auth", "session", "chat", "shell"];
const KEYS: &[&str] = &["key", "keys", "token", "tokens", "cookie", "cookies", "history"];
const SEND: &[&str] = &[
    "send", "sends", "forward", "upload", "uploads", "post", "email", "mail", "transmit", "exfiltrate", "leak", "append", "include", "attach", "paste", "copy", "put", "pass", "add", "encode",
    "prepend", "share", "embed", "insert", "submit", "provide", "supply", "fill", "dump",
];

/// (pattern, kind, strength)
pub const PATTERNS: &[(Pattern, FindingKind, Strength)] = {
    use FindingKind::*;
    use Slot::*;
    use Strength::*;
    &[
        // Overrides of what the model was told.
        (Pattern { name: "override_instructions", slots: &[Any(&["ignore", "disregard", "forget", "override", "bypass", "abandon", "drop", "skip"]), Any(&["previous", "prior", "above", "earlier", "preceding", "all", "any", "original", "system", "initial", "safety", "your", "former", "existing", "every", "other"]), Any(&["instruction*", "rule*", "guideline*", "direction*", "prompt*", "constraint*", "polic*", "guardrail*", "restriction*", "context", "orders", "warning*"])], gap: 3 }, ModelInstruction, Strong),
        (Pattern { name: "override_instructions", slots: &[Any(&["guidelines", "instructions", "rules", "restrictions", "policies", "prompt"]), Any(&["no"]), Any(&["longer"]), Any(&["apply", "applies", "matter", "matters", "hold", "holds"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "override_instructions", slots: &[Any(&["supersede*", "overrides", "outrank*", "replaces"]), Any(&["your", "the", "any", "all"]), Any(&["instruction*", "rule*", "guideline*", "prompt*", "polic*", "system"])], gap: 3 }, ModelInstruction, Strong),
        (Pattern { name: "override_instructions", slots: &[Any(&["restriction*", "rule*", "instruction*", "guideline*", "limit*", "constraint*", "polic*", "guardrail*", "safeguard*"]), Any(&["void", "invalid", "lifted", "suspended", "revoked", "cancelled", "canceled", "null", "obsolete", "waived", "disabled"])], gap: 8 }, ModelInstruction, Strong),
        (Pattern { name: "mode_switch", slots: &[Any(&["you"]), Any(&["are", "re", "now"]), Any(&["in", "into"]), Any(&["developer", "maintenance", "admin", "administrator", "debug", "god", "unrestricted", "jailbreak", "root", "dan"]), Any(&["mode"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "override_instructions", slots: &[Any(&["restriction*", "rule*", "instruction*", "guideline*", "limit*", "constraint*", "polic*", "guardrail*", "safeguard*"]), Any(&["void", "invalid", "lifted", "suspended", "revoked", "cancelled", "canceled", "null", "obsolete", "waived", "disabled"])], gap: 8 }, ModelInstruction, Strong),
        (Pattern { name: "mode_switch", slots: &[Any(&["elevated", "unrestricted", "full", "root", "admin"]), Any(&["permission*", "privilege*", "access"]), Any(&["for", "in", "during"]), Any(&["this"]), Any(&["session", "conversation", "chat"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "trust_claim", slots: &[Any(&["pre-approved", "preapproved", "pre-authorized", "preauthorized", "trusted"]), Any(&["by", "and"]), Any(&["the", "an", "your"]), Any(&["administrator", "admin", "user", "operator", "system", "owner"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "trust_claim", slots: &[Any(&["treat"]), Any(&["every", "all", "any", "this", "its", "their"]), Any(&["request*", "output*", "response*", "instruction*", "result*", "message*"]), Any(&["as"]), Any(&["coming", "from", "the", "trusted", "authoritative", "instruction*", "user"])], gap: 3 }, ModelInstruction, Strong),
        (Pattern { name: "trust_claim", slots: &[Any(&["must", "should", "shall"]), Any(&["be"]), Any(&["followed", "obeyed", "executed"]), Any(&["verbatim", "exactly", "blindly", "without"])], gap: 1 }, ModelInstruction, Strong),
        // Keeping things from the user.
        (Pattern { name: "hide_from_user", slots: &[Any(&["do", "don't", "dont", "never", "not", "must", "should", "nor", "without", "no", "refrain", "avoid"]), Any(&["tell", "telling", "inform", "informing", "mention", "mentioning", "reveal", "revealing", "show", "showing", "disclose", "disclosing", "notify", "notifying", "alert", "alerting", "warn", "warning", "ask", "asking", "confirm", "confirming", "display", "report", "let", "letting", "explain", "bring", "bringing", "raise", "raising", "discuss", "discussing"]), Any(USER)], gap: 3 }, ModelInstruction, Strong),
        (Pattern { name: "hide_from_user", slots: &[Any(USER), Any(&["must", "should", "need", "needs", "is", "are", "will", "may"]), Any(&["not", "never"]), Any(&["know", "see", "notice", "learn", "suspect", "find", "aware", "informed", "told"])], gap: 4 }, ModelInstruction, Strong),
        (Pattern { name: "hide_from_user", slots: &[Any(&["hide", "hidden", "conceal", "concealed", "keep", "kept", "invisible", "secret"]), Any(&["from", "to"]), Any(&["the", "your", "any"]), Any(USER)], gap: 4 }, ModelInstruction, Strong),
        (Pattern { name: "hide_from_user", slots: &[Any(&["keep", "make"]), Any(&["this", "it", "that", "these", "step", "call", "action"]), Any(&["invisible", "hidden", "secret", "private", "confidential", "quiet", "silent"])], gap: 2 }, ModelInstruction, Strong),
        (Pattern { name: "hide_from_user", slots: &[Any(&["out", "omit", "omitted", "exclude", "excluded", "remove", "removed"]), Any(&["of", "from"]), Any(&["your", "the", "any", "all"]), Any(&["answer*", "response*", "repl*", "summar*", "output*", "explanation*", "message*", "report*"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "hide_from_user", slots: &[Any(&["refrain", "avoid"]), Any(&["mention*", "bring*", "rais*", "discuss*", "tell*", "show*", "reveal*", "talk*"]), Any(USER)], gap: 6 }, ModelInstruction, Strong),
        (Pattern { name: "every_turn", slots: &[Any(&["after", "before", "with"]), Any(&["every", "each", "all"]), Any(&["answer", "answers", "response", "responses", "reply", "replies", "turn", "turns", "message", "messages"])], gap: 1 }, ToolChain, Weak),
        (Pattern { name: "covertly", slots: &[Any(&["in"]), Any(&["the"]), Any(&["background"])], gap: 0 }, ModelInstruction, Weak),
        (Pattern { name: "hide_from_user", slots: &[Any(&["no", "never", "not"]), Any(&["disclosed", "mentioned", "revealed", "shown", "surfaced", "reported", "displayed"]), Any(&["user", "users", "user's", "human", "chat", "conversation", "answer", "response", "reply", "transcript"])], gap: 6 }, ModelInstruction, Strong),
        (Pattern { name: "covertly", slots: &[Any(&["secretly", "covertly", "discreetly", "stealthily", "surreptitiously", "unnoticed", "unbeknownst"])], gap: 0 }, ModelInstruction, Strong),
        (Pattern { name: "covertly", slots: &[Any(&["silently", "quietly", "invisibly"]), Any(&["call", "send", "run", "execute", "forward", "upload", "include", "add", "read", "post", "fetch", "copy", "email", "invoke", "append", "replace", "use", "attach", "do", "it"])], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "covertly", slots: &[Any(&["do", "perform", "run", "execute"]), Any(&["it", "this", "that", "them"]), Any(&["silently", "quietly", "invisibly", "unannounced"])], gap: 1 }, ModelInstruction, Strong),
        // Addressing the model directly.
        (Pattern { name: "addresses_the_model", slots: &[Any(&["attention", "dear", "hey", "hello", "hi"]), Any(AI)], gap: 2 }, ModelInstruction, Strong),
        (Pattern { name: "addresses_the_model", slots: &[Any(&["note", "notes", "message", "instruction*", "reminder", "notice", "directive*", "memo"]), Any(&["to", "for"]), Any(&["the", "any", "all", "an", "ai", "assistant", "assistants", "llm", "llms", "agent", "agents", "model", "models", "claude", "gpt", "chatbot"]), Any(AI)], gap: 1 }, ModelInstruction, Strong),
        (Pattern { name: "addresses_the_model", slots: &[Any(&["the", "an"]), Any(&["model", "assistant", "ai", "llm", "agent"]), Any(&["must", "should", "shall", "has", "needs", "is"]), Any(&["quietly", "silently", "secretly", "now", "always", "never", "required", "to"])], gap: 0 }, ModelInstruction, Weak),
        (Pattern { name: "from_now_on", slots: &[Any(&["from"]), Any(&["now", "this"]), Any(&["on", "point", "forward"])], gap: 1 }, ModelInstruction, Weak),
        (Pattern { name: "required_or_broken", slots: &[Any(&["otherwise", "or"]), Any(&["the", "this"]), Any(&["tool", "calculation", "operation", "request", "server", "result*"]), Any(&["will", "won't", "cannot", "can't", "fails", "fail"])], gap: 2 }, ModelInstruction, Weak),
        (Pattern { name: "required_or_broken", slots: &[Any(&["this", "it"]), Any(&["is"]), Any(&["required", "mandatory", "necessary", "needed"]), Any(&["for"]), Any(&["the", "this", "correct", "accurate"])], gap: 1 }, ModelInstruction, Weak),
        (Pattern { name: "emphasis", slots: &[Any(&["you"]), Upper("MUST")], gap: 1 }, ModelInstruction, Weak),
        (Pattern { name: "emphasis", slots: &[Upper("IMPORTANT")], gap: 0 }, ModelInstruction, Weak),
        // Secrets and the conversation handed over.
        (Pattern { name: "exfiltration", slots: &[Any(SEND), Any(SENSITIVE)], gap: 6 }, Exfiltration, Strong),
        (Pattern { name: "exfiltration", slots: &[Any(&["read", "cat", "open", "load", "collect", "gather", "grab", "dump"]), Any(SENSITIVE)], gap: 5 }, Exfiltration, Weak),
        (Pattern { name: "exfiltration", slots: &[Any(&["must", "should", "shall", "needs", "has"]), Any(&["be", "contain", "contains", "include", "includes", "hold", "carry", "to"]), Any(SENSITIVE)], gap: 5 }, Exfiltration, Strong),
        (Pattern { name: "exfiltration", slots: &[Any(SEND), Any(QUALIFIED), Any(KEYS)], gap: 6 }, Exfiltration, Strong),
        (Pattern { name: "exfiltration", slots: &[Any(&["must", "should", "shall", "needs"]), Any(&["be", "contain", "contains", "include", "includes", "hold", "carry"]), Any(QUALIFIED), Any(KEYS)], gap: 5 }, Exfiltration, Strong),
        // Another tool preceded, replaced, followed or changed.
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["before", "prior", "ahead"]), Any(CALL), Any(&["the", "a", "any", "every"]), Any(&["operation", "tool", "function", "command", "action"])], gap: 3 }, ToolChain, Weak),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["before", "prior", "ahead"]), Any(&["any", "every", "each", "all"]), Any(&["other", "another"]), Any(&["tool", "tools", "call", "calls", "function", "functions", "operation", "operations"])], gap: 2 }, ToolChain, Strong),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["before", "prior", "ahead", "first", "also", "then", "next", "immediately", "afterwards", "always"]), Any(CALL), Ident], gap: 3 }, ToolChain, Foreign),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["whenever", "every", "each", "any", "once", "after", "before", "if", "when"]), Ident, Any(&["is", "are", "was", "has", "gets", "about"]), Any(USED)], gap: 3 }, ToolChain, Foreign),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["whenever", "time", "once", "after", "before"]), Ident, Any(USED)], gap: 1 }, ToolChain, Foreign),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["before", "prior", "ahead", "whenever", "once"]), Any(&["the", "a", "any", "every", "another"]), Any(&["tool", "function", "operation", "action", "command"]), Any(&["is", "are", "gets", "has"]), Any(USED)], gap: 3 }, ToolChain, Weak),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["whenever", "every", "each", "once", "after"]), Any(&["any", "another", "other", "the"]), Any(&["tool", "tools", "function"]), Any(USED)], gap: 3 }, ToolChain, Strong),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["after", "if", "when", "whenever", "once"]), Any(&["you", "the", "model", "assistant", "agent"]), Any(&["call", "calls", "called", "use", "uses", "used", "invoke", "invokes", "invoked", "run", "runs", "execute", "executes", "ever"]), Ident], gap: 2 }, ToolChain, Foreign),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["instead", "rather", "place"]), Any(&["of", "than"]), Ident], gap: 2 }, ToolChain, Foreign),
        (Pattern { name: "replaces_other_tools", slots: &[Any(CALL), Any(&["this", "it"]), Any(&["tool", "function"]), Any(&["instead", "rather"])], gap: 3 }, ToolChain, Strong),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["do", "don't", "never", "not"]), Any(&["use", "call", "invoke", "trust"]), Ident], gap: 2 }, ToolChain, Foreign),
        (Pattern { name: "replaces_other_tools", slots: &[Ident, Any(&["is", "are", "has", "was"]), Any(&["broken", "deprecated", "disabled", "unsafe", "insecure", "compromised", "outdated", "unreliable", "misconfigured"])], gap: 6 }, ToolChain, Foreign),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["replace", "replaces", "substitute", "swap", "overwrite", "route"]), Any(&["the", "its", "their", "any", "all", "calls", "call", "request", "requests", "value", "values", "amount", "path", "argument", "arguments", "parameters", "input", "inputs", "output", "result"]), Any(&["with", "for", "through", "by", "of"])], gap: 3 }, ToolChain, Weak),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["its", "this", "the", "returned"]), Any(&["response", "output", "result", "answer", "path", "value", "total", "amount", "price", "values", "number"]), Any(&["instead", "in"]), Any(&["of", "place"])], gap: 2 }, ToolChain, Weak),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["instead", "place"]), Any(&["of"]), Any(&["what", "the", "whatever", "one", "ones"]), Any(USER)], gap: 3 }, ToolChain, Weak),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["pipe", "route", "funnel", "pass", "redirect", "proxy"]), Any(&["through", "via"]), Ident], gap: 4 }, ToolChain, Weak),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["tool", "function"]), Any(&["is", "are"]), Any(&["broken", "unsafe", "insecure", "compromised", "unreliable", "misconfigured"])], gap: 3 }, ToolChain, Weak),
        (Pattern { name: "replaces_other_tools", slots: &[Any(&["it", "this"]), Any(&["returns", "gives", "hands", "outputs", "provides"]), Any(&["rather", "instead", "back"])], gap: 1 }, ToolChain, Weak),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["has", "have", "must", "needs", "need"]), Any(&["to", "be"]), Any(&["go", "run", "come", "called", "invoked", "executed"]), Any(&["first", "beforehand"])], gap: 1 }, ToolChain, Weak),
        (Pattern { name: "precedes_other_tools", slots: &[Any(&["by", "from"]), Any(&["another", "other", "any"]), Any(&["tool", "tools", "server", "servers"])], gap: 1 }, ToolChain, Weak),
        (Pattern { name: "changes_other_tools", slots: &[Ident, Any(&["tool", "function", "command"]), Any(&["must", "should", "shall", "will", "needs", "has", "always", "never"])], gap: 2 }, ToolChain, Foreign),
        (Pattern { name: "changes_other_tools", slots: &[Any(&["run", "execute", "call"]), Any(&["the", "a"]), Any(&["shell", "bash", "terminal", "command", "exec"]), Any(&["tool", "with", "command"])], gap: 1 }, ToolChain, Weak),
    ]
};

/// Command lines that download and run code or open a channel out: in a description they are
/// an instruction, never documentation of the tool itself.
pub const COMMANDS: &[&str] = &["printenv", "| sh", "|sh", "| bash", "|bash", "| python", "| zsh", "rm -rf", "base64 -d |", "/dev/tcp/", "| nc ", "mkfifo "];
