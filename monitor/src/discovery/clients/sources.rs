//! Where each MCP client keeps its servers on Linux, and in which format: the one table the reader
//! and the change poller both walk.
//!
//! | client | files (`~` = the user's home, `P` = each project) | key |
//! |---|---|---|
//! | claude-desktop | `~/.config/Claude/claude_desktop_config.json` | `mcpServers` |
//! | claude-code | user and local: `~/.claude.json` (`mcpServers`, `projects.*.mcpServers`); project: `P/.mcp.json`; managed: `/etc/claude-code/managed-mcp.json` | `mcpServers` |
//! | cursor | `~/.cursor/mcp.json`, `P/.cursor/mcp.json` | `mcpServers` |
//! | vscode, vscode-insiders | `~/.config/Code[ - Insiders]/User/mcp.json` (`servers`) and `settings.json` (`mcp.servers`), `P/.vscode/mcp.json` | `servers` |
//! | windsurf | `~/.codeium/windsurf/mcp_config.json` | `mcpServers` |
//! | codex | `~/.codex/config.toml`, `P/.codex/config.toml` (TOML) | `[mcp_servers.NAME]` |
//! | gemini-cli | `~/.gemini/settings.json`, `P/.gemini/settings.json`, `/etc/gemini-cli/settings.json` | `mcpServers` (`url` = SSE, `httpUrl` = HTTP) |
//! | zed | `~/.config/zed/settings.json`, `P/.zed/settings.json` (JSONC) | `context_servers` |
//! | cline, roo | VS Code-family extension storage `~/.config/HOST/User/globalStorage/…` (HOST: Code, Code - Insiders, Cursor, Windsurf, VSCodium); Roo also `P/.roo/mcp.json` | `mcpServers` |
//! | continue | `~/.continue/config.yaml` (`mcpServers` list), `~/.continue/config.json` (`experimental.modelContextProtocolServers`), `~/.continue/mcpServers/*` and `P/.continue/mcpServers/*` (YAML blocks or JSON) | `mcpServers` |
//! | goose | `~/.config/goose/config.yaml` (YAML) | `extensions` (`type: stdio`, `cmd`, `args`, `envs`) |
//! | amazon-q | `~/.aws/amazonq/mcp.json`, `P/.amazonq/mcp.json` | `mcpServers` |
//! | lm-studio | `~/.lmstudio/mcp.json` | `mcpServers` |
//! | opencode | `~/.config/opencode/opencode.json[c]`, `P/opencode.json[c]`, `P/.opencode/opencode.json[c]` | `mcp` (`type: local`, `command: [..]`, `environment`) |
use std::path::{Path, PathBuf};

use super::jsonc::Syntax;

/// One config file a client may have written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub client: &'static str,
    pub path: PathBuf,
    pub syntax: Syntax,
    /// Key paths holding server entries (`*`: every value of an object).
    pub keys: &'static [&'static [&'static str]],
    /// Transport of an untyped `url` in this client's format.
    pub url_means: &'static str,
}

const MCP_SERVERS: &[&[&str]] = &[&["mcpServers"]];

fn src(client: &'static str, path: PathBuf, syntax: Syntax, keys: &'static [&'static [&'static str]]) -> Source {
    Source { client, path, syntax, keys, url_means: "http" }
}

/// VS Code-family hosts whose extension storage Cline and Roo write to.
const EXTENSION_HOSTS: &[&str] = &["Code", "Code - Insiders", "Cursor", "Windsurf", "VSCodium"];

