//! Runners: programs that fetch or locate a server and start it (`npx`, `bunx`, `uvx`,
//! `pipx run`, `docker run`). A launch through one is one server whose tree starts at the runner
//! (the kernel follows its children; an exec below a tracked process is never a new candidate),
//! so discovery needs two things from them:
//! - what they are running (the package, or the image), to name a sniffed server after it and
//!   to say in `found` what a configured one runs;
//! - how a running one reads in /proc, where it may have re-exec'd itself: `uvx` (uv 0.13) execs
//!   `uv tool uvx ARGS` in the same pid at once, so a server found at start-up shows that.
//!
//! What each one does, from `strace -f -e trace=execve,clone,vfork`: `uvx` re-execs as
//! `uv tool uvx`, then forks a child that execs the tool's entry point; `pipx run` execs the app
//! in its own pid; `bunx` vforks a child that execs the package's bin script; `docker run` asks
//! the engine to start the container, whose processes are children of the engine's shim, not of
//! the CLI: `daemon/containers.rs` joins them to the CLI's server when handshake discovery finds
//! the container's first process.
use serde::Serialize;

use super::matching::base;

/// What a runner was asked to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunnerLaunch {
    /// The runner as the client names it: `npx`, `bunx`, `uvx`, `pipx`, `docker`, `podman`.
    pub runner: &'static str,
    /// The package (`@scope/name`, `mcp-server-time`, a path given to `--from`/`--spec` is not
    /// it: the tool name is) or, for a container runtime, the image.
    pub target: String,
}

/// The script (or module) an interpreter's command line runs: its first operand, past the
/// `run` subcommand of `uv`, `deno` and `bun` and past `uv`'s options that take a value. The
/// MCP quickstart's config runs `uv --directory /srv/weather run weather.py`; taken as the first
/// word that is not an option, every `uv run` and `deno run` server was the program `run`,
/// and all of them shared one tool pin.
pub fn interpreted_script(argv: &[String]) -> Option<&str> {
    const UV_VALUED: &[&str] = &["--directory", "--project", "--python", "-p", "--with", "--with-editable", "--with-requirements", "--config-file", "--cache-dir", "--env-file", "--index", "--default-index", "--index-url", "--extra-index-url", "--extra", "--group", "--package"];
    let prog = base(argv.first()?);
    let subcommand = matches!(prog, "uv" | "deno" | "bun");
    let valued: &[&str] = if prog == "uv" { UV_VALUED } else { &[] };
    let mut args = argv[1..].iter().map(String::as_str);
    let mut ran = false;
    while let Some(a) = args.next() {
        if valued.contains(&a) {
            args.next();
        } else if a.starts_with('-') {
            continue;
        } else if subcommand && !ran && a == "run" {
            ran = true;
        } else {
            return Some(a);
        }
    }
    None
}

/// What a script given to an interpreter is, by its path: the name a server launched from it is
/// known by, and its identity for tool-set pins. Most of the registry's servers start from an
/// entry point named `index.js` (`…/node_modules/@scope/server-x/dist/index.js`, how a client
/// config or an SDK agent runs an installed package with `node`), and a local server from
/// `server.py` or `build/index.js` in its project: named by file alone, every one of them was
/// "index.js", and two different servers shared one pin (a false "rug pull" alert for the
/// second). So:
/// - inside `node_modules`: its package, without the scope (as a runner's launch of it is
///   named: `npx -y @scope/server-x` is `server-x`);
/// - an entry point with a generic name (`index`, `main`, `server`, `app`, `cli`, `__main__`):
///   the directory it belongs to, past build-output directories (`/srv/weather/build/index.js`
///   is `weather`);
/// - else the file's name.
pub fn script_program(path: &str) -> String {
    if let Some((_, inside)) = path.rsplit_once("/node_modules/") {
        let mut parts = inside.split('/');
        let first = parts.next().unwrap_or_default();
        let pkg = if first.starts_with('@') { parts.next().unwrap_or_default() } else { first };
        if !pkg.is_empty() && pkg != ".bin" && parts.next().is_some() {
            return pkg.to_string();
        }
    }
    let file = base(path);
    let stem = file.split('.').next().unwrap_or_default();
    if matches!(stem, "index" | "main" | "server" | "app" | "cli" | "__main__") {
        let build = |d: &str| matches!(d, "dist" | "build" | "out" | "lib" | "src" | "bin" | "esm" | "cjs" | "js" | "");
        let mut dirs = path.rsplit('/').skip(1);
        if let Some(dir) = dirs.find(|d| !build(d)).filter(|d| *d != "." && *d != "..") {
            return dir.to_string();
        }
    }
    file.to_string()
}

/// One runner's command-line shape: the words before the target, and its flags that take a
/// value (so the value is not taken for the target).
struct Shape {
    runner: &'static str,
    /// The program (argv[0]'s base name) and the subcommand words that follow it.
    words: &'static [&'static str],
    valued: &'static [&'static str],
}

