//! A validator for OCSF records, read from the schema's own source files (vendored, data only,
//! in tests/data/ocsf/VERSION: dictionary, categories, the class and its parents, profiles,
//! objects). It compiles a class the way the OCSF server does — `extends` chains, `$include`d
//! profiles, dictionary types under class and object overrides — and checks a record against it:
//! no unknown attribute at any depth, required attributes present, `at_least_one`/`just_one`
//! constraints, JSON types (through the dictionary's type hierarchy), arrays, enum ids, and
//! profile attributes only where `metadata.profiles` names the profile.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

pub struct Schema {
    root: PathBuf,
    dictionary: Map<String, Value>,
    /// Scalar type → its base (`ip_t` → `string_t`).
    types: Map<String, Value>,
    /// Object name → file.
    objects: BTreeMap<String, PathBuf>,
    pub version: String,
}

/// One compiled attribute: its dictionary definition under the class's or object's overrides.
#[derive(Debug, Clone)]
struct Attr {
    ty: String,
    array: bool,
    required: bool,
    /// The profile that brought it in (None: the class's or object's own): such an attribute
    /// exists only in records that name the profile in `metadata.profiles`.
    profile: Option<String>,
    enumeration: Option<Map<String, Value>>,
}

struct Compiled {
    attrs: BTreeMap<String, Attr>,
    constraints: Value,
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

impl Schema {
    pub fn load(root: &Path) -> Self {
        let dict = read(&root.join("dictionary.json"));
        let mut objects = BTreeMap::new();
        for e in std::fs::read_dir(root.join("objects")).unwrap().flatten() {
            let v = read(&e.path());
            objects.insert(v["name"].as_str().unwrap().to_string(), e.path());
        }
        Schema {
            root: root.into(),
            dictionary: dict["attributes"].as_object().unwrap().clone(),
            types: dict["types"]["attributes"].as_object().unwrap().clone(),
            objects,
            version: read(&root.join("version.json"))["version"].as_str().unwrap().into(),
        }
    }

    /// `class_uid` as the schema defines it: category uid × 1000 + class uid.
    pub fn class_uid(&self, class_file: &str) -> u64 {
        let chain = self.chain(self.root.join(class_file), true);
        // The category may come from a parent (`finding` names `findings`).
        let cat = chain.iter().rev().find_map(|c| c["category"].as_str()).unwrap();
        let cats = read(&self.root.join("categories.json"));
        cats["attributes"][cat]["uid"].as_u64().unwrap() * 1000 + chain.last().unwrap()["uid"].as_u64().unwrap()
    }

    /// The definition files of a class or object, base first (`extends` followed).
    fn chain(&self, first: PathBuf, class: bool) -> Vec<Value> {
        let mut out = vec![];
        let mut next = Some(first);
        while let Some(p) = next {
            let v = read(&p);
            // Classes extend classes in events/, objects extend objects (names overlap: `finding`).
            next = v["extends"].as_str().map(|base| {
                let found = if class { find_event(&self.root.join("events"), base) } else { self.objects.get(base).cloned() };
                found.unwrap_or_else(|| panic!("no definition of {base}"))
            });
            out.push(v);
        }
        out.reverse();
        out
    }

    fn compile(&self, file: PathBuf, class: bool) -> Compiled {
        let mut attrs: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut constraints = Value::Null;
        for def in self.chain(file, class) {
            let mut layer: Vec<(String, Value)> = vec![];
            let own = def["attributes"].as_object().cloned().unwrap_or_default();
            for inc in own.get("$include").and_then(Value::as_array).into_iter().flatten() {
                let p = read(&self.root.join(inc.as_str().unwrap()));
                let name = p["name"].clone();
                layer.extend(p["attributes"].as_object().unwrap().iter().map(|(k, v)| {
                    let mut v = v.clone();
                    v["profile"] = name.clone();
                    (k.clone(), v)
                }));
            }
            layer.extend(own.into_iter().filter(|(k, _)| k != "$include"));
            for (k, v) in layer {
                let e = attrs.entry(k).or_default();
                for (f, x) in v.as_object().cloned().unwrap_or_default() {
                    match (f.as_str(), e.get_mut(&f), x) {
                        // Enums merge (as the schema server deep-merges): a class adds its values to
                        // its parent's and the dictionary's (`0` Unknown, `99` Other).
                        ("enum", Some(Value::Object(have)), Value::Object(more)) => have.extend(more),
                        (_, _, x) => drop(e.insert(f, x)),
                    }
                }
            }
            if !def["constraints"].is_null() {
                constraints = def["constraints"].clone();
            }
        }
        let attrs = attrs
            .into_iter()
            .map(|(name, over)| {
                let d = self.dictionary.get(&name).unwrap_or_else(|| panic!("{name}: not in the dictionary"));
                let get = |f: &str| over.get(f).filter(|v| !v.is_null()).or_else(|| d.get(f)).cloned();
                let attr = Attr {
                    ty: get("type").and_then(|t| t.as_str().map(str::to_string)).unwrap(),
                    array: get("is_array").and_then(|v| v.as_bool()).unwrap_or(false),
                    required: over.get("requirement").and_then(Value::as_str) == Some("required"),
                    // A class may take a profile's attribute as its own (`"profile": null`).
                    profile: over.get("profile").and_then(Value::as_str).map(str::to_string),
                    enumeration: match (d.get("enum"), over.get("enum")) {
                        (Some(Value::Object(a)), Some(Value::Object(b))) => Some(a.clone().into_iter().chain(b.clone()).collect()),
                        (a, b) => b.or(a).and_then(|e| e.as_object().cloned()),
                    },
                };
                (name, attr)
            })
            .collect();
        Compiled { attrs, constraints }
    }

