//! Containers: a server launched with `docker run -i IMAGE` (or podman) runs its processes under
//! the engine's shim, not below the CLI the client started. The CLI is tracked as the server (it
//! holds the client's stdio); the container's process is found by its handshake (its stdin and
//! stdout are the shim's pipes, and its first read is the initialize the CLI relayed), and this
//! module says which container it is in and what image that runs, so the daemon can join it to
//! the CLI's server instead of reporting a second one.
//!
//! Which container: the process's cgroup (`/proc/PID/cgroup`, as the daemon's cgroup namespace
//! sees it) ends in the container's id: `/docker/<id>` (cgroupfs driver), `docker-<id>.scope`
//! (systemd driver), `libpod-<id>.scope` (podman), `cri-containerd-<id>.scope`. What image: the
//! engine's own record of the container (`<docker root>/containers/<id>/config.v2.json`), written
//! at create, before the container's first process runs.
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where Docker keeps its state (`dockerd --data-root`), as Debian's package and Docker's own
/// installs have it.
pub const DOCKER_ROOT: &str = "/var/lib/docker";

/// A container a tracked process runs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `docker`, `podman` or `containerd`: whose cgroup naming matched.
    pub engine: &'static str,
    /// The full id (64 hex digits).
    pub id: String,
    /// The image as the CLI named it (`Config.Image`); None when the engine's record is not
    /// readable (podman, another data root).
    pub image: Option<String>,
    /// The container's name, without Docker's leading `/`.
    pub name: Option<String>,
    /// Host paths mounted into it (`-v`, `--mount`): what of the host it can reach. A path
    /// under none of these is the container's own (its image, its writable layer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// One mount of a host path (or named volume) into the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Where it is on the host.
    pub source: String,
    /// Where the container sees it.
    pub destination: String,
}

impl Container {
    /// Whether `path` (as the container's processes name it) is the container's own: under no
    /// mount of a host path. Without the engine's record nothing is known to be its own.
    pub fn owns(&self, path: &str) -> bool {
        self.image.is_some()
            && !self.volumes.iter().any(|v| {
                let d = v.destination.trim_end_matches('/');
                d.is_empty() || path == d || path.strip_prefix(d).is_some_and(|r| r.starts_with('/'))
            })
    }
}

/// The container id and engine the process's cgroup paths name, if any (cgroup v2 has one path;
/// v1 one per hierarchy, any of which names it).
pub fn id_from_cgroup<S: AsRef<str>>(paths: &[S]) -> Option<(&'static str, String)> {
    for path in paths {
        let segs: Vec<&str> = path.as_ref().split('/').filter(|s| !s.is_empty()).collect();
        for (i, seg) in segs.iter().enumerate().rev() {
            let s = seg.strip_suffix(".scope").unwrap_or(seg);
            let (engine, id) = if let Some(id) = s.strip_prefix("docker-") {
                ("docker", id)
            } else if let Some(id) = s.strip_prefix("libpod-") {
                ("podman", id)
            } else if let Some(id) = s.strip_prefix("cri-containerd-") {
                ("containerd", id)
            } else if i > 0 && segs[i - 1] == "docker" {
                ("docker", s)
            } else if i > 0 && segs[i - 1] == "libpod_parent" {
                ("podman", s)
            } else {
                continue;
            };
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some((engine, id.to_string()));
            }
        }
    }
    None
}

/// The container `pid` runs in, looked up in Docker's records under `docker_root`.
pub fn of_pid(pid: u32, docker_root: &Path) -> Option<Container> {
    let (engine, id) = id_from_cgroup(&crate::sys::procfs::cgroup_paths(pid))?;
    let (image, name, volumes) = if engine == "docker" { docker_record(docker_root, &id) } else { (None, None, vec![]) };
    Some(Container { engine, id, image, name, volumes })
}

/// The container whose first process the runc shim `argv` runs (`containerd-shim-runc-v2
/// -namespace moby -id ID …`), or runc itself while it starts it (`runc --root …/moby …
/// create … ID`): how a container is still known when its process has exited before /proc
/// could be read (a session shorter than the daemon's reaction), since they outlive it.
/// Docker's namespace is `moby`.
pub fn of_shim(argv: &[String], docker_root: &Path) -> Option<Container> {
    let exe = argv.first()?.rsplit('/').next()?;
    let arg = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1));
    let (id, docker) = if exe.starts_with("containerd-shim") {
        (arg("-id")?, arg("-namespace").is_some_and(|n| n == "moby"))
    } else if exe == "runc" {
        (argv.last()?, arg("--root").is_some_and(|r| r.trim_end_matches('/').ends_with("/moby")))
    } else {
        return None;
    };
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (image, name, volumes) = if docker { docker_record(docker_root, id) } else { (None, None, vec![]) };
    Some(Container { engine: if docker { "docker" } else { "containerd" }, id: id.clone(), image, name, volumes })
}

