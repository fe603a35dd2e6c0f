//! Output templates: `"{proc.exe} read {file.path} during {mcp.tool}"`; fields are checked at load.
use super::fields::{kind_of, Ctx};

#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Lit(String),
    Field(&'static str),
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or_else(|| format!("output: unclosed '{{' in {s:?}"))? + open;
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let name = &rest[open + 1..close];
            let (f, _) = kind_of(name).ok_or_else(|| format!("output: unknown field {{{name}}}"))?;
            parts.push(Part::Field(f));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The fields the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(*f),
            Part::Lit(_) => None,
        })
    }

    pub fn render(&self, ctx: &Ctx) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.clone(),
                Part::Field(f) => ctx.get(f).map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            })
            .collect()
    }
}