const SHAPES: &[Shape] = &[
    Shape { runner: "npx", words: &["npx"], valued: &["-p", "--package", "-c", "--call", "--cache", "--registry", "--userconfig"] },
    Shape { runner: "npx", words: &["npm", "exec"], valued: &["-p", "--package", "-c", "--call", "--cache", "--registry", "--userconfig"] },
    Shape { runner: "bunx", words: &["bunx"], valued: &["-p", "--package"] },
    Shape { runner: "bunx", words: &["bun", "x"], valued: &["-p", "--package"] },
    Shape { runner: "uvx", words: &["uvx"], valued: UV_VALUED },
    Shape { runner: "uvx", words: &["uv", "tool", "uvx"], valued: UV_VALUED },
    Shape { runner: "uvx", words: &["uv", "tool", "run"], valued: UV_VALUED },
    Shape { runner: "pipx", words: &["pipx", "run"], valued: &["--spec", "--python", "--pip-args", "--index-url", "-i", "--backend"] },
    Shape { runner: "docker", words: &["docker", "run"], valued: DOCKER_VALUED },
    Shape { runner: "docker", words: &["docker", "container", "run"], valued: DOCKER_VALUED },
    Shape { runner: "podman", words: &["podman", "run"], valued: DOCKER_VALUED },
];

const UV_VALUED: &[&str] = &[
    "--from", "--with", "--with-editable", "--with-requirements", "-w", "-p", "--python", "-i", "--index", "--index-url",
    "--default-index", "--extra-index-url", "-f", "--find-links", "--cache-dir", "--directory", "--project", "--config-file",
    "-C", "--config-setting", "-P", "--upgrade-package", "--refresh-package", "--reinstall-package", "--exclude-newer",
    "--index-strategy", "--keyring-provider", "--resolution", "--prerelease", "--link-mode", "--python-preference",
    "--color", "--env-file", "--constraints", "-c", "--overrides", "--build-constraints", "-b",
];

/// `docker run` flags that take a value when not written `--flag=value` (docker's own list, the
/// ones MCP configs use and every other single-dash short flag with a value).
const DOCKER_VALUED: &[&str] = &[
    "-e", "--env", "--env-file", "-v", "--volume", "--mount", "--name", "--network", "--net", "-p", "--publish", "-u",
    "--user", "-w", "--workdir", "--entrypoint", "-l", "--label", "--label-file", "--platform", "--pull", "--add-host",
    "--cap-add", "--cap-drop", "--cpus", "-m", "--memory", "--security-opt", "--tmpfs", "--device", "--ulimit",
    "--hostname", "-h", "--dns", "--ipc", "--pid", "--userns", "--restart", "--runtime", "--log-driver", "--log-opt",
    "--cidfile", "--group-add", "--shm-size", "--stop-signal", "--stop-timeout", "--gpus", "--init-path", "--expose",
    "--link", "--volumes-from", "--cgroupns", "--cgroup-parent", "--ip", "--ip6", "--mac-address", "--health-cmd",
    "--attach", "-a", "--detach-keys", "--uts", "--isolation", "--annotation",
];

/// What `argv` (as exec'd, or as /proc shows it) asks a runner to run; None when it is not a
/// runner's launch or names no target (`npx --help`).
pub fn launch(argv: &[String]) -> Option<RunnerLaunch> {
    let first = base(argv.first()?);
    SHAPES.iter().find_map(|s| {
        let (prog, sub) = s.words.split_first()?;
        if first != *prog || argv.len() < s.words.len() || argv[1..s.words.len()].iter().zip(sub).any(|(a, w)| a != w) {
            return None;
        }
        let target = first_operand(&argv[s.words.len()..], s.valued)?;
        Some(RunnerLaunch { runner: s.runner, target: target.to_string() })
    })
}

/// The first word that is neither a flag nor a flag's value.
fn first_operand<'a>(args: &'a [String], valued: &[&str]) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return it.next().map(String::as_str);
        }
        if a.starts_with('-') {
            if !a.contains('=') && valued.contains(&a.as_str()) {
                it.next();
            }
            continue;
        }
        return Some(a);
    }
    None
}

