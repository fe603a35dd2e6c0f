//! The user database: who has a home directory, for the client configs discovery reads and the
//! `~/` of rules.
use std::path::{Path, PathBuf};

/// A user from the user database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub home: PathBuf,
}

/// Users with a home directory, from /etc/passwd (`getent`-style file parsing). A home that
/// does not exist yet still counts (a first login, a home mounted later) unless the account
/// cannot log in at all (a system account with a `nologin`/`false` shell and no home).
pub fn users(passwd: &str) -> Vec<User> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid = f.get(2)?.parse().ok()?;
            let home = PathBuf::from(f.get(5)?);
            let shell = f.get(6).copied().unwrap_or("");
            let no_login = shell.ends_with("nologin") || shell.ends_with("/false");
            let real = home.is_absolute() && home != Path::new("/") && (home.is_dir() || !no_login);
            real.then_some(User { uid, home })
        })
        .collect()
}
