//! The container image: an OCI image layout, as one tar archive, written
//! here rather than by a daemon or a builder, so that it holds exactly the
//! static binary (and its licences) and is the same bytes from the same
//! binaries. `podman load -i` and `skopeo copy oci-archive:FILE ...` read
//! it.
//!
//! Layout: `index.json` names one image index (tagged with the version),
//! which lists one manifest per architecture; each manifest has one
//! config and one gzipped layer. One entry at the top is what lets
//! `podman load` take the archive without being told which image to load,
//! and the nested index is what lets it (and a registry) pick the
//! architecture.

use anyhow::Result;
use serde_json::{json, Value};

use super::archive::{gzip, rfc3339, sha256, tar, File};
use super::payload::Payload;
use super::{Release, Target};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Where the image has qtrace (the DaemonSet gives only arguments).
pub(crate) const IMAGE_BINARY: &str = "/usr/local/bin/qtrace";

/// The blobs of an image layout, by digest, and their descriptors.
#[derive(Default)]
struct Blobs(Vec<File>);

impl Blobs {
    /// Stores `data`; returns its descriptor.
    fn add(&mut self, media_type: &str, data: Vec<u8>) -> Value {
        let digest = sha256(&data);
        let desc = json!({ "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": data.len() });
        if !self.0.iter().any(|f| f.path.ends_with(&digest)) {
            self.0.push(File::new(format!("blobs/sha256/{digest}"), data));
        }
        desc
    }

    fn add_json(&mut self, media_type: &str, value: &Value) -> Value {
        self.add(media_type, serde_json::to_vec(value).expect("JSON values serialize"))
    }
}

/// The `org.opencontainers.image.*` annotations (and config labels).
fn labels(rel: &Release) -> Value {
    json!({
        "org.opencontainers.image.title": "qtrace",
        "org.opencontainers.image.description": super::deb::SUMMARY,
        "org.opencontainers.image.version": rel.version,
        "org.opencontainers.image.revision": rel.commit,
        "org.opencontainers.image.created": rfc3339(rel.epoch),
        "org.opencontainers.image.licenses": super::rpm::LICENSE,
    })
}

/// One architecture's manifest: a layer with the binary and the licences,
/// and a config that runs the binary.
fn manifest(blobs: &mut Blobs, payload: &Payload, target: &Target, binary: &[u8], rel: &Release) -> Result<Value> {
    let mut files = vec![File::executable(IMAGE_BINARY.trim_start_matches('/'), binary)];
    files.extend(payload.licences.iter().map(|l| l.under("usr/share/doc/qtrace")));
    let layer = tar(&files, rel.epoch)?;
    let diff_id = format!("sha256:{}", sha256(&layer));
    let layer = blobs.add(LAYER, gzip(&layer)?);
    let (arch, variant) = target.oci;
    let mut platform = json!({ "architecture": arch, "os": "linux" });
    if let Some(v) = variant {
        platform["variant"] = json!(v);
    }
    let mut config = platform.clone();
    config["created"] = json!(rfc3339(rel.epoch));
    config["config"] = json!({
        "Entrypoint": [IMAGE_BINARY],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Labels": labels(rel),
    });
    config["rootfs"] = json!({ "type": "layers", "diff_ids": [diff_id] });
    config["history"] = json!([{ "created": rfc3339(rel.epoch), "created_by": "cargo xtask dist" }]);
    let config = blobs.add_json(CONFIG, &config);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer], "annotations": labels(rel),
    });
    let mut desc = blobs.add_json(MANIFEST, &manifest);
    desc["platform"] = platform;
    Ok(desc)
}

/// The image layout archive for `images` (target, static binary).
pub(crate) fn archive(payload: &Payload, images: &[(Target, Vec<u8>)], rel: &Release) -> Result<Vec<u8>> {
    let mut blobs = Blobs::default();
    let manifests = images.iter().map(|(t, bin)| manifest(&mut blobs, payload, t, bin, rel)).collect::<Result<Vec<_>>>()?;
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": manifests, "annotations": labels(rel) });
    let mut top = blobs.add_json(INDEX, &index);
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": format!("qtrace:{}", rel.version) });
    let layout = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": [top] });
    let mut files = blobs.0;
    files.push(File::new("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#));
    files.push(File::new("index.json", serde_json::to_vec(&layout)?));
    tar(&files, rel.epoch)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read as _;

    use super::*;
    use crate::dist::TARGETS;

    fn release() -> Release {
        Release { version: "1.2.3".into(), commit: "0123456789ab".into(), epoch: 1_700_000_000 }
    }

    fn files(archive: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        for e in ::tar::Archive::new(archive).entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(e.path().unwrap().display().to_string(), data);
        }
        out
    }

    #[test]
    fn the_same_binaries_give_the_same_image() {
        let images = vec![(TARGETS[0], b"x86_64 build".to_vec()), (TARGETS[1], b"aarch64 build".to_vec())];
        let one = archive(&Payload::fixture(), &images, &release()).unwrap();
        assert_eq!(one, archive(&Payload::fixture(), &images, &release()).unwrap());
        let changed = vec![(TARGETS[0], b"x86_64 build!".to_vec()), images[1].clone()];
        assert_ne!(one, archive(&Payload::fixture(), &changed, &release()).unwrap());
    }

    #[test]
    fn the_layout_tags_one_index_of_both_platforms() {
        let images = vec![(TARGETS[0], b"x86_64 build".to_vec()), (TARGETS[1], b"aarch64 build".to_vec())];
        let files = files(&archive(&Payload::fixture(), &images, &release()).unwrap());
        for (path, data) in &files {
            if let Some(digest) = path.strip_prefix("blobs/sha256/").filter(|d| !d.is_empty()) {
                assert_eq!(sha256(data), digest, "a blob is named by its digest");
            }
        }
        let blob = |desc: &Value| -> Value {
            let digest = desc["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
            serde_json::from_slice(&files[&format!("blobs/sha256/{digest}")]).unwrap()
        };
        let layout: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let top = &layout["manifests"].as_array().unwrap()[..];
        assert_eq!(top.len(), 1, "podman load takes one image from the archive");
        assert_eq!(top[0]["annotations"]["org.opencontainers.image.ref.name"], "qtrace:1.2.3");
        let index = blob(&top[0]);
        let platforms: Vec<&str> =
            index["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
        assert_eq!(platforms, ["amd64", "arm64"]);
        let manifest = blob(&index["manifests"][1]);
        let config = blob(&manifest["config"]);
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["config"]["Entrypoint"][0], IMAGE_BINARY);
        assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    }
}