/// /proc's view of a running runner, read back as the command a client configured: uvx has
/// re-exec'd itself as `uv tool uvx ARGS` (same pid) by the time a start-up scan looks.
pub fn as_configured(argv: &[String]) -> Option<Vec<String>> {
    let rest = match argv {
        [uv, tool, uvx, rest @ ..] if base(uv) == "uv" && tool == "tool" && uvx == "uvx" => rest,
        _ => return None,
    };
    Some(std::iter::once("uvx".to_string()).chain(rest.iter().cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn target(s: &[&str]) -> Option<(&'static str, String)> {
        launch(&v(s)).map(|l| (l.runner, l.target))
    }

    #[test]
    fn the_target_of_each_runner_is_found_past_its_flags() {
        let t = |r: &'static str, x: &str| Some((r, x.to_string()));
        assert_eq!(target(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"]), t("npx", "@modelcontextprotocol/server-filesystem"));
        assert_eq!(target(&["/usr/bin/npx", "--package", "x", "server-y"]), t("npx", "server-y"));
        assert_eq!(target(&["bunx", "@scope/srv@1.2", "--port", "1"]), t("bunx", "@scope/srv@1.2"));
        assert_eq!(target(&["/opt/bun/bin/bun", "x", "srv"]), t("bunx", "srv"));
        assert_eq!(target(&["uvx", "mcp-server-time", "--local-timezone", "Asia/Tokyo"]), t("uvx", "mcp-server-time"));
        assert_eq!(target(&["uvx", "--offline", "--from", "/w/mcp_server_time-1-py3-none-any.whl", "mcp-server-time"]), t("uvx", "mcp-server-time"));
        assert_eq!(target(&["/venv/bin/uv", "tool", "uvx", "--python=3.11", "mcp-server-git"]), t("uvx", "mcp-server-git"));
        assert_eq!(target(&["uv", "tool", "run", "-p", "3.12", "srv"]), t("uvx", "srv"));
        assert_eq!(target(&["pipx", "run", "--spec", "/w/x.whl", "mcp-server-time", "--local-timezone", "UTC"]), t("pipx", "mcp-server-time"));
        assert_eq!(target(&["docker", "run", "-i", "--rm", "-e", "TOKEN", "-v", "/a:/b", "mcp/time"]), t("docker", "mcp/time"));
        assert_eq!(target(&["docker", "run", "-i", "--rm", "--name=t", "ghcr.io/github/github-mcp-server", "stdio"]), t("docker", "ghcr.io/github/github-mcp-server"));
        assert_eq!(target(&["/usr/bin/podman", "run", "-i", "--rm", "--", "mcp/fetch"]), t("podman", "mcp/fetch"));
    }

    #[test]
    fn not_a_runner_launch() {
        assert_eq!(target(&["npx", "--help"]), None);
        assert_eq!(target(&["docker", "ps"]), None);
        assert_eq!(target(&["uv", "pip", "install", "x"]), None);
        assert_eq!(target(&["pipx", "install", "x"]), None);
        assert_eq!(target(&["python3", "-m", "mcp_server_time"]), None);
        assert_eq!(target(&[]), None);
    }

    #[test]
    fn a_running_uvx_reads_back_as_uvx() {
        assert_eq!(as_configured(&v(&["/venv/bin/uv", "tool", "uvx", "mcp-server-time", "--local-timezone", "UTC"])), Some(v(&["uvx", "mcp-server-time", "--local-timezone", "UTC"])));
        assert_eq!(as_configured(&v(&["uv", "tool", "run", "x"])), None);
        assert_eq!(as_configured(&v(&["uvx", "x"])), None);
    }
}

#[cfg(test)]
mod script_tests {
    use super::script_program;

    #[test]
    fn the_script_past_run_and_options_with_values() {
        let v = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let s = |c: &str| super::interpreted_script(&v(c)).map(str::to_string);
        assert_eq!(s("uv --directory /srv/weather run weather.py").as_deref(), Some("weather.py"));
        assert_eq!(s("/usr/bin/uv run --with mcp server.py").as_deref(), Some("server.py"));
        assert_eq!(s("deno run -A /srv/x/main.ts").as_deref(), Some("/srv/x/main.ts"));
        assert_eq!(s("bun run index.ts").as_deref(), Some("index.ts"));
        assert_eq!(s("python3 -u /opt/srv/weather.py --verbose").as_deref(), Some("/opt/srv/weather.py"));
        assert_eq!(s("python3 -m mcp_server_git").as_deref(), Some("mcp_server_git"));
        // `run` is a script's name for node and python.
        assert_eq!(s("node run").as_deref(), Some("run"));
        assert_eq!(s("uv run").as_deref(), None);
    }

    #[test]
    fn scripts_are_known_by_their_package_or_project() {
        assert_eq!(script_program("/home/u/.npm/lib/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"), "server-filesystem");
        assert_eq!(script_program("/w/node_modules/mcp-weather/build/index.js"), "mcp-weather");
        assert_eq!(script_program("/home/u/weather/build/index.js"), "weather");
        assert_eq!(script_program("/home/u/github-mcp/server.py"), "github-mcp");
        assert_eq!(script_program("/opt/srv/weather.py"), "weather.py");
        assert_eq!(script_program("weather.py"), "weather.py");
        // Not a package: a bin link, a scope alone, the directory itself.
        assert_eq!(script_program("/w/node_modules/.bin/server-x"), "server-x");
        assert_eq!(script_program("/w/node_modules/@scope"), "@scope");
        assert_eq!(script_program("/w/node_modules/pkg"), "pkg");
        // A generic name with nothing around it to go by.
        assert_eq!(script_program("index.js"), "index.js");
        assert_eq!(script_program("./dist/index.js"), "index.js");
        assert_eq!(script_program("/dist/index.js"), "index.js");
    }
}
