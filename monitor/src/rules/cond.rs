//! Conditions: `all`/`any`/`not`/`macro` nodes and field tests, parsed with their YAML position
//! (errors name the line) and compiled against the lists, macros and home directories.
//!
//! ```yaml
//! condition:
//!   all:
//!     - file.path: {glob: ["~/.ssh/id_*", "@extra_keys"]}
//!     - not: {file.path: {suffix: .pub}}
//!     - macro: opened_for_read
//! ```
use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{de, Deserialize, Deserializer};

use super::{
    fields::{kind_of, Ctx, Kind, Val},
    glob::{Glob, GlobSet},
};

/// A condition as written.
#[derive(Clone, Debug, PartialEq)]
pub enum RawCond {
    All(Vec<RawCond>),
    Any(Vec<RawCond>),
    Not(Box<RawCond>),
    Macro(String),
    Test { field: &'static str, kind: Kind, op: &'static str, values: Vec<String> },
}

pub const OPS: &[&str] = &["equals", "in", "glob", "prefix", "suffix", "contains", "cidr", "gt", "lt", "exists"];

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    B(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

struct TestBody {
    op: &'static str,
    values: Vec<String>,
}

impl<'de> Deserialize<'de> for TestBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TestBody;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map with one operator ({})", OPS.join(", "))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<TestBody, A::Error> {
                let Some(op) = m.next_key::<String>()? else { return Err(de::Error::custom(self_expect())) };
                let op = *OPS.iter().find(|o| **o == op).ok_or_else(|| de::Error::custom(format!("unknown operator {op:?}; one of {}", OPS.join(", "))))?;
                let values = match m.next_value::<OneOrMany>()? {
                    OneOrMany::One(s) => vec![s.text()],
                    OneOrMany::Many(v) => v.into_iter().map(Scalar::text).collect(),
                };
                if m.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("one operator per test: use `all:` to combine"));
                }
                Ok(TestBody { op, values })
            }
        }
        fn self_expect() -> String {
            format!("an operator ({})", OPS.join(", "))
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawCond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawCond;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a condition: all, any, not, macro, or `<field>: {<operator>: <values>}`")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<RawCond, A::Error> {
                let Some(key) = m.next_key::<String>()? else { return Err(de::Error::custom("empty condition")) };
                let c = match key.as_str() {
                    "all" => RawCond::All(m.next_value()?),
                    "any" => RawCond::Any(m.next_value()?),
                    "not" => RawCond::Not(Box::new(m.next_value()?)),
                    "macro" => RawCond::Macro(m.next_value()?),
                    f => {
                        let (field, kind) = kind_of(f).ok_or_else(|| de::Error::custom(format!("unknown field {f:?} (docs/rules.md lists the fields)")))?;
                        let t: TestBody = m.next_value()?;
                        check_test(field, kind, t.op, &t.values).map_err(de::Error::custom)?;
                        RawCond::Test { field, kind, op: t.op, values: t.values }
                    }
                };
                if let Some(k) = m.next_key::<String>()? {
                    return Err(de::Error::custom(format!("one key per condition node (found {key:?} and {k:?}): use `all:` to combine")));
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks what can be checked before lists are expanded.
fn check_test(field: &str, kind: Kind, op: &str, values: &[String]) -> Result<(), String> {
    let fits = match op {
        "cidr" => kind == Kind::Ip,
        "gt" | "lt" => kind == Kind::Num,
        "glob" | "prefix" | "suffix" | "contains" => matches!(kind, Kind::Str | Kind::Path | Kind::List),
        _ => true,
    };
    if !fits {
        return Err(format!("operator {op} does not apply to {field} ({kind:?})"));
    }
    if values.is_empty() && op != "exists" {
        return Err(format!("{field}: {op} needs at least one value"));
    }
    for v in values.iter().filter(|v| !v.starts_with('@')) {
        match op {
            "cidr" => {
                Cidr::parse(v)?;
            }
            "gt" | "lt" => {
                v.parse::<i64>().map_err(|_| format!("{field}: {op} wants a number, got {v:?}"))?;
            }
            "glob" => {
                Glob::new(v, kind == Kind::Path)?;
            }
            "exists" if v != "true" && v != "false" => return Err(format!("{field}: exists wants true or false")),
            "equals" | "in" if kind == Kind::Bool && v != "true" && v != "false" => return Err(format!("{field} is true or false, not {v:?}")),
            "equals" | "in" if kind == Kind::Num && v.parse::<i64>().is_err() => return Err(format!("{field} is a number, not {v:?}")),
            "equals" | "in" if kind == Kind::Ip && v.parse::<IpAddr>().is_err() => return Err(format!("{field} is an IP address, not {v:?}")),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').map(|(a, p)| (a, Some(p))).unwrap_or((s, None));
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        // IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are what a v6 socket uses to reach a v4 host.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
            v4 => *v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn mask(net: &[u8], a: &[u8], prefix: u8) -> bool {
    let (full, rest) = ((prefix / 8) as usize, prefix % 8);
    net[..full] == a[..full] && (rest == 0 || (net[full] ^ a[full]) & (0xffu8 << (8 - rest)) == 0)
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    /// `at`: the field's slot in a context (`fields::index`).
    Test { field: &'static str, at: usize, m: Matcher },
}

#[derive(Clone, Debug)]
pub enum Matcher {
    /// Any of the strings, exactly.
    Eq(Vec<String>),
    Glob(GlobSet),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    Contains(Vec<String>),
    Cidr(Vec<Cidr>),
    Gt(i64),
    Lt(i64),
    Exists(bool),
}

/// What compiling needs: lists, macros, and the home directories `~/` stands for.
pub struct Env<'a> {
    pub lists: &'a BTreeMap<String, Vec<String>>,
    pub macros: &'a BTreeMap<String, RawCond>,
    pub homes: &'a [String],
}

impl Env<'_> {
    /// Expands `@list` references (lists may name other lists) and, for paths, `~/`.
    pub fn values(&self, vals: &[String], path: bool) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        self.expand(vals, &mut out, 0)?;
        if path {
            out = out
                .into_iter()
                .flat_map(|v| match v.strip_prefix("~/") {
                    Some(rest) => self.homes.iter().map(|h| format!("{}/{rest}", h.trim_end_matches('/'))).collect(),
                    None => vec![v],
                })
                .collect();
        }
        Ok(out)
    }

    fn expand(&self, vals: &[String], out: &mut Vec<String>, depth: usize) -> Result<(), String> {
        if depth > 8 {
            return Err("lists nest too deep (a cycle?)".into());
        }
        for v in vals {
            match v.strip_prefix('@') {
                Some(name) => {
                    let l = self.lists.get(name).ok_or_else(|| format!("unknown list @{name}"))?;
                    self.expand(l, out, depth + 1)?;
                }
                None => out.push(v.clone()),
            }
        }
        Ok(())
    }

    pub fn compile(&self, c: &RawCond, depth: usize) -> Result<Cond, String> {
        if depth > 16 {
            return Err("macros nest too deep (a cycle?)".into());
        }
        Ok(match c {
            RawCond::All(v) => Cond::All(cheap_first(v.iter().map(|c| self.compile(c, depth + 1)).collect::<Result<_, _>>()?)),
            RawCond::Any(v) => Cond::Any(cheap_first(v.iter().map(|c| self.compile(c, depth + 1)).collect::<Result<_, _>>()?)),
            RawCond::Not(c) => Cond::Not(Box::new(self.compile(c, depth + 1)?)),
            RawCond::Macro(name) => self.compile(self.macros.get(name).ok_or_else(|| format!("unknown macro {name:?}"))?, depth + 1)?,
            RawCond::Test { field, kind, op, values } => {
                let path = *kind == Kind::Path;
                let vals = self.values(values, path)?;
                check_test(field, *kind, op, &vals)?;
                let has_home = values.iter().any(|v| v.starts_with("~/"));
                let m = match *op {
                    // `~/` expands to globs (homes include /home/*), so these become globs then.
                    "equals" | "in" if has_home => Matcher::Glob(globs(&vals, path)?),
                    "prefix" if has_home => Matcher::Glob(globs(&vals.iter().map(|v| format!("{v}**")).collect::<Vec<_>>(), path)?),
                    "equals" | "in" => Matcher::Eq(vals),
                    "glob" => Matcher::Glob(globs(&vals, path)?),
                    "prefix" => Matcher::Prefix(vals),
                    "suffix" => Matcher::Suffix(vals),
                    "contains" => Matcher::Contains(vals),
                    "cidr" => Matcher::Cidr(vals.iter().map(|v| Cidr::parse(v)).collect::<Result<_, _>>()?),
                    "gt" => Matcher::Gt(vals[0].parse().map_err(|_| format!("{field}: gt wants a number"))?),
                    "lt" => Matcher::Lt(vals[0].parse().map_err(|_| format!("{field}: lt wants a number"))?),
                    "exists" => Matcher::Exists(vals.first().map(|v| v == "true").unwrap_or(true)),
                    other => return Err(format!("unknown operator {other}")),
                };
                Cond::Test { field, at: super::fields::index(field).ok_or_else(|| format!("unknown field {field}"))?, m }
            }
        })
    }
}

/// `all` and `any` test their cheap parts first: tests have no side effects, so the order
/// changes no verdict, and most events fail a flag or a kind before any glob list is tried
/// (a rule is often written glob first).
fn cheap_first(mut v: Vec<Cond>) -> Vec<Cond> {
    v.sort_by_key(Cond::cost);
    v
}

fn globs(vals: &[String], path: bool) -> Result<GlobSet, String> {
    Ok(GlobSet::new(vals.iter().map(|v| Glob::new(v, path)).collect::<Result<_, _>>()?))
}

impl Cond {
    /// Adds the fields this condition reads to `out`.
    pub fn fields(&self, out: &mut super::fields::FieldSet) {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| c.fields(out)),
            Cond::Not(c) => c.fields(out),
            Cond::Test { field, .. } => out.insert(field),
        }
    }

    /// A rough price of evaluating this node, to order `all`/`any` by.
    fn cost(&self) -> usize {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().map(Cond::cost).sum(),
            Cond::Not(c) => c.cost(),
            Cond::Test { m, .. } => match m {
                Matcher::Exists(_) | Matcher::Gt(_) | Matcher::Lt(_) => 1,
                Matcher::Cidr(v) => 1 + v.len(),
                Matcher::Eq(v) | Matcher::Prefix(v) | Matcher::Suffix(v) => 2 + v.len(),
                Matcher::Contains(v) => 2 + 4 * v.len(),
                Matcher::Glob(g) => 8 + 8 * g.len(),
            },
        }
    }

    pub fn eval(&self, ctx: &Ctx) -> bool {
        match self {
            Cond::All(v) => v.iter().all(|c| c.eval(ctx)),
            Cond::Any(v) => v.iter().any(|c| c.eval(ctx)),
            Cond::Not(c) => !c.eval(ctx),
            Cond::Test { at, m, .. } => test(ctx.get_at(*at), m),
        }
    }
}

