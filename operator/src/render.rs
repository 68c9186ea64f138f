//! `rstore-operator render FILE`: the objects the operator would create for
//! a ReplicatedStore manifest, as YAML, for review and GitOps. Rendered
//! objects carry no owner reference (a manifest has no uid) and the
//! StatefulSet runs `spec.replicas` members. Other documents of the
//! manifest (a password Secret, say) are passed through unchanged, so the
//! output is the whole set of objects to apply.

use serde::Deserialize;

use crate::build::build_all;
use crate::crd::ReplicatedStore;
use crate::validate::{ValidationError, validate};

/// Why a manifest could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: not a ReplicatedStore manifest: {source}")]
    Parse {
        index: usize,
        source: serde_yaml::Error,
    },
    #[error(
        "document {index}: kind {kind:?} is not ReplicatedStore (apiVersion rstore.dev/v1alpha1)"
    )]
    WrongKind { index: usize, kind: String },
    #[error("document {index} ({name}): {source}")]
    Invalid {
        index: usize,
        name: String,
        source: ValidationError,
    },
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("no ReplicatedStore in the input")]
    Empty,
}

/// Render every ReplicatedStore in `manifest` (one or more YAML documents).
pub fn render(manifest: &str, default_image: Option<&str>) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut rendered = 0;
    for (index, doc) in serde_yaml::Deserializer::from_str(manifest).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|source| RenderError::Parse { index, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        if kind != "ReplicatedStore" {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value)?);
            continue;
        }
        if api_version != "rstore.dev/v1alpha1" {
            return Err(RenderError::WrongKind { index, kind });
        }
        let store: ReplicatedStore =
            serde_yaml::from_value(value).map_err(|source| RenderError::Parse { index, source })?;
        let validated = validate(&store, default_image).map_err(|source| RenderError::Invalid {
            index,
            name: store.metadata.name.clone().unwrap_or_default(),
            source,
        })?;
        out.push_str(&build_all(&validated, validated.replicas()).to_yaml()?);
        rendered += 1;
    }
    if rendered == 0 {
        return Err(RenderError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: rstore.dev/v1alpha1\nkind: ReplicatedStore\nmetadata: {name: demo, namespace: apps}\nspec: {replicas: 3}\n";

    #[test]
    fn renders_all_objects_without_owner() {
        let yaml = render(MANIFEST, Some("rstore:1")).unwrap();
        for name in ["demo-headless", "demo-leader", "demo-read"] {
            assert!(yaml.contains(&format!("name: {name}")), "{name}");
        }
        assert!(yaml.contains("kind: StatefulSet"));
        assert!(!yaml.contains("ownerReferences"));
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 5);
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "apps"));
    }

    #[test]
    fn other_documents_pass_through() {
        let input =
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: pw}}\n---\n{MANIFEST}");
        let yaml = render(&input, Some("i")).unwrap();
        assert!(
            yaml.starts_with("---\napiVersion: v1\nkind: Secret\n"),
            "{yaml}"
        );
        assert_eq!(yaml.matches("---\n").count(), 6);
    }

    #[test]
    fn bad_input_is_explained() {
        let err = render(&MANIFEST.replace("v1alpha1", "v1"), Some("i")).unwrap_err();
        assert!(err.to_string().contains("rstore.dev/v1alpha1"), "{err}");
        let only_other = render("apiVersion: v1\nkind: ConfigMap\n", Some("i"));
        assert!(matches!(only_other, Err(RenderError::Empty)));
        let bad = MANIFEST.replace("replicas: 3", "replicas: 1");
        let err = render(&bad, Some("i")).unwrap_err().to_string();
        assert!(
            err.contains("demo") && err.contains("syncReplicas"),
            "{err}"
        );
        assert!(matches!(render("", Some("i")), Err(RenderError::Empty)));
    }
}
