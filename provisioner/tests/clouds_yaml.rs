//! The provisioner configured the way OpenStack operators configure their CLI, against the real lab
//! (`testnet/openstack/up.sh`, started if it does not answer): a clouds.yaml written by the test (password;
//! an application credential the test creates through Keystone, its secret in secure.yaml), the `OS_*`
//! variables. All of it over https: the lab's Keystone and its catalog's public endpoints are served with
//! a certificate of the lab's own CA, which clouds.yaml names as `cacert` (or `OS_CACERT`).
//!
//! Invariants: the environment reaches the resolution only through the closure each test passes (the
//! process environment is never read or changed, so parallel tests do not see each other's variables);
//! every clouds.yaml is found through `OS_CLIENT_CONFIG_FILE`, never in a shared directory; application
//! credentials are deleted by the janitor.

mod support;

use std::collections::HashMap;
use std::path::Path;

use support::{setup, Ctx};
use xov_provisioner::{
    Auth, OpenStackConfig, OpenStackProvisioner, OpenStackSettings, ProvisionError,
};

/// `[provider.openstack]` with only a cloud's name and what never comes from clouds.yaml.
fn settings(cloud: Option<&str>) -> OpenStackSettings {
    let mut toml = String::from(
        "network = \"none\"\nboot_timeout = 90\nrequest_timeout = 15\n\
         [retry]\nattempts = 3\ninitial_delay = 0.1\nmax_delay = 0.5\n",
    );
    if let Some(c) = cloud {
        toml.insert_str(0, &format!("cloud = \"{c}\"\n"));
    }
    toml::from_str(&toml).unwrap()
}

/// Resolves with exactly these variables (nothing from the process environment).
fn resolve(
    s: &OpenStackSettings,
    vars: &[(&str, String)],
) -> xov_provisioner::Result<OpenStackConfig> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    s.resolve_with(|k| vars.get(k).cloned())
}

fn config_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Authenticates, finds Nova and Glance in the catalog and agrees on a microversion: the whole
/// connection works. Exactly one token was issued for it.
async fn connects(ctx: &Ctx, cfg: OpenStackConfig) {
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    assert_eq!(p.check().await.unwrap(), "2.90");
    assert_eq!(p.keystone_authentications(), 1);
}

#[tokio::test]
async fn password_from_a_generated_clouds_yaml() {
    let Some(ctx) = setup("password_from_a_generated_clouds_yaml").await else {
        return;
    };
    let lab = &ctx.lab;
    let dir = tempfile::tempdir().unwrap();
    let clouds = config_file(
        dir.path(),
        "clouds.yaml",
        &format!(
            "clouds:\n  lab:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      \
             project_name: {}\n      user_domain_name: {}\n      project_domain_name: {}\n    \
             region_name: {}\n    interface: public\n    identity_api_version: 3\n    cacert: {}\n",
            lab.auth_url,
            lab.username,
            lab.password,
            lab.project_name,
            lab.user_domain,
            lab.project_domain,
            lab.region,
            lab.cacert.display()
        ),
    );
    let env = [("OS_CLIENT_CONFIG_FILE", clouds.clone())];

    // named in [provider.openstack]
    let cfg = resolve(&settings(Some("lab")), &env).unwrap();
    assert_eq!(cfg.auth_url, lab.auth_url);
    assert!(cfg.auth_url.starts_with("https://"), "{}", cfg.auth_url);
    assert_eq!(cfg.cacert.as_deref(), Some(lab.cacert.as_path()));
    assert_eq!(cfg.region.as_deref(), Some(lab.region.as_str()));
    assert!(matches!(cfg.auth, Auth::Password { .. }));
    connects(&ctx, cfg).await;

    // or by OS_CLOUD, with nothing in [provider.openstack] but the network
    let cfg = resolve(
        &settings(None),
        &[
            ("OS_CLIENT_CONFIG_FILE", clouds.clone()),
            ("OS_CLOUD", "lab".into()),
        ],
    )
    .unwrap();
    connects(&ctx, cfg).await;

    // a wrong password in clouds.yaml is Keystone's refusal, not a configuration error
    let wrong = config_file(
        dir.path(),
        "wrong.yaml",
        &std::fs::read_to_string(&clouds).unwrap().replace(
            &format!("password: {}", lab.password),
            "password: not-the-password",
        ),
    );
    let cfg = resolve(&settings(Some("lab")), &[("OS_CLIENT_CONFIG_FILE", wrong)]).unwrap();
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let err = p.check().await.unwrap_err();
    assert!(
        matches!(err, ProvisionError::Auth { status: 401, .. }),
        "{err:?}"
    );

    // a cloud that is not there: the error names the file that was read
    let err = resolve(&settings(Some("elsewhere")), &env).unwrap_err();
    assert!(
        matches!(err, ProvisionError::CloudNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&clouds), "{err}");
}

