//! What a container runtime's own on-disk state says of a container whose
//! id a cgroup path gave: its name and image and, for a Kubernetes pod's
//! container, the pod's name and namespace. No runtime API and no
//! Kubernetes API is asked; the files are read in qtrace's mount
//! namespace, under a root directory (`/` on the host, a fixture tree in
//! tests), once per listener like the rest of its owner.
//!
//! Everything read here is untrusted: whoever starts a container chooses
//! its names and annotations (`podman run --name`, `ctr run
//! --annotation`, a pod's metadata), so files are read up to a bound,
//! values are bounded and refused when they hold control characters, and
//! nothing read ever becomes part of a path: paths are built from the
//! runtime's fixed layout and the cgroup's 64-hex-digit id only.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::identity::{reopen_regular, Runtime};

/// What a runtime's state names. Every field is absent when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Container {
    /// In a Kubernetes pod, the container's name in the pod's spec; else
    /// the name its runtime gave it (podman, Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The image it was created from, as the runtime recorded its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
}

/// A container found in a runtime's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The runtime whose state has it.
    pub runtime: Option<Runtime>,
    pub container: Container,
    /// The pod's UID as the runtime recorded it (for a cgroup path that
    /// does not name the pod).
    pub pod_uid: Option<String>,
    /// Why a field is missing although the container was found (a value
    /// refused, a container made from no image).
    pub notes: Vec<String>,
}

