//! A field's text in a rule context. Most of an event's strings already live elsewhere for as
//! long as the event does: the executable in the process tree, the server's name in the
//! tracker, the resolved path in its cache, the kind and access words in the binary. A context
//! shares those instead of copying them: a copy per field per event was a quarter of the
//! context's cost on a busy server.
use std::{borrow::Borrow, fmt, ops::Deref, sync::Arc};

#[derive(Clone)]
pub enum Text {
    /// One of the daemon's own words (`open`, `idle`, `read`).
    Word(&'static str),
    /// Shared with where it is kept (tree, tracker, path cache).
    Shared(Arc<str>),
    /// The end of a shared text from a byte offset (a process's name in its executable).
    Tail(Arc<str>, usize),
    /// Made for this event (a joined command line, a call's arguments).
    Own(String),
}

impl Text {
    /// What follows the last `/` (all of it without one): shared when the text is.
    pub fn file_name(&self) -> Text {
        // A byte loop: `rfind` went through the pattern machinery to `memrchr`, which for a
        // path of a few dozen bytes cost more than the search (asked for every event).
        let at = self.bytes().rposition(|b| b == b'/').map_or(0, |i| i + 1);
        match self {
            Text::Word(s) => Text::Word(&s[at..]),
            Text::Shared(s) => Text::Tail(Arc::clone(s), at),
            Text::Tail(s, from) => Text::Tail(Arc::clone(s), from + at),
            Text::Own(s) => Text::Own(s[at..].to_string()),
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Word(s) => s,
            Text::Shared(s) => s,
            Text::Tail(s, at) => &s[*at..],
            Text::Own(s) => s,
        }
    }
}

/// `join` and lookups by `&str`: the text is its `str`, however it is held.
impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text::Word(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::Own(s)
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Text::Shared(s)
    }
}

impl From<&Arc<str>> for Text {
    fn from(s: &Arc<str>) -> Self {
        Text::Shared(Arc::clone(s))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Text;

    #[test]
    fn text_is_its_str_however_held() {
        let shared: Arc<str> = Arc::from("/usr/bin/node");
        let all = [Text::from("/usr/bin/node"), Text::from(shared.clone()), Text::from("/usr/bin/node".to_string())];
        for a in &all {
            assert_eq!(&**a, "/usr/bin/node");
            assert_eq!(a.to_string(), "/usr/bin/node");
            assert_eq!(format!("{a:?}"), "\"/usr/bin/node\"");
            assert!(all.iter().all(|b| a == b));
        }
        assert_ne!(Text::from("a"), Text::from("b"));
        assert_eq!([Text::from("a"), Text::from("b".to_string())].join(" "), "a b");
        for a in &all {
            let name = a.file_name();
            assert_eq!((&*name, &*name.file_name()), ("node", "node"));
        }
        assert_eq!(&*Text::from("node").file_name(), "node");
        assert_eq!(&*Text::from("/").file_name(), "");
        assert!(matches!(Text::from(shared.clone()).file_name(), Text::Tail(..)), "a shared text's name is shared too");
        assert_eq!(Arc::strong_count(&shared), 2, "shared, not copied");
    }
}