#[tokio::test]
async fn application_credential_from_clouds_yaml_and_os_variables() {
    let Some(ctx) = setup("application_credential_from_clouds_yaml_and_os_variables").await else {
        return;
    };
    let name = format!("xov-clouds-{}", &support::lease_id()[..12]);
    let (id, secret) = ctx.raw.create_app_cred(&name).await;
    ctx.janitor.app_cred(&id);
    let lab = &ctx.lab;
    let dir = tempfile::tempdir().unwrap();
    // the id in clouds.yaml, the secret in secure.yaml beside it (merged)
    let clouds = config_file(
        dir.path(),
        "clouds.yaml",
        &format!(
            "clouds:\n  lab-ac:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      \
             application_credential_id: {id}\n    region_name: {}\n    cacert: {}\n",
            lab.auth_url,
            lab.region,
            lab.cacert.display()
        ),
    );
    let secure = config_file(
        dir.path(),
        "secure.yaml",
        &format!("clouds:\n  lab-ac:\n    auth:\n      application_credential_secret: {secret}\n"),
    );
    let with_secure = [
        ("OS_CLIENT_CONFIG_FILE", clouds.clone()),
        ("OS_CLIENT_SECURE_FILE", secure),
    ];
    let cfg = resolve(&settings(Some("lab-ac")), &with_secure).unwrap();
    assert!(matches!(&cfg.auth, Auth::ApplicationCredential { id: i, .. } if *i == id));
    assert!(
        !format!("{cfg:?}").contains(&secret),
        "the secret stays out of Debug"
    );
    connects(&ctx, cfg).await;

    // without secure.yaml the secret is missing, and the error says which setting and where
    let err = resolve(
        &settings(Some("lab-ac")),
        &[
            ("OS_CLIENT_CONFIG_FILE", clouds),
            ("OS_CLIENT_SECURE_FILE", "/nonexistent/secure.yaml".into()),
        ],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("auth.application_credential_secret is missing from cloud 'lab-ac'"),
        "{msg}"
    );

    // the same credential from OS_* variables, by id and then by name (with its owner)
    let base = [
        ("OS_AUTH_URL", lab.auth_url.clone()),
        ("OS_AUTH_TYPE", "v3applicationcredential".into()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.clone()),
        ("OS_REGION_NAME", lab.region.clone()),
        ("OS_CACERT", lab.cacert.display().to_string()),
    ];
    let mut by_id = base.to_vec();
    by_id.push(("OS_APPLICATION_CREDENTIAL_ID", id.clone()));
    connects(&ctx, resolve(&settings(None), &by_id).unwrap()).await;
    let mut by_name = base.to_vec();
    by_name.extend([
        ("OS_APPLICATION_CREDENTIAL_NAME", name.clone()),
        ("OS_USERNAME", lab.username.clone()),
        ("OS_USER_DOMAIN_NAME", lab.user_domain.clone()),
    ]);
    let cfg = resolve(&settings(None), &by_name).unwrap();
    assert!(matches!(cfg.auth, Auth::ApplicationCredentialByName { .. }));
    connects(&ctx, cfg).await;

    // and a password from OS_* variables, as the lab's admin-openrc sets them
    let openrc = [
        ("OS_AUTH_URL", lab.auth_url.clone()),
        ("OS_USERNAME", lab.username.clone()),
        ("OS_PASSWORD", lab.password.clone()),
        ("OS_PROJECT_NAME", lab.project_name.clone()),
        ("OS_USER_DOMAIN_NAME", lab.user_domain.clone()),
        ("OS_PROJECT_DOMAIN_NAME", lab.project_domain.clone()),
        ("OS_REGION_NAME", lab.region.clone()),
        ("OS_CACERT", lab.cacert.display().to_string()),
    ];
    connects(&ctx, resolve(&settings(None), &openrc).unwrap()).await;
}

#[tokio::test]
async fn https_keystone_with_the_clouds_cacert() {
    let Some(ctx) = setup("https_keystone_with_the_clouds_cacert").await else {
        return;
    };
    let lab = &ctx.lab;
    let dir = tempfile::tempdir().unwrap();
    let entry = |name: &str, cacert: &str| {
        format!(
            "  {name}:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      \
             project_name: {}\n    region_name: {}\n{cacert}",
            lab.auth_url, lab.username, lab.password, lab.project_name, lab.region
        )
    };
    let clouds = config_file(
        dir.path(),
        "clouds.yaml",
        &format!(
            "clouds:\n{}{}",
            entry(
                "lab-tls",
                &format!("    cacert: {}\n", lab.cacert.display())
            ),
            entry("lab-tls-nocacert", "")
        ),
    );
    let env = [("OS_CLIENT_CONFIG_FILE", clouds)];

    // with the CA file: authenticated over https, and Nova and Glance found at the catalog's https endpoints
    let cfg = resolve(&settings(Some("lab-tls")), &env).unwrap();
    assert!(cfg.auth_url.starts_with("https://"), "{}", cfg.auth_url);
    assert_eq!(cfg.cacert.as_deref(), Some(lab.cacert.as_path()));
    connects(&ctx, cfg).await;

    // without it: the system's roots do not know the lab's CA; a clear error at once, not retries
    let cfg = resolve(&settings(Some("lab-tls-nocacert")), &env).unwrap();
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let err = p.check().await.unwrap_err();
    match &err {
        ProvisionError::Tls { service, url, .. } => {
            assert_eq!(*service, "identity");
            assert!(url.starts_with(&lab.auth_url), "{url}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("not trusted") && msg.contains("cacert"),
        "{msg}"
    );
    assert!(err.is_config_error() && !err.is_transient());
    assert_eq!(p.keystone_authentications(), 0);

    // a CA file that is not one: refused when the provisioner is built, naming the file
    let not_pem = config_file(dir.path(), "not-a-ca.pem", "hello\n");
    let mut cfg = resolve(&settings(Some("lab-tls")), &env).unwrap();
    cfg.cacert = Some(not_pem.clone().into());
    let err = OpenStackProvisioner::new(cfg.clone(), ctx.mapping())
        .err()
        .expect("a bad CA file is refused");
    assert!(matches!(err, ProvisionError::CaFile { .. }), "{err:?}");
    assert!(err.to_string().contains(&not_pem), "{err}");
    cfg.cacert = Some(dir.path().join("missing.pem"));
    let err = OpenStackProvisioner::new(cfg, ctx.mapping())
        .err()
        .expect("a missing CA file is refused");
    assert!(matches!(err, ProvisionError::CaFile { .. }), "{err:?}");
}