/// Why a container's state could not be read.
#[derive(Debug)]
pub enum StateError {
    /// No state of the container where its runtime keeps it (the runtime
    /// keeps it elsewhere: a rootless podman, a non-default root).
    NotFound(&'static str),
    Read(PathBuf, io::Error),
    TooLarge(PathBuf, u64),
    Json(PathBuf, serde_json::Error),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("container state unreadable: ")?;
        match self {
            Self::NotFound(where_) => write!(f, "not in {where_}"),
            Self::Read(p, e) => write!(f, "{}: {e}", p.display()),
            Self::TooLarge(p, limit) => write!(f, "{}: larger than {limit} bytes", p.display()),
            Self::Json(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

/// An OCI bundle's `config.json`: at most this many bytes (runc's own
/// bundles are a few KiB; annotations are bounded by Kubernetes at 256 KiB).
const BUNDLE_MAX: u64 = 1 << 20;
/// c/storage's `containers.json` lists every container of the store.
const STORE_MAX: u64 = 64 << 20;
/// Longest value kept: Kubernetes names are at most 253 bytes, image
/// references a few hundred.
const VALUE_MAX: usize = 512;

/// containerd's state directories of v2 runtime tasks, one directory per
/// containerd namespace (`k8s.io` for the CRI plugin, `moby` for Docker):
/// the default `state` of containerd (`/run/containerd`) and k3s's.
const CONTAINERD_TASKS: [&str; 2] = ["run/containerd/io.containerd.runtime.v2.task", "run/k3s/containerd/io.containerd.runtime.v2.task"];
/// CRI-O's bundle of container `{}`: under c/storage's default `runroot`.
const CRIO_USERDATA: &str = "run/containers/storage/overlay-containers";
/// c/storage's list of the containers of rootful podman's default store
/// (`graphroot`).
const PODMAN_STORE: &str = "var/lib/containers/storage/overlay-containers/containers.json";
/// Docker's per-container directory (`<data-root>/containers/<id>`).
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";

/// The runtimes' state, under `root`, as read by one resolution of
/// listeners' owners.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeState {
    root: PathBuf,
    /// podman's container list, read once for every podman container
    /// resolved with this state (it lists them all).
    podman_store: std::cell::OnceCell<Vec<u8>>,
}

impl RuntimeState {
    pub(crate) fn host() -> Self {
        Self { root: "/".into(), podman_store: std::cell::OnceCell::new() }
    }

    #[cfg(test)]
    pub(crate) fn at(root: &Path) -> Self {
        Self { root: root.to_owned(), podman_store: std::cell::OnceCell::new() }
    }

    /// The container `id` (64 hex digits, from a cgroup path) in the state
    /// of `runtime`, or of each runtime that may have made it when the
    /// path did not say (Kubernetes' cgroupfs driver: containerd, CRI-O or
    /// Docker through cri-dockerd).
    pub(crate) fn lookup(&self, runtime: Option<Runtime>, id: &str) -> Result<Found, StateError> {
        debug_assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "an id from a cgroup path");
        match runtime {
            Some(Runtime::Containerd) => self.containerd(id),
            Some(Runtime::CriO) => self.crio(id),
            Some(Runtime::Podman) => self.podman(id),
            Some(Runtime::Docker) => self.docker(id),
            None => self.containerd(id).or_else(|_| self.crio(id)).or_else(|_| self.docker(id)).map_err(|e| match e {
                StateError::NotFound(_) => StateError::NotFound("containerd's, CRI-O's or Docker's state"),
                e => e,
            }),
        }
    }

    /// containerd keeps a running task's OCI bundle at
    /// `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
    /// (containerd 1.6 `runtime/v2/bundle.go`); the cgroup path does not
    /// say which namespace, so each is tried.
    fn containerd(&self, id: &str) -> Result<Found, StateError> {
        for tasks in CONTAINERD_TASKS {
            let Ok(namespaces) = std::fs::read_dir(self.root.join(tasks)) else { continue };
            // Namespaces are few; a bound keeps a strange directory cheap.
            for ns in namespaces.flatten().take(256) {
                let path = ns.path().join(id).join("config.json");
                match read_bounded(&path, BUNDLE_MAX) {
                    Ok(bytes) => return Ok(found(Runtime::Containerd, from_containerd(&parse_bundle(&path, &bytes)?))),
                    Err(StateError::Read(_, e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(StateError::NotFound("containerd's state"))
    }

    /// CRI-O writes each container's bundle to c/storage's run directory
    /// (`<runroot>/overlay-containers/<id>/userdata/config.json`, CRI-O
    /// `internal/storage/runtime.go`).
    fn crio(&self, id: &str) -> Result<Found, StateError> {
        let path = self.root.join(CRIO_USERDATA).join(id).join("userdata/config.json");
        let bytes = read_bounded(&path, BUNDLE_MAX).map_err(|e| not_found_as(e, "CRI-O's state"))?;
        Ok(found(Runtime::CriO, from_crio(&parse_bundle(&path, &bytes)?)))
    }

    /// Podman 4 writes no name or image into the bundle's annotations
    /// (seen: only `io.podman.annotations.*` flags); they are in
    /// c/storage's container list, the name in `names` and the image in
    /// the `metadata` JSON podman stores there (libpod `storage.go`,
    /// `RuntimeContainerMetadata`: `image-name`, empty for `--rootfs`).
    fn podman(&self, id: &str) -> Result<Found, StateError> {
        let path = self.root.join(PODMAN_STORE);
        let bytes = match self.podman_store.get() {
            Some(bytes) => bytes,
            None => {
                let read = read_bounded(&path, STORE_MAX).map_err(|e| not_found_as(e, "podman's store"))?;
                self.podman_store.get_or_init(|| read)
            }
        };
        let entry = parse_podman(bytes, id).map_err(|e| StateError::Json(path, e))?;
        let found = entry.ok_or(StateError::NotFound("podman's store"))?;
        Ok(Found { runtime: Some(Runtime::Podman), ..found })
    }

    /// Docker keeps each container's configuration in
    /// `<data-root>/containers/<id>/config.v2.json` (moby
    /// `container/container.go`, `configFileName`).
    fn docker(&self, id: &str) -> Result<Found, StateError> {
        let path = self.root.join(DOCKER_CONTAINERS).join(id).join("config.v2.json");
        let bytes = read_bounded(&path, BUNDLE_MAX).map_err(|e| not_found_as(e, "Docker's state"))?;
        let found = parse_docker(&bytes).map_err(|e| StateError::Json(path, e))?;
        Ok(Found { runtime: Some(Runtime::Docker), ..found })
    }
}

fn not_found_as(e: StateError, where_: &'static str) -> StateError {
    match e {
        StateError::Read(_, ref io) if io.kind() == io::ErrorKind::NotFound => StateError::NotFound(where_),
        e => e,
    }
}

fn found(runtime: Runtime, (container, pod_uid, notes): Fields) -> Found {
    Found { runtime: Some(runtime), container, pod_uid, notes }
}

/// Reads the regular file `path`, refusing anything else unopened (as
/// a workload's `/etc/passwd` is read) and files over `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, StateError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = |path: &Path| -> io::Result<Vec<u8>> {
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
        let mut bytes = Vec::new();
        reopen_regular(&opened.into())?.take(limit + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read(path).map_err(|e| StateError::Read(path.to_owned(), e))?;
    if bytes.len() as u64 > limit {
        return Err(StateError::TooLarge(path.to_owned(), limit));
    }
    Ok(bytes)
}

/// The part of an OCI bundle's `config.json` read here.
#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn parse_bundle(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, StateError> {
    parse_annotations(bytes).map_err(|e| StateError::Json(path.to_owned(), e))
}

/// The annotations of an OCI bundle's `config.json` text.
pub(crate) fn parse_annotations(bytes: &[u8]) -> Result<BTreeMap<String, String>, serde_json::Error> {
    let bundle: Bundle = serde_json::from_slice(bytes)?;
    Ok(bundle.annotations.unwrap_or_default())
}

/// A container's fields, its pod's UID and why some are missing.
type Fields = (Container, Option<String>, Vec<String>);

/// Values taken from a runtime's record, checked one by one.
#[derive(Default)]
struct Taker {
    notes: Vec<String>,
}

impl Taker {
    /// `value` if it is a plausible name: non-empty, at most [`VALUE_MAX`]
    /// bytes, no control characters; else nothing, and a note when it was
    /// there but refused.
    fn take(&mut self, what: &str, value: Option<&str>) -> Option<String> {
        let v = value.filter(|v| !v.is_empty())?;
        if v.len() > VALUE_MAX || v.chars().any(char::is_control) {
            self.notes.push(format!("{what}: the runtime's value is not a plausible name"));
            return None;
        }
        Some(v.to_owned())
    }
}

/// containerd's CRI plugin's annotations (containerd 1.6
/// `pkg/cri/annotations/annotations.go`): a sandbox (pause) container
/// has the pod's but no container name or image.
pub(crate) fn from_containerd(a: &BTreeMap<String, String>) -> Fields {
    let get = |k: &str| a.get(k).map(String::as_str);
    let mut t = Taker::default();
    let container = Container {
        container_name: t.take("container_name", get("io.kubernetes.cri.container-name")),
        image: t.take("image", get("io.kubernetes.cri.image-name")),
        pod_name: t.take("pod_name", get("io.kubernetes.cri.sandbox-name")),
        pod_namespace: t.take("pod_namespace", get("io.kubernetes.cri.sandbox-namespace")),
    };
    let pod_uid = t.take("pod_uid", get("io.kubernetes.cri.sandbox-uid"));
    (container, pod_uid, t.notes)
}

/// CRI-O's annotations: the kubelet's labels copied into the bundle
/// (kubelet `pkg/kubelet/types/labels.go`) and CRI-O's own image name
/// (CRI-O `pkg/annotations/internal.go`: `ImageName`, else the image the
/// pod asked for, `Image`).
pub(crate) fn from_crio(a: &BTreeMap<String, String>) -> Fields {
    let get = |k: &str| a.get(k).map(String::as_str);
    let mut t = Taker::default();
    let image = get("io.kubernetes.cri-o.ImageName").filter(|i| !i.is_empty()).or_else(|| get("io.kubernetes.cri-o.Image"));
    let container = Container {
        container_name: t.take("container_name", get("io.kubernetes.container.name")),
        image: t.take("image", image),
        pod_name: t.take("pod_name", get("io.kubernetes.pod.name")),
        pod_namespace: t.take("pod_namespace", get("io.kubernetes.pod.namespace")),
    };
    let pod_uid = t.take("pod_uid", get("io.kubernetes.pod.uid"));
    (container, pod_uid, t.notes)
}

/// One container of c/storage's `containers.json` (containers/storage
/// `containers.go`, `Container`).
#[derive(Deserialize)]
struct StoreEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    metadata: String,
}

/// What podman writes into an entry's `metadata`.
#[derive(Deserialize)]
struct PodmanMetadata {
    #[serde(default, rename = "image-name")]
    image_name: String,
}

/// Container `id` of a `containers.json` text, if listed.
pub(crate) fn parse_podman(bytes: &[u8], id: &str) -> Result<Option<Found>, serde_json::Error> {
    let entries: Vec<StoreEntry> = serde_json::from_slice(bytes)?;
    let Some(entry) = entries.into_iter().find(|e| e.id == id) else { return Ok(None) };
    let mut t = Taker::default();
    let container_name = t.take("container_name", entry.names.first().map(String::as_str));
    // Metadata another tool wrote may not be podman's: then no image.
    let image_name = serde_json::from_str::<PodmanMetadata>(&entry.metadata).map(|m| m.image_name).unwrap_or_default();
    if image_name.is_empty() {
        t.notes.push("image: none recorded (a container run from a root filesystem, --rootfs, has none)".into());
    }
    let image = t.take("image", Some(&image_name));
    let container = Container { container_name, image, ..Container::default() };
    Ok(Some(Found { runtime: None, container, pod_uid: None, notes: t.notes }))
}

/// The part of Docker's `config.v2.json` read here (moby
/// `container/container.go`: `Name` with a leading `/`, `Config` the
/// container's `Config` with the image as given and the labels).
#[derive(Deserialize)]
struct DockerContainer {
    #[serde(default, rename = "Name")]
    name: String,
    #[serde(default, rename = "Config")]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default, rename = "Image")]
    image: String,
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

/// A Docker container; a Kubernetes pod's (cri-dockerd) carries the
/// kubelet's labels, which name the pod and the container in its spec.
pub(crate) fn parse_docker(bytes: &[u8]) -> Result<Found, serde_json::Error> {
    let c: DockerContainer = serde_json::from_slice(bytes)?;
    let (image, labels) = c.config.map(|c| (c.image, c.labels.unwrap_or_default())).unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    let mut t = Taker::default();
    let name = label("io.kubernetes.container.name").or(Some(c.name.strip_prefix('/').unwrap_or(&c.name)));
    let container = Container {
        container_name: t.take("container_name", name),
        image: t.take("image", Some(&image)),
        pod_name: t.take("pod_name", label("io.kubernetes.pod.name")),
        pod_namespace: t.take("pod_namespace", label("io.kubernetes.pod.namespace")),
    };
    let pod_uid = t.take("pod_uid", label("io.kubernetes.pod.uid"));
    Ok(Found { runtime: None, container, pod_uid, notes: t.notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c01db0b339c3b5f2e4b2d6c1a9b6f1f8b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0";
    const POD: &str = "6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b";

    /// A fixture root, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!("qtrace-runtime-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Self(root)
        }

        fn file(&self, path: &str, text: &str) -> PathBuf {
            let path = self.0.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn state(&self) -> RuntimeState {
            RuntimeState::at(&self.0)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(c: &Container) -> [Option<&str>; 4] {
        [c.container_name.as_deref(), c.image.as_deref(), c.pod_name.as_deref(), c.pod_namespace.as_deref()]
    }

    /// What containerd 1.6's CRI plugin writes for a container, and for
    /// its pod's sandbox, in any containerd namespace.
    #[test]
    fn containerd_cri_bundles() {
        let tree = Tree::new("containerd");
        let bundle = format!(
            r#"{{"ociVersion":"1.0.2-dev","annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"web","io.kubernetes.cri.image-name":"docker.io/library/nginx:1.25","io.kubernetes.cri.sandbox-name":"web-7d9f","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{POD}","io.kubernetes.cri.sandbox-id":"{ID}"}}}}"#
        );
        tree.file(&format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"), &bundle);
        tree.file("run/containerd/io.containerd.runtime.v2.task/default/other/config.json", "{}");
        for runtime in [Some(Runtime::Containerd), None] {
            let found = tree.state().lookup(runtime, ID).unwrap();
            assert_eq!(found.runtime, Some(Runtime::Containerd));
            assert_eq!(names(&found.container), [Some("web"), Some("docker.io/library/nginx:1.25"), Some("web-7d9f"), Some("shop")]);
            assert_eq!((found.pod_uid.as_deref(), found.notes.len()), (Some(POD), 0));
        }
        let sandbox = r#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-name":"web-7d9f","io.kubernetes.cri.sandbox-namespace":"shop"}}"#;
        tree.file(&format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"), sandbox);
        let found = tree.state().lookup(Some(Runtime::Containerd), ID).unwrap();
        assert_eq!(names(&found.container), [None, None, Some("web-7d9f"), Some("shop")], "a sandbox is the pod's");
        // A plain containerd container (`ctr run`, Docker's `moby`
        // namespace): found, nothing named.
        tree.file(&format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"), r#"{"ociVersion":"1.0.2"}"#);
        assert_eq!(tree.state().lookup(Some(Runtime::Containerd), ID).unwrap().container, Container::default());
    }

    #[test]
    fn crio_bundles() {
        let tree = Tree::new("crio");
        let bundle = format!(
            r#"{{"annotations":{{"io.kubernetes.pod.name":"db-0","io.kubernetes.pod.namespace":"data","io.kubernetes.pod.uid":"{POD}","io.kubernetes.container.name":"postgres","io.kubernetes.cri-o.ImageName":"quay.io/x/postgres:16","io.kubernetes.cri-o.ContainerType":"container","io.kubernetes.cri-o.Labels":"{{}}"}}}}"#
        );
        tree.file(&format!("run/containers/storage/overlay-containers/{ID}/userdata/config.json"), &bundle);
        for runtime in [Some(Runtime::CriO), None] {
            let found = tree.state().lookup(runtime, ID).unwrap();
            assert_eq!(found.runtime, Some(Runtime::CriO));
            assert_eq!(names(&found.container), [Some("postgres"), Some("quay.io/x/postgres:16"), Some("db-0"), Some("data")]);
            assert_eq!(found.pod_uid.as_deref(), Some(POD));
        }
        // An image referred to by id has no name: the one the pod asked for.
        let by_id = r#"{"annotations":{"io.kubernetes.cri-o.ImageName":"","io.kubernetes.cri-o.Image":"postgres@sha256:ab"}}"#;
        tree.file(&format!("run/containers/storage/overlay-containers/{ID}/userdata/config.json"), by_id);
        assert_eq!(tree.state().lookup(Some(Runtime::CriO), ID).unwrap().container.image.as_deref(), Some("postgres@sha256:ab"));
    }

    /// As podman 4.3 wrote it on this project's machine, for a `--rootfs`
    /// container and one made from an image.
    #[test]
    fn podman_store() {
        let tree = Tree::new("podman");
        let store = format!(
            r#"[{{"id":"{}","names":["other"],"image":"","metadata":"{{}}"}},{{"id":"{ID}","names":["qt-exp1"],"image":"","layer":"d4a5","metadata":"{{\"image-name\":\"\",\"image-id\":\"\",\"name\":\"qt-exp1\",\"created-at\":1795911051}}","created":"2026-11-29T00:10:51.061071495Z","flags":{{"MountLabel":"","ProcessLabel":""}}}}]"#,
            "0".repeat(64)
        );
        let path = tree.file(PODMAN_STORE, &store);
        let found = tree.state().lookup(Some(Runtime::Podman), ID).unwrap();
        assert_eq!((found.runtime, names(&found.container)), (Some(Runtime::Podman), [Some("qt-exp1"), None, None, None]));
        assert_eq!(found.notes, ["image: none recorded (a container run from a root filesystem, --rootfs, has none)"]);
        let with_image = store.replace(r#"\"image-name\":\"\""#, r#"\"image-name\":\"docker.io/library/busybox:latest\""#);
        std::fs::write(&path, with_image).unwrap();
        let found = tree.state().lookup(Some(Runtime::Podman), ID).unwrap();
        assert_eq!((found.container.image.as_deref(), found.notes.len()), (Some("docker.io/library/busybox:latest"), 0));
        let gone = tree.state().lookup(Some(Runtime::Podman), &"1".repeat(64)).unwrap_err();
        assert_eq!(gone.to_string(), "container state unreadable: not in podman's store");
        // One resolution reads the list once, however many containers it names.
        let state = tree.state();
        assert!(state.lookup(Some(Runtime::Podman), ID).is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(state.lookup(Some(Runtime::Podman), &"0".repeat(64)).is_ok(), "the other container, from the same read");
        assert!(tree.state().lookup(Some(Runtime::Podman), ID).is_err(), "a new resolution reads it again");
    }

    #[test]
    fn docker_config() {
        let tree = Tree::new("docker");
        let config = r#"{"ID":"x","Name":"/shop-web-1","Image":"sha256:0123","Config":{"Image":"nginx:1.25","Labels":{"com.docker.compose.project":"shop"}},"State":{"Running":true}}"#;
        let path = tree.file(&format!("var/lib/docker/containers/{ID}/config.v2.json"), config);
        let found = tree.state().lookup(Some(Runtime::Docker), ID).unwrap();
        assert_eq!((found.runtime, names(&found.container)), (Some(Runtime::Docker), [Some("shop-web-1"), Some("nginx:1.25"), None, None]));
        // cri-dockerd's containers carry the kubelet's labels.
        let k8s = format!(
            r#"{{"Name":"/k8s_app_api-0_prod_{POD}_0","Config":{{"Image":"registry/api:2","Labels":{{"io.kubernetes.container.name":"app","io.kubernetes.pod.name":"api-0","io.kubernetes.pod.namespace":"prod","io.kubernetes.pod.uid":"{POD}"}}}}}}"#
        );
        std::fs::write(&path, k8s).unwrap();
        let found = tree.state().lookup(None, ID).unwrap();
        assert_eq!(names(&found.container), [Some("app"), Some("registry/api:2"), Some("api-0"), Some("prod")]);
        assert_eq!(found.pod_uid.as_deref(), Some(POD));
        std::fs::write(&path, r#"{"Name":"/n","Config":null}"#).unwrap();
        assert_eq!(names(&tree.state().lookup(Some(Runtime::Docker), ID).unwrap().container), [Some("n"), None, None, None]);
    }

    /// Names are the workload's choice: implausible ones are refused and
    /// said so, never cut or cleaned.
    #[test]
    fn implausible_values_are_refused() {
        let long = "a".repeat(VALUE_MAX + 1);
        let a: BTreeMap<String, String> = [
            ("io.kubernetes.cri.container-name", "web\u{1b}[2J"),
            ("io.kubernetes.cri.sandbox-name", long.as_str()),
            ("io.kubernetes.cri.sandbox-namespace", "ok"),
            ("io.kubernetes.cri.image-name", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (c, _, notes) = from_containerd(&a);
        assert_eq!(names(&c), [None, None, None, Some("ok")]);
        assert_eq!(
            notes,
            ["container_name: the runtime's value is not a plausible name", "pod_name: the runtime's value is not a plausible name"]
        );
    }

    /// What cannot be read is a reason, never a guess: absent state, a
    /// file that is not JSON, one too large, a FIFO (never opened).
    #[test]
    fn unreadable_state_says_why() {
        let tree = Tree::new("unreadable");
        let none = tree.state().lookup(None, ID).unwrap_err();
        assert!(matches!(none, StateError::NotFound(_)));
        assert_eq!(none.to_string(), "container state unreadable: not in containerd's, CRI-O's or Docker's state");
        let bundle = format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json");
        let path = tree.file(&bundle, "{not json");
        assert!(matches!(tree.state().lookup(Some(Runtime::Containerd), ID), Err(StateError::Json(..))));
        std::fs::write(&path, " ".repeat(BUNDLE_MAX as usize + 1)).unwrap();
        let large = tree.state().lookup(Some(Runtime::Containerd), ID).unwrap_err();
        assert!(large.to_string().ends_with("config.json: larger than 1048576 bytes"), "{large}");
        std::fs::remove_file(&path).unwrap();
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo = tree.state().lookup(Some(Runtime::Containerd), ID).unwrap_err();
        assert!(matches!(&fifo, StateError::Read(_, e) if e.kind() == io::ErrorKind::InvalidData), "{fifo}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(matches!(tree.state().lookup(Some(Runtime::Containerd), ID), Err(StateError::Read(..))), "a symlink is not followed");
    }
}
