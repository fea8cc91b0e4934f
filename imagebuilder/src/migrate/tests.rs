use super::*;

fn target() -> Target {
    Target {
        registry: "dhi.io".into(),
        namespace: None,
        tag: None,
        image: None,
        pull_secrets: vec![],
    }
}

#[test]
fn operator_gets_the_pilot_image_and_nothing_else() {
    let text = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  # upstream\n  hub: docker.io/istio\n  tag: 1.24.2-distroless\n";
    let m = migrate_text("iop.yaml", text, &target()).unwrap();
    assert_eq!(
        m.after,
        format!("{text}  values:\n    pilot:\n      image: dhi.io/istio-pilot:1.24.2\n")
    );
    assert!(m.findings.is_empty());
}

#[test]
fn mirror_naming_and_pull_secrets_in_values() {
    let text = "pilot:\n  tag: 1.28.0 # pinned\nglobal:\n  hub: gcr.io/istio-release\n";
    let t = Target {
        registry: "registry.example.com".into(),
        namespace: Some("platform".into()),
        pull_secrets: vec!["mirror".into()],
        ..target()
    };
    let m = migrate_text("values.yaml", text, &t).unwrap();
    assert_eq!(
        m.after,
        "pilot:\n  tag: 1.28.0 # pinned\n  image: registry.example.com/platform/dhi-istio-pilot:1.28.0\nglobal:\n  hub: gcr.io/istio-release\n  imagePullSecrets:\n    - mirror\n"
    );
}

#[test]
fn missing_tag_is_an_error_naming_the_places_looked() {
    let err = migrate_text("v.yaml", "global:\n  hub: x\n", &target())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.starts_with("v.yaml: no image tag found"), "{err}");
    assert!(err.contains("pilot.tag"), "{err}");
}

#[test]
fn shell_command_is_a_blocker() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: istiod\nspec:\n  template:\n    spec:\n      containers:\n        - name: discovery\n          image: docker.io/istio/pilot:1.24.2\n          command: [sh, -c, 'pilot-discovery discovery']\n";
    let m = migrate_text("d.yaml", text, &target()).unwrap();
    assert!(m.after.contains("image: dhi.io/istio-pilot:1.24.2\n"));
    let paths: Vec<_> = m
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        paths.contains(&"spec.template.spec.containers[name=discovery].command"),
        "{paths:?}"
    );
    assert!(m
        .diff()
        .contains("-          image: docker.io/istio/pilot:1.24.2"));
}

#[test]
fn unrecognised_documents_are_refused() {
    let err = migrate_text("cm.yaml", "kind: ConfigMap\napiVersion: v1\n", &target())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("cm.yaml: no istiod Deployment, IstioOperator or Helm values found")
    );
}