/// `Config.Image`, `Name` and `MountPoints` of a Docker container's `config.v2.json`.
fn docker_record(root: &Path, id: &str) -> (Option<String>, Option<String>, Vec<Volume>) {
    let path: PathBuf = root.join("containers").join(id).join("config.v2.json");
    let Some(v) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) else {
        tracing::debug!(path = %path.display(), "container record unreadable: image unknown");
        return (None, None, vec![]);
    };
    let image = v["Config"]["Image"].as_str().map(str::to_string);
    let name = v["Name"].as_str().map(|n| n.trim_start_matches('/').to_string());
    let mut volumes: Vec<Volume> = v["MountPoints"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|p| Some(Volume { source: p["Source"].as_str().unwrap_or_default().to_string(), destination: p["Destination"].as_str()?.to_string() }))
                .collect()
        })
        .unwrap_or_default();
    volumes.sort_by(|a, b| a.destination.cmp(&b.destination));
    (image, name, volumes)
}

/// Whether a runner's target (the image as the configured command line names it) is `image`
/// (as the engine recorded it): the same words, or the same but for an implied `:latest` or
/// Docker Hub's `docker.io/library/` prefix.
pub fn same_image(target: &str, image: &str) -> bool {
    let norm = |s: &str| {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        let s = s.strip_prefix("library/").unwrap_or(s);
        // A tag is after the last `:` that follows the last `/` (a registry port is not one).
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') || last.contains('@') { s.to_string() } else { format!("{s}:latest") }
    };
    norm(target) == norm(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2a092e9951b1403970fbf08cc293b6879ab18c14510be2b6a13585e21a54047a";

    #[test]
    fn a_container_is_named_by_its_shim() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = Path::new("/nonexistent");
        let c = of_shim(&argv(&["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", ID, "-address", "/run/c.sock"]), none).unwrap();
        assert_eq!((c.engine, c.id.as_str(), c.image), ("docker", ID, None));
        let c = of_shim(&argv(&["containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", ID]), none).unwrap();
        assert_eq!(c.engine, "containerd");
        assert_eq!(of_shim(&argv(&["/usr/bin/dockerd", "-id", ID]), none), None);
        let runc = ["runc", "--root", "/var/run/docker/runtime-runc/moby", "--log", "/x/log.json", "create", "--bundle", "/x", "--pid-file", "/x/init.pid", ID];
        assert_eq!(of_shim(&argv(&runc), none).map(|c| c.engine), Some("docker"));
        assert_eq!(of_shim(&argv(&["containerd-shim-runc-v2", "-namespace", "moby", "-id", "x; rm"]), none), None);
    }

    #[test]
    fn ids_from_each_engines_cgroup_naming() {
        let id = |paths: &[String]| id_from_cgroup(paths);
        let docker = Some(("docker", ID.to_string()));
        assert_eq!(id(&[format!("/docker/{ID}")]), docker);
        assert_eq!(id(&[format!("/system.slice/docker-{ID}.scope")]), docker);
        assert_eq!(id(&[format!("/machine.slice/libpod-{ID}.scope/container")]), Some(("podman", ID.to_string())));
        assert_eq!(id(&[format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope")]), Some(("containerd", ID.to_string())));
        // cgroup v1 (a hybrid host): any hierarchy names it.
        assert_eq!(id(&["/".to_string(), format!("/docker/{ID}")]), docker);
        // Not containers: a user's session, a short or non-hex name under docker.
        assert_eq!(id(&["/user.slice/user-1000.slice/session-3.scope".to_string()]), None);
        assert_eq!(id(&["/docker/abc".to_string()]), None);
        assert_eq!(id(&["/".to_string()]), None);
    }

    #[test]
    fn docker_records_name_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("containers").join(ID);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("config.v2.json"),
            r#"{"Name":"/eager_mcp","Config":{"Image":"mcp/time:1.2","Cmd":["sh"]},
               "MountPoints":{"/data":{"Source":"/home/u/proj","Destination":"/data","Type":"bind"}}}"#,
        )
        .unwrap();
        let (image, name, volumes) = docker_record(dir.path(), ID);
        assert_eq!((image.as_deref(), name.as_deref()), (Some("mcp/time:1.2"), Some("eager_mcp")));
        assert_eq!(volumes, vec![Volume { source: "/home/u/proj".into(), destination: "/data".into() }]);
        assert_eq!(docker_record(dir.path(), "0"), (None, None, vec![]));
        let c = Container { engine: "docker", id: ID.into(), image, name, volumes };
        assert!(c.owns("/etc/hostname") && c.owns("/database"));
        assert!(!c.owns("/data") && !c.owns("/data/notes.txt"), "a host path mounted in is not the container's own");
        assert!(!Container { image: None, ..c }.owns("/etc/hostname"), "unknown: nothing is its own");
    }

    #[test]
    fn images_match_as_docker_resolves_them() {
        assert!(same_image("mcp/time", "mcp/time"));
        assert!(same_image("mcp/time", "mcp/time:latest"));
        assert!(same_image("busybox", "docker.io/library/busybox:latest"));
        assert!(same_image("localhost:5000/x", "localhost:5000/x:latest"));
        assert!(!same_image("mcp/time:1", "mcp/time:2"));
        assert!(!same_image("mcp/time", "mcp/fetch"));
    }
}