    /// Every violation of `class_file` (e.g. `events/findings/detection_finding.json`) in `v`.
    pub fn validate(&self, class_file: &str, v: &Value) -> Vec<String> {
        let mut errs = vec![];
        let profiles: Vec<String> = v["metadata"]["profiles"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_string)).collect();
        let mut class = self.compile(self.root.join(class_file), true);
        // Computed by the schema server per class, not enumerated in the sources: checked by
        // the caller against categories.json (`class_uid`).
        for k in ["class_uid", "category_uid", "type_uid"] {
            class.attrs.get_mut(k).unwrap().enumeration = None;
        }
        self.check_object(&class, v, "$", &profiles, &mut errs);
        errs
    }

    fn check_object(&self, c: &Compiled, v: &Value, at: &str, profiles: &[String], errs: &mut Vec<String>) {
        let Some(o) = v.as_object() else {
            errs.push(format!("{at}: not an object"));
            return;
        };
        let active = |a: &Attr| a.profile.as_ref().is_none_or(|p| profiles.contains(p));
        for (name, a) in c.attrs.iter().filter(|(_, a)| active(a)) {
            if a.required && o.get(name).is_none_or(Value::is_null) {
                errs.push(format!("{at}.{name}: required"));
            }
        }
        for (rule, one) in [("at_least_one", false), ("just_one", true)] {
            if let Some(names) = c.constraints[rule].as_array() {
                let n = names.iter().filter(|k| o.get(k.as_str().unwrap()).is_some_and(|x| !x.is_null())).count();
                if n == 0 || (one && n != 1) {
                    errs.push(format!("{at}: {rule} of {names:?}"));
                }
            }
        }
        for (k, x) in o {
            let Some(a) = c.attrs.get(k).filter(|a| active(a)) else {
                errs.push(format!("{at}.{k}: not an attribute of this object"));
                continue;
            };
            let here = format!("{at}.{k}");
            match (a.array, x) {
                (true, Value::Array(items)) => items.iter().enumerate().for_each(|(i, it)| self.check_value(a, it, &format!("{here}[{i}]"), profiles, errs)),
                (true, _) => errs.push(format!("{here}: not an array")),
                (false, _) => self.check_value(a, x, &here, profiles, errs),
            }
        }
    }

    /// The scalar base of a type (`timestamp_t` → `long_t`), or None for an object type.
    fn base(&self, ty: &str) -> Option<String> {
        let mut t = ty.to_string();
        loop {
            let d = self.types.get(&t)?;
            match d["type"].as_str() {
                Some(b) => t = b.to_string(),
                None => return Some(t),
            }
        }
    }

    fn check_value(&self, a: &Attr, x: &Value, at: &str, profiles: &[String], errs: &mut Vec<String>) {
        match self.base(&a.ty).as_deref() {
            Some("string_t") if !x.is_string() => errs.push(format!("{at}: {} wants a string, got {x}", a.ty)),
            Some("integer_t" | "long_t") if !(x.is_i64() || x.is_u64()) => errs.push(format!("{at}: {} wants an integer, got {x}", a.ty)),
            Some("float_t") if !x.is_number() => errs.push(format!("{at}: {} wants a number, got {x}", a.ty)),
            Some("boolean_t") if !x.is_boolean() => errs.push(format!("{at}: {} wants a boolean, got {x}", a.ty)),
            Some(_) => {
                if let (Some(e), Some(n)) = (&a.enumeration, x.as_i64()) {
                    if !e.contains_key(&n.to_string()) {
                        errs.push(format!("{at}: {n} is not one of {:?}", e.keys().collect::<Vec<_>>()));
                    }
                }
                if a.ty == "port_t" && !x.as_u64().is_some_and(|p| p <= 65535) {
                    errs.push(format!("{at}: not a port: {x}"));
                }
            }
            // `object` is the open object (unmapped and the like): any JSON object.
            None if a.ty == "object" => {
                if !x.is_object() {
                    errs.push(format!("{at}: not an object"));
                }
            }
            None => match self.objects.get(&a.ty) {
                Some(p) => self.check_object(&self.compile(p.clone(), false), x, at, profiles, errs),
                None => errs.push(format!("{at}: unknown type {}", a.ty)),
            },
        }
    }
}

fn find_event(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_event(&p, name) {
                return Some(f);
            }
        } else if read(&p)["name"] == name {
            return Some(p);
        }
    }
    None
}
