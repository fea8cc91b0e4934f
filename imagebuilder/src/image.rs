//! OCI image assembly: config, manifest, the image layout with its index, and the
//! `docker load` archive. All JSON is written with sorted keys so that digests are stable.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder, ANNOTATION_REF_NAME,
};
use serde::Serialize;

use crate::layer::{self, digest_of, Entry, Layer, Tree};

/// Errors while assembling or writing images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building OCI {what}: {reason}")]
    Spec { what: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn spec_err(what: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Spec { what, reason }
}

fn io_err(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        path: path.to_string(),
        source,
    }
}

/// Everything about an image except its layers.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository, e.g. `dhi.io/istio-pilot`.
    pub repository: String,
    /// Tag, e.g. `0.1.0` or `0.1.0-dev`.
    pub tag: String,
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub exposed_ports: Vec<u16>,
    /// `org.opencontainers.image.*` labels, also used as manifest annotations.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
    /// One `created_by` line per layer.
    pub history: Vec<String>,
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// A complete image: layers, config and manifest, with their digests.
#[derive(Debug, Clone)]
pub struct Image {
    pub spec: ImageSpec,
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl Image {
    /// Sum of compressed layer sizes.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.blob.len() as u64).sum()
    }

    /// Sum of uncompressed layer sizes.
    pub fn uncompressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_size).sum()
    }

    /// The descriptor of this image's manifest, annotated with its tag.
    pub fn descriptor(&self, ref_name: Option<&str>) -> Result<Descriptor, Error> {
        let mut d = descriptor(
            MediaType::ImageManifest,
            &self.manifest_digest,
            self.manifest.len(),
        )?;
        if let Some(r) = ref_name {
            d.set_annotations(Some(HashMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                r.to_string(),
            )])));
        }
        Ok(d)
    }
}

/// Re-serialises any JSON with object keys sorted (whatever map type produced it).
pub fn canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(v)?))
}

/// A descriptor for content with the given `sha256:` digest.
pub fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Result<Descriptor, Error> {
    let digest = Digest::from_str(digest).map_err(|e| spec_err("digest")(e.to_string()))?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size as u64)
        .build()
        .map_err(|e| spec_err("descriptor")(e.to_string()))
}

/// Builds config and manifest for `layers`.
pub fn assemble(spec: ImageSpec, layers: Vec<Layer>) -> Result<Image, Error> {
    let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    let config = ConfigBuilder::default()
        .user(spec.user.clone())
        .env(spec.env.clone())
        .entrypoint(spec.entrypoint.clone())
        .exposed_ports(
            spec.exposed_ports
                .iter()
                .map(|p| format!("{p}/tcp"))
                .collect::<Vec<_>>(),
        )
        .labels(labels.clone())
        .working_dir("/".to_string())
        .build()
        .map_err(|e| spec_err("config")(e.to_string()))?;
    let history = spec
        .history
        .iter()
        .map(|h| {
            HistoryBuilder::default()
                .created(spec.created.clone())
                .created_by(h.clone())
                .build()
                .map_err(|e| spec_err("history")(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = RootFsBuilder::default()
        .typ("layers".to_string())
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()
        .map_err(|e| spec_err("rootfs")(e.to_string()))?;
    let image_config = ImageConfigurationBuilder::default()
        .created(spec.created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(|e| spec_err("image config")(e.to_string()))?;
    let config_json =
        canonical_json(&image_config).map_err(|e| spec_err("config")(e.to_string()))?;
    let config_digest = digest_of(&config_json);

    let layer_descs = layers
        .iter()
        .map(|l| descriptor(MediaType::ImageLayerGzip, &l.digest, l.blob.len()))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_json.len(),
        )?)
        .layers(layer_descs)
        .annotations(labels)
        .build()
        .map_err(|e| spec_err("manifest")(e.to_string()))?;
    let manifest_json =
        canonical_json(&manifest).map_err(|e| spec_err("manifest")(e.to_string()))?;
    Ok(Image {
        spec,
        manifest_digest: digest_of(&manifest_json),
        manifest: manifest_json,
        config_digest,
        config: config_json,
        layers,
    })
}

/// All blobs of `images` (manifests, configs, layers) by digest, plus extra blobs.
fn blobs<'a>(images: &[&'a Image], extra: &'a [(String, Vec<u8>)]) -> BTreeMap<&'a str, &'a [u8]> {
    let mut out: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for img in images {
        out.insert(&img.manifest_digest, &img.manifest);
        out.insert(&img.config_digest, &img.config);
        for l in &img.layers {
            out.insert(&l.digest, &l.blob);
        }
    }
    for (d, b) in extra {
        out.insert(d, b);
    }
    out
}

/// The `index.json` of a layout holding `images`, each tagged with `ref.name`.
fn index_json(images: &[&Image], containerd_names: bool) -> Result<Vec<u8>, Error> {
    let manifests = images
        .iter()
        .map(|img| {
            let mut d = img.descriptor(Some(&img.spec.tag))?;
            if containerd_names {
                let mut a = d.annotations().clone().unwrap_or_default();
                a.insert("io.containerd.image.name".into(), img.spec.reference());
                d.set_annotations(Some(a));
            }
            Ok(d)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| spec_err("index")(e.to_string()))?;
    canonical_json(&index).map_err(|e| spec_err("index")(e.to_string()))
}

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// Writes an OCI image layout at `dir` (replacing what was there). Returns the index digest.
pub fn write_layout(
    dir: &Path,
    images: &[&Image],
    extra: &[(String, Vec<u8>)],
) -> Result<String, Error> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(dir.display()))?;
    }
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io_err(blob_dir.display()))?;
    for (digest, data) in blobs(images, extra) {
        let p = blob_dir.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&p, data).map_err(io_err(p.display()))?;
    }
    std::fs::write(dir.join("oci-layout"), OCI_LAYOUT).map_err(io_err(dir.display()))?;
    let index = index_json(images, false)?;
    std::fs::write(dir.join("index.json"), &index).map_err(io_err(dir.display()))?;
    Ok(digest_of(&index))
}

