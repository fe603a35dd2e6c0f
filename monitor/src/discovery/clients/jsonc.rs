//! Reading client config files into one value type: JSON, JSONC (VS Code, Zed and opencode
//! settings carry `//` and `/* */` comments and trailing commas), YAML (Goose, Continue) and TOML
//! (Codex) all become a `serde_json::Value`, so one entry parser serves every client.
use std::path::Path;

use serde_json::Value;

/// The file formats client configs are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// JSON, with JSONC comments and trailing commas tolerated.
    Json,
    Yaml,
    Toml,
}

/// Why a config file that exists could not be read (logged, the file is skipped).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not valid JSON/JSONC: {1}")]
    Json(String, serde_json::Error),
    #[error("{0}: not valid YAML: {1}")]
    Yaml(String, serde_yaml::Error),
    #[error("{0}: not valid TOML: {1}")]
    Toml(String, toml::de::Error),
}

/// Ok(None): the file does not exist (the common case: most clients are not installed).
pub fn read(path: &Path, syntax: Syntax) -> Result<Option<Value>, ReadError> {
    let p = || path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
        Err(e) => return Err(ReadError::Io(p(), e)),
    };
    parse(&text, syntax).map(Some).map_err(|e| match e {
        ParseError::Json(e) => ReadError::Json(p(), e),
        ParseError::Yaml(e) => ReadError::Yaml(p(), e),
        ParseError::Toml(e) => ReadError::Toml(p(), e),
    })
}

pub enum ParseError {
    Json(serde_json::Error),
    Yaml(serde_yaml::Error),
    Toml(toml::de::Error),
}

pub fn parse(text: &str, syntax: Syntax) -> Result<Value, ParseError> {
    match syntax {
        Syntax::Json => serde_json::from_str(text).or_else(|_| serde_json::from_str(&strip_jsonc(text))).map_err(ParseError::Json),
        // An empty YAML file is null, not an error.
        Syntax::Yaml => serde_yaml::from_str::<Option<Value>>(text).map(Option::unwrap_or_default).map_err(ParseError::Yaml),
        Syntax::Toml => toml::from_str(text).map_err(ParseError::Toml),
    }
}

/// JSONC → JSON: drops `//` and `/* */` comments outside strings and trailing commas before `}`/`]`.
pub fn strip_jsonc(s: &str) -> String {
    let (mut out, mut in_str, mut chars) = (String::with_capacity(s.len()), false, s.chars().peekable());
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for n in chars.by_ref() {
                if n == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            let mut prev = ' ';
            for n in chars.by_ref() {
                if prev == '*' && n == '/' {
                    break;
                }
                prev = n;
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    let b: Vec<char> = out.chars().collect();
    let mut cleaned = String::with_capacity(out.len());
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == '\\' && i + 1 < b.len() {
                cleaned.push(c);
                cleaned.push(b[i + 1]);
                i += 2;
                continue;
            }
            in_str = c != '"';
        } else if c == '"' {
            in_str = true;
        } else if c == ',' && b[i + 1..].iter().find(|c| !c.is_whitespace()).is_some_and(|n| *n == '}' || *n == ']') {
            i += 1;
            continue;
        }
        cleaned.push(c);
        i += 1;
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let v: Value = serde_json::from_str(&strip_jsonc("{\"a\": \"x//y, }\", /* block\n */ // c\n \"b\": [1,2,],}")).unwrap();
        assert_eq!(v["a"], "x//y, }");
        assert_eq!(v["b"][1], 2);
    }

    #[test]
    fn yaml_and_toml_become_json_values() {
        let Ok(y) = parse("extensions:\n  a:\n    cmd: npx\n    args: [-y, x]\n", Syntax::Yaml) else { panic!() };
        assert_eq!(y["extensions"]["a"]["args"][1], "x");
        let Ok(t) = parse("[mcp_servers.docs]\ncommand = \"npx\"\nargs = [\"-y\", \"d\"]\n", Syntax::Toml) else { panic!() };
        assert_eq!(t["mcp_servers"]["docs"]["command"], "npx");
        assert!(matches!(parse("", Syntax::Yaml), Ok(Value::Null)));
        assert!(parse("[broken", Syntax::Toml).is_err());
    }
}