fn test(v: Option<&Val>, m: &Matcher) -> bool {
    let Some(v) = v else { return matches!(m, Matcher::Exists(false)) };
    let strs = |f: &dyn Fn(&str) -> bool| -> bool {
        match v {
            Val::Str(s) => f(s),
            Val::List(l) => l.iter().any(|s| f(s)),
            Val::Num(n) => f(&n.to_string()),
            Val::Bool(b) => f(if *b { "true" } else { "false" }),
            Val::Ip(a) => f(&a.to_string()),
            Val::Access(a) => a.iter().any(|w| f(w.as_str())),
        }
    };
    match m {
        Matcher::Exists(e) => *e,
        Matcher::Eq(vals) => match v {
            Val::Ip(a) => vals.iter().any(|x| x.parse::<IpAddr>().map(|x| x == *a).unwrap_or(false)),
            _ => strs(&|s| vals.iter().any(|x| x == s)),
        },
        Matcher::Glob(g) => strs(&|s| g.matches(s)),
        Matcher::Prefix(p) => strs(&|s| p.iter().any(|p| s.starts_with(p.as_str()))),
        Matcher::Suffix(p) => strs(&|s| p.iter().any(|p| s.ends_with(p.as_str()))),
        Matcher::Contains(p) => strs(&|s| p.iter().any(|p| s.contains(p.as_str()))),
        Matcher::Cidr(c) => matches!(v, Val::Ip(a) if c.iter().any(|c| c.contains(a))),
        Matcher::Gt(n) => matches!(v, Val::Num(x) if x > n),
        Matcher::Lt(n) => matches!(v, Val::Num(x) if x < n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opens_flags_match_as_their_list_of_words() {
        use crate::events::Accesses;
        for flags in [0, 0o1, 0o1101, 0o2002 | 0o2000000, 0o20200002, 0o10000000] {
            let words = Accesses::of(flags).iter().map(|a| crate::rules::Text::from(a.as_str())).collect();
            let (ours, list) = (Val::Access(Accesses::of(flags)), Val::List(words));
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            for m in [Matcher::Eq(s(&["read"])), Matcher::Eq(s(&["write", "append"])), Matcher::Contains(s(&["write"])), Matcher::Prefix(s(&["read_"])), Matcher::Suffix(s(&["file"])), Matcher::Exists(true), Matcher::Exists(false)] {
                assert_eq!(test(Some(&ours), &m), test(Some(&list), &m), "{flags:o} {m:?}");
            }
            assert_eq!(ours.to_string(), list.to_string());
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("169.254.0.0/16").unwrap();
        assert!(c.contains(&"169.254.169.254".parse().unwrap()) && !c.contains(&"169.255.0.1".parse().unwrap()));
        assert!(c.contains(&"::ffff:169.254.169.254".parse().unwrap()), "v4-mapped v6");
        let c6 = Cidr::parse("fd00:ec2::254").unwrap();
        assert_eq!(c6.prefix, 128);
        assert!(c6.contains(&"fd00:ec2::254".parse().unwrap()) && !c6.contains(&"fd00:ec2::255".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("nope").is_err());
        assert!(Cidr::parse("10.1.2.3/12").unwrap().contains(&"10.15.0.1".parse().unwrap()));
    }

    #[test]
    fn parse_errors_carry_the_line() {
        let e = serde_yaml::from_str::<RawCond>("all:\n  - file.path: {glob: x}\n  - file.pth: {glob: y}\n").unwrap_err();
        assert!(e.to_string().contains("unknown field \"file.pth\""), "{e}");
        assert_eq!(e.location().unwrap().line(), 3, "{e}");
        let e = serde_yaml::from_str::<RawCond>("net.port: {cidr: 10.0.0.0/8}").unwrap_err();
        assert!(e.to_string().contains("does not apply"), "{e}");
        let e = serde_yaml::from_str::<RawCond>("file.path: {glob: x, prefix: y}").unwrap_err();
        assert!(e.to_string().contains("one operator"), "{e}");
    }
}