/// Writes a tar that `docker load` accepts: an OCI layout plus Docker's `manifest.json`,
/// with deterministic tar metadata.
pub fn write_docker_archive(path: &Path, image: &Image, mtime: u64) -> Result<(), Error> {
    let mut t = Tree::new();
    for (digest, data) in blobs(&[image], &[]) {
        t.insert(
            &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
            Entry::file(data.to_vec(), 0o644),
        );
    }
    t.insert("oci-layout", Entry::file(OCI_LAYOUT, 0o644));
    t.insert(
        "index.json",
        Entry::file(index_json(&[image], true)?, 0o644),
    );
    let blob_path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::json!([{
        "Config": blob_path(&image.config_digest),
        "RepoTags": [image.spec.reference()],
        "Layers": image.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
    }]);
    let m =
        canonical_json(&docker_manifest).map_err(|e| spec_err("manifest.json")(e.to_string()))?;
    t.insert("manifest.json", Entry::file(m, 0o644));
    let tar = layer::tar_bytes(&t, mtime).map_err(io_err(path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir.display()))?;
    }
    std::fs::write(path, tar).map_err(io_err(path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tag: &str) -> ImageSpec {
        ImageSpec {
            repository: "dhi.io/istio-pilot".into(),
            tag: tag.into(),
            user: "1337:1337".into(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            entrypoint: vec!["/usr/local/bin/pilot-discovery".into()],
            exposed_ports: vec![15010, 8080],
            labels: [
                (
                    "org.opencontainers.image.title".to_string(),
                    "pilot".to_string(),
                ),
                (
                    "org.opencontainers.image.version".to_string(),
                    tag.to_string(),
                ),
                (
                    "org.opencontainers.image.created".to_string(),
                    "2024-01-01T00:00:00Z".to_string(),
                ),
            ]
            .into(),
            created: "2024-01-01T00:00:00Z".into(),
            history: vec!["base".into()],
        }
    }

    fn one_layer() -> Vec<Layer> {
        let mut t = Tree::new();
        t.insert("etc/hostname", Entry::file("x\n", 0o644));
        vec![layer::build(&t, 0).expect("layer")]
    }

    #[test]
    fn assembly_is_deterministic() {
        let a = assemble(spec("1"), one_layer()).expect("image");
        for _ in 0..5 {
            let b = assemble(spec("1"), one_layer()).expect("image");
            assert_eq!(a.manifest_digest, b.manifest_digest);
            assert_eq!(a.config, b.config);
        }
        let cfg: serde_json::Value = serde_json::from_slice(&a.config).expect("json");
        assert_eq!(cfg["config"]["User"], "1337:1337");
        assert!(cfg["config"]["ExposedPorts"]["15010/tcp"].is_object());
        assert!(cfg["config"].get("Cmd").is_none());
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).expect("json");
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    #[test]
    fn layout_and_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = assemble(spec("1"), one_layer()).expect("image");
        let b = assemble(spec("1-dev"), one_layer()).expect("image");
        let d1 = write_layout(&dir.path().join("oci"), &[&a, &b], &[]).expect("layout");
        let d2 = write_layout(&dir.path().join("oci"), &[&a, &b], &[]).expect("layout");
        assert_eq!(d1, d2);
        let idx: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("oci/index.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(
            idx["manifests"][1]["annotations"][ANNOTATION_REF_NAME],
            "1-dev"
        );
        let blob = dir
            .path()
            .join("oci/blobs/sha256")
            .join(a.manifest_digest.trim_start_matches("sha256:"));
        assert!(blob.exists());
        let ar = dir.path().join("a.tar");
        write_docker_archive(&ar, &a, 0).expect("archive");
        let first = std::fs::read(&ar).expect("read");
        write_docker_archive(&ar, &a, 0).expect("archive");
        assert_eq!(std::fs::read(&ar).expect("read"), first);
    }
}