/// Config files that belong to one user (`home`), including the per-project files of `projects`.
pub fn user_sources(home: &Path, projects: &[PathBuf]) -> Vec<Source> {
    use Syntax::*;
    let h = |p: &str| home.join(p);
    let mut v = vec![
        src("claude-desktop", h(".config/Claude/claude_desktop_config.json"), Json, MCP_SERVERS),
        src("claude-code", h(".claude.json"), Json, &[&["mcpServers"], &["projects", "*", "mcpServers"]]),
        src("cursor", h(".cursor/mcp.json"), Json, MCP_SERVERS),
        src("vscode", h(".config/Code/User/mcp.json"), Json, &[&["servers"]]),
        src("vscode", h(".config/Code/User/settings.json"), Json, &[&["mcp", "servers"]]),
        src("vscode-insiders", h(".config/Code - Insiders/User/mcp.json"), Json, &[&["servers"]]),
        src("vscode-insiders", h(".config/Code - Insiders/User/settings.json"), Json, &[&["mcp", "servers"]]),
        src("windsurf", h(".codeium/windsurf/mcp_config.json"), Json, MCP_SERVERS),
        src("codex", h(".codex/config.toml"), Toml, &[&["mcp_servers"]]),
        Source { url_means: "sse", ..src("gemini-cli", h(".gemini/settings.json"), Json, MCP_SERVERS) },
        src("zed", h(".config/zed/settings.json"), Json, &[&["context_servers"]]),
        src("continue", h(".continue/config.yaml"), Yaml, MCP_SERVERS),
        src("continue", h(".continue/config.json"), Json, &[&["experimental", "modelContextProtocolServers"]]),
        src("goose", h(".config/goose/config.yaml"), Yaml, &[&["extensions"]]),
        src("amazon-q", h(".aws/amazonq/mcp.json"), Json, MCP_SERVERS),
        src("lm-studio", h(".lmstudio/mcp.json"), Json, MCP_SERVERS),
    ];
    for host in EXTENSION_HOSTS {
        let storage = home.join(".config").join(host).join("User/globalStorage");
        // Cline reads an untyped `url` as SSE.
        let cline = src("cline", storage.join("saoudrizwan.claude-dev/settings/cline_mcp_settings.json"), Json, MCP_SERVERS);
        v.push(Source { url_means: "sse", ..cline });
        v.push(src("roo", storage.join("rooveterinaryinc.roo-cline/settings/mcp_settings.json"), Json, MCP_SERVERS));
    }
    for f in ["opencode.json", "opencode.jsonc"] {
        v.push(src("opencode", h(".config/opencode").join(f), Json, OPENCODE));
    }
    v.extend(continue_blocks(&h(".continue/mcpServers")));
    for p in projects {
        v.extend([
            src("claude-code", p.join(".mcp.json"), Json, MCP_SERVERS),
            src("cursor", p.join(".cursor/mcp.json"), Json, MCP_SERVERS),
            src("vscode", p.join(".vscode/mcp.json"), Json, &[&["servers"]]),
            src("codex", p.join(".codex/config.toml"), Toml, &[&["mcp_servers"]]),
            Source { url_means: "sse", ..src("gemini-cli", p.join(".gemini/settings.json"), Json, MCP_SERVERS) },
            src("zed", p.join(".zed/settings.json"), Json, &[&["context_servers"]]),
            src("roo", p.join(".roo/mcp.json"), Json, MCP_SERVERS),
            src("amazon-q", p.join(".amazonq/mcp.json"), Json, MCP_SERVERS),
        ]);
        for f in ["opencode.json", "opencode.jsonc", ".opencode/opencode.json", ".opencode/opencode.jsonc"] {
            v.push(src("opencode", p.join(f), Json, OPENCODE));
        }
        v.extend(continue_blocks(&p.join(".continue/mcpServers")));
    }
    // The home directory is also a project (and Claude Code's projects may repeat): read each
    // file once.
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.path.clone()));
    v
}

/// opencode: `mcp.NAME`; its newer docs nest the map under `mcp.servers` (an entry named
/// `servers` with a launch of its own still reads as one entry, and its fields as none).
const OPENCODE: &[&[&str]] = &[&["mcp"], &["mcp", "servers"]];

/// Directories whose listing is part of the config (a new file there is a new server).
pub fn user_dirs(home: &Path, projects: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(home.join(".continue/mcpServers")).chain(projects.iter().map(|p| p.join(".continue/mcpServers"))).collect()
}

/// Continue's block files: one YAML (or a JSON copied from another client) per file.
pub(super) fn continue_blocks(dir: &Path) -> Vec<Source> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let syntax = match p.extension()?.to_str()? {
                "yaml" | "yml" => Syntax::Yaml,
                "json" => Syntax::Json,
                _ => return None,
            };
            Some(src("continue", p, syntax, MCP_SERVERS))
        })
        .collect()
}

/// Config files that hold servers for every user of the host, under `etc` (`/etc`).
pub fn system_sources(etc: &Path) -> Vec<Source> {
    vec![
        src("claude-code", etc.join("claude-code/managed-mcp.json"), Syntax::Json, MCP_SERVERS),
        Source { url_means: "sse", ..src("gemini-cli", etc.join("gemini-cli/settings.json"), Syntax::Json, MCP_SERVERS) },
    ]
}
