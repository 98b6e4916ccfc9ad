//! The `vault` store in the policy: HashiCorp Vault or OpenBao KV v2, as declared and
//! as validated (address, mount, namespace, how the rotator logs in, secret paths).
//!
//! Tokens, AppRole secret ids and Kubernetes JWTs are never taken from the policy
//! itself, only from an environment variable or a file. Not here: talking to Vault
//! (that is `store::vault`), or the rules every store shares (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::VaultStore;
use crate::domain::SecretSource;
use crate::domain::service_url::{ServiceUrl, UrlProblem};
use crate::schema::tree::Map;
use crate::schema::{Entry, Key, Kinds, Shape, is_env_name, is_file_path};
use crate::store::SecretStore;
use crate::store::registry::{Backend, Claim, Declared, OwnCredential, Slot, Wiring};

/// Where a Kubernetes pod's service-account token is mounted.
pub const KUBERNETES_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A Vault (or OpenBao) KV v2 store as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSpec {
    /// `https://host:port` (plain http only to loopback), without a trailing slash:
    /// only scheme, host and port.
    pub address: ServiceUrl,
    /// The KV v2 mount (default `secret`).
    pub mount: String,
    /// Sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// How the rotator gets its Vault token.
    pub auth: VaultAuth,
}

/// How the rotator gets its Vault token. Every credential comes from a file or the
/// environment; files are absolute, resolved against the policy's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token, read at each use from a variable or a file (so it can be replaced).
    Token(SecretSource),
    /// AppRole login at `auth/{mount}/login`.
    AppRole {
        /// The auth mount (default `approle`).
        mount: String,
        /// The role id (not a secret), or the file holding it.
        role_id: RoleId,
        /// The file holding the secret id.
        secret_id_file: PathBuf,
    },
    /// Kubernetes login at `auth/{mount}/login` with the pod's service-account JWT.
    Kubernetes {
        /// The auth mount (default `kubernetes`).
        mount: String,
        /// The Vault role.
        role: String,
        /// The file holding the JWT.
        jwt_file: PathBuf,
    },
}

/// An AppRole role id: written in the policy (it is not a secret) or read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleId {
    /// The role id itself.
    Value(String),
    /// A file holding it.
    File(PathBuf),
}

/// A Vault secret path: segments of letters, digits, `-`, `_`, `.` joined by `/`, none
/// empty, `.` or `..`; at most 200 characters.
pub fn is_secret_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 200
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

const TOKEN_KEYS: &[Key] = &[
    Key::optional(
        "token_env",
        Shape::Value,
        "the NAME of a variable holding the token",
    ),
    Key::optional("token_file", Shape::Value, "a file holding the token"),
    Key::optional("token", Shape::Any, "nothing: use token_env or token_file"),
];

const APPROLE_KEYS: &[Key] = &[
    Key::optional("mount", Shape::Value, "the auth method's mount"),
    Key::optional("role_id", Shape::Value, "the AppRole role id"),
    Key::optional(
        "role_id_file",
        Shape::Value,
        "a file holding the AppRole role id",
    ),
    Key::optional(
        "secret_id_file",
        Shape::Value,
        "a file holding the AppRole secret id",
    ),
    Key::optional("secret_id", Shape::Any, "nothing: use secret_id_file"),
];

const KUBERNETES_KEYS: &[Key] = &[
    Key::optional("mount", Shape::Value, "the auth method's mount"),
    Key::required("role", Shape::Value, "the Kubernetes auth role"),
    Key::optional("jwt_file", Shape::Value, "the service-account token file"),
    Key::optional("jwt", Shape::Any, "nothing: use jwt_file"),
];

/// The login methods of a vault store's `auth:`, by `method:`, each with its keys.
const AUTH: Kinds = Kinds {
    what: "Vault auth",
    tag: "method",
    types: &[
        ("token", TOKEN_KEYS),
        ("approle", APPROLE_KEYS),
        ("kubernetes", KUBERNETES_KEYS),
    ],
};

impl Declared for VaultSpec {
    const KEYS: &'static [Key] = &[
        Key::required(
            "address",
            Shape::Value,
            "the Vault or OpenBao base URL, like https://vault:8200",
        ),
        Key::optional("mount", Shape::Value, "the KV v2 mount, default secret"),
        Key::optional("namespace", Shape::Value, "a Vault namespace, like team-a"),
        Key::required(
            "auth",
            Shape::Typed(&AUTH),
            "how to log in, like { method: token, token_env: VAULT_TOKEN }",
        ),
    ];

    /// Parts found wrong are reported and left empty (the policy is refused then), so
    /// clients still see the store declared.
    fn parse(entry: &mut Entry<'_>) -> VaultSpec {
        let (name, f) = (entry.name, entry.fields);
        let address = f.text("address").and_then(|a| vault_address(entry, &a));
        let mount = f.text("mount");
        let at = mount.as_ref().map_or(entry.at, |m| m.referenced);
        let mount = mount.map_or_else(|| "secret".to_owned(), |m| m.value);
        if !is_secret_path(&mount) {
            entry.problem_at(at, format!("store `{name}`: mount `{mount}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (e.g. secret)"),
            );
        }
        let namespace = f.text("namespace");
        if let Some(ns) = &namespace
            && !is_secret_path(&ns.value)
        {
            let ns_at = ns.referenced;
            let ns = &ns.value;
            entry.problem_at(ns_at, format!("store `{name}`: namespace `{ns}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (e.g. admin/team)"),
            );
        }
        let auth = f
            .typed("auth")
            .and_then(|(method, keys)| vault_auth(entry, method, keys));
        VaultSpec {
            address: address.unwrap_or_else(refused_address),
            mount,
            namespace: namespace.map(|n| n.value),
            auth: auth.unwrap_or(VaultAuth::Token(SecretSource::Env(String::new()))),
        }
    }
}

/// Stands for a refused address in the spec returned anyway: the policy is refused then,
/// so nothing is sent there (and `.invalid` never resolves).
const REFUSED_ADDRESS: &str = "https://refused.invalid";

/// [`REFUSED_ADDRESS`], a constant the https rule accepts (a test checks it).
fn refused_address() -> ServiceUrl {
    match ServiceUrl::parse(REFUSED_ADDRESS) {
        Ok(url) => url,
        Err(_) => unreachable!("a constant https URL with a host"),
    }
}

/// The address, parsed once: a service URL of only scheme, host and port.
fn vault_address(entry: &mut Entry<'_>, text: &Spanned<String>) -> Option<ServiceUrl> {
    let name = entry.name;
    let at = text.referenced;
    let text = text.value.trim().trim_end_matches('/');
    let url = match ServiceUrl::parse(text) {
        Ok(url) => url,
        Err(UrlProblem::NotAUrl | UrlProblem::NoHost) => {
            entry.problem_at(at, format!("store `{name}`: address `{text}` is not a URL; use e.g. https://vault.example.com:8200"),
                );
            return None;
        }
        Err(UrlProblem::PlainHttp { .. }) => {
            entry.problem_at(at, format!("store `{name}`: address `{text}` uses plain http to a non-loopback host; the secrets would travel unencrypted: use https"),
                );
            return None;
        }
        Err(UrlProblem::Scheme(other)) => {
            entry.problem_at(
                at,
                format!("store `{name}`: address scheme `{other}` is not supported; use https"),
            );
            return None;
        }
    };
    let u = url.url();
    if u.path() != "/" && !u.path().is_empty()
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        entry.problem_at(at, format!("store `{name}`: address must be only scheme, host and port (like https://vault:8200), without a path, user, query or fragment"),
            );
        return None;
    }
    Some(url)
}

fn vault_auth(entry: &mut Entry<'_>, method: &str, f: Map<'_>) -> Option<VaultAuth> {
    let name = entry.name;
    match method {
        "token" => {
            if let Some(token) = f.get("token") {
                entry.problem_at(token.referenced, format!("store `{name}`: a plaintext token in the policy is refused: put it in a file readable only by cds-rotator and set auth.token_file, or set auth.token_env"),
                    );
                return None;
            }
            match (f.text("token_env"), f.path("token_file")) {
                (Some(env), None) => vault_env(entry, "auth.token_env", &env)
                    .map(|e| VaultAuth::Token(SecretSource::Env(e))),
                (None, Some(file)) => vault_file(entry, "auth.token_file", &file)
                    .map(|f| VaultAuth::Token(SecretSource::File(f))),
                _ => {
                    entry.problem_at(f.at, format!("store `{name}`: auth method token needs exactly one of token_env (a variable name) or token_file (a path)"),
                        );
                    None
                }
            }
        }
        "approle" => {
            if let Some(secret_id) = f.get("secret_id") {
                entry.problem_at(secret_id.referenced, format!("store `{name}`: a plaintext secret_id in the policy is refused: put it in a file readable only by cds-rotator and set auth.secret_id_file"),
                    );
                return None;
            }
            let mount = auth_mount(entry, f, "approle");
            let role_id = match (f.text("role_id"), f.path("role_id_file")) {
                (Some(id), None) if is_role(&id.value) => Some(RoleId::Value(id.value)),
                (Some(id), None) => {
                    entry.problem_at(id.referenced, format!("store `{name}`: auth.role_id must be letters, digits, `-`, `_`, `.` (at most 200); the value given is not shown"),
                        );
                    None
                }
                (None, Some(file)) => {
                    vault_file(entry, "auth.role_id_file", &file).map(RoleId::File)
                }
                _ => {
                    entry.problem_at(f.at, format!("store `{name}`: auth method approle needs exactly one of role_id or role_id_file"),
                        );
                    None
                }
            };
            let secret_id_file = match f.path("secret_id_file") {
                Some(file) => vault_file(entry, "auth.secret_id_file", &file),
                None => {
                    entry.problem_at(
                        f.at,
                        format!(
                            "store `{name}`: auth method approle needs secret_id_file (a path)"
                        ),
                    );
                    None
                }
            };
            Some(VaultAuth::AppRole {
                mount: mount?,
                role_id: role_id?,
                secret_id_file: secret_id_file?,
            })
        }
        _ => {
            if let Some(jwt) = f.get("jwt") {
                entry.problem_at(jwt.referenced, format!("store `{name}`: a plaintext jwt in the policy is refused: leave it out (the pod's service-account token is read from {KUBERNETES_JWT}) or set auth.jwt_file"),
                    );
                return None;
            }
            let mount = auth_mount(entry, f, "kubernetes");
            let role = f.text("role")?;
            if !is_role(&role.value) {
                entry.problem_at(
                    role.referenced,
                    format!(
                        "store `{name}`: auth.role `{}` must be letters, digits, `-`, `_`, `.`",
                        role.value
                    ),
                );
            }
            let jwt_file = match f.path("jwt_file") {
                Some(file) => vault_file(entry, "auth.jwt_file", &file),
                None => Some(PathBuf::from(KUBERNETES_JWT)),
            };
            Some(VaultAuth::Kubernetes {
                mount: mount?,
                role: is_role(&role.value).then_some(role.value)?,
                jwt_file: jwt_file?,
            })
        }
    }
}

fn auth_mount(entry: &mut Entry<'_>, f: Map<'_>, default: &str) -> Option<String> {
    let name = entry.name;
    let (at, mount) = match f.text("mount") {
        Some(m) => (m.referenced, m.value),
        None => (f.at, default.to_owned()),
    };
    if is_secret_path(&mount) {
        Some(mount)
    } else {
        entry.problem_at(at, format!("store `{name}`: auth.mount `{mount}` must be path segments of letters, digits, `-`, `_`, `.` (e.g. {default})"),
            );
        None
    }
}

fn vault_env(entry: &mut Entry<'_>, key: &str, env: &Spanned<String>) -> Option<String> {
    let name = entry.name;
    if is_env_name(&env.value) {
        Some(env.value.clone())
    } else {
        entry.problem_at(env.referenced, format!("store `{name}`: {key} must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit, at most 128 characters); the value given is not shown, in case it is the token itself"),
            );
        None
    }
}

fn vault_file(entry: &mut Entry<'_>, key: &str, file: &Spanned<PathBuf>) -> Option<PathBuf> {
    let name = entry.name;
    if is_file_path(&file.value) {
        Some(entry.resolve(&file.value))
    } else {
        entry.problem_at(file.referenced, format!("store `{name}`: {key} must be the PATH of a file: absolute, or relative to the policy's directory and starting with ./ or ../; the value given is not shown, in case it is the secret itself"),
            );
        None
    }
}

impl Backend for VaultSpec {
    fn secret_name_rule(&self, secret: &str) -> Option<String> {
        (!is_secret_path(secret)).then(|| {
            "must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (like cds/rotator), without `..`, at most 200 characters".to_owned()
        })
    }

    fn client_secret_problem(&self, client: &str, store: &str, secret: &str) -> Option<String> {
        (!is_secret_path(secret)).then(|| {
            format!(
                "client `{client}`: secret `{secret}` in vault store `{store}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (like cds/app), without `..`, at most 200 characters"
            )
        })
    }

    /// One Vault secret: address, namespace, mount, secret path.
    fn slot(&self, secret: &str) -> Slot {
        let namespace = self.namespace.as_deref().map(|n| format!("+{n}"));
        Slot::Service {
            key: format!(
                "vault:{}\n{}\n{}\n{secret}",
                self.address.as_str(),
                namespace.unwrap_or_default(),
                self.mount
            ),
        }
    }

    fn shared(&self, mine: &Claim, other: &Claim) -> String {
        format!(
            "client `{}` would write vault secret {}/{} of store `{}`, which client `{}` writes too (store `{}`); they would overwrite each other's secret: give one of them another secret name",
            mine.client, self.mount, mine.secret, mine.store, other.client, other.store
        )
    }

    /// The rotator reads its own credential from Vault only through
    /// `client_secret_store`.
    fn own_credential(&self) -> OwnCredential {
        OwnCredential::Store {
            from: Some("where it is published"),
        }
    }

    fn credential_files(&self) -> Vec<(&'static str, &Path)> {
        let what = "a vault store's auth";
        match &self.auth {
            VaultAuth::Token(SecretSource::File(p)) => vec![(what, p.as_path())],
            VaultAuth::AppRole {
                role_id,
                secret_id_file,
                ..
            } => {
                let mut files = Vec::new();
                if let RoleId::File(p) = role_id {
                    files.push((what, p.as_path()));
                }
                files.push((what, secret_id_file.as_path()));
                files
            }
            VaultAuth::Kubernetes { jwt_file, .. } => vec![(what, jwt_file.as_path())],
            VaultAuth::Token(_) => Vec::new(),
        }
    }

    fn credential_variables(&self) -> Vec<(&str, &'static str)> {
        match &self.auth {
            VaultAuth::Token(SecretSource::Env(var)) => vec![(var.as_str(), "Vault token")],
            _ => Vec::new(),
        }
    }

    /// Probes with the secrets its clients publish (`with_probe_keys`).
    fn build(&self, name: &str, wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        let keys = wiring
            .publishers
            .iter()
            .map(|(secret, _)| (*secret).to_owned())
            .collect();
        let store = VaultStore::new(name.to_owned(), self.clone(), wiring.request_timeout)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(store.with_probe_keys(keys)))
    }
}

fn is_role(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyError, StoreSpec};

    #[test]
    fn the_refused_address_stand_in_is_a_service_url() {
        assert_eq!(refused_address(), REFUSED_ADDRESS);
    }

    fn policy(store: &str, secret: &str) -> String {
        format!(
            r#"
connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
    client_secret_file: /run/credentials/cds-rotator.service/admin
stores:
  bao: {store}
clients:
  - {{ name: app, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, kind: client_credentials, store: {{ name: bao, secret: {secret} }} }}
"#
        )
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
    }

    #[test]
    fn the_documented_vault_policy_is_accepted() {
        let p = parse(&policy(
            "{ type: vault, address: https://vault:8200, mount: secret, auth: { method: token, token_env: VAULT_TOKEN } }",
            "cds/app",
        ))
        .unwrap();
        assert_eq!(
            p.stores["bao"],
            StoreSpec::Vault(VaultSpec {
                address: ServiceUrl::parse("https://vault:8200").unwrap(),
                mount: "secret".into(),
                namespace: None,
                auth: VaultAuth::Token(SecretSource::Env("VAULT_TOKEN".into())),
            })
        );
        assert_eq!(p.clients[0].secret, "cds/app");
    }

    #[test]
    fn approle_and_kubernetes_files_resolve_against_the_policy_directory() {
        let p = parse(&policy(
            "{ type: vault, address: https://vault:8200, namespace: team, auth: { method: approle, role_id: rotator, secret_id_file: ./approle-secret } }",
            "app",
        ))
        .unwrap();
        let StoreSpec::Vault(spec) = &p.stores["bao"] else {
            panic!("not a vault store")
        };
        assert_eq!(spec.mount, "secret");
        assert_eq!(spec.namespace.as_deref(), Some("team"));
        assert_eq!(
            spec.auth,
            VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: RoleId::Value("rotator".into()),
                secret_id_file: PathBuf::from("/etc/cds-rotator/approle-secret"),
            }
        );
        let p = parse(&policy(
            "{ type: vault, address: https://vault:8200, auth: { method: kubernetes, role: rotator } }",
            "app",
        ))
        .unwrap();
        let StoreSpec::Vault(spec) = &p.stores["bao"] else {
            panic!("not a vault store")
        };
        assert_eq!(
            spec.auth,
            VaultAuth::Kubernetes {
                mount: "kubernetes".into(),
                role: "rotator".into(),
                jwt_file: PathBuf::from(KUBERNETES_JWT),
            }
        );
    }

    #[test]
    fn a_plaintext_vault_token_is_refused_without_echoing_it() {
        let err = parse(&policy(
            "{ type: vault, address: https://vault:8200, auth: { method: token, token: hvs.TOPSECRETVALUE } }",
            "app",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("plaintext token"), "{err}");
        assert!(err.contains("`bao`"), "{err}");
        assert!(!err.contains("TOPSECRETVALUE"), "{err}");
        let err = parse(&policy(
            "{ type: vault, address: https://vault:8200, auth: { method: token, token_env: hvs.TOPSECRETVALUE } }",
            "app",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("token_env"), "{err}");
        assert!(!err.contains("TOPSECRETVALUE"), "{err}");
    }

    #[test]
    fn plain_http_to_a_non_loopback_vault_is_refused() {
        let err = parse(&policy(
            "{ type: vault, address: http://vault:8200, auth: { method: token, token_env: VAULT_TOKEN } }",
            "app",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("store `bao`") && err.contains("use https"),
            "{err}"
        );
        parse(&policy(
            "{ type: vault, address: http://127.0.0.1:8200, auth: { method: token, token_env: VAULT_TOKEN } }",
            "app",
        ))
        .unwrap();
    }

    #[test]
    fn a_bad_vault_secret_path_is_refused_naming_the_store() {
        for bad in ["cds/../app", "/cds/app", "cds//app", "\"cds app\""] {
            let err = parse(&policy(
                "{ type: vault, address: https://vault:8200, auth: { method: token, token_env: VAULT_TOKEN } }",
                bad,
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("vault store `bao`"), "{bad}: {err}");
        }
    }

    #[test]
    fn two_clients_may_not_share_a_vault_secret_and_the_rotator_may_not_rotate_itself_into_vault() {
        let text = policy(
            "{ type: vault, address: https://vault:8200, auth: { method: token, token_env: VAULT_TOKEN } }",
            "cds/app",
        ) + "  - { name: other, client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0, kind: hybrid, store: { name: bao, secret: cds/app } }\n"
            + "  - { name: me, client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d, store: { name: bao, secret: cds/me } }\n";
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("client `other` would write vault secret secret/cds/app"),
            "{err}"
        );
        assert!(
            err.contains("client `me` is the rotator's own client"),
            "{err}"
        );
    }

    #[test]
    fn a_file_store_still_refuses_slashes_in_secret_names() {
        let err = parse(&policy("{ type: file, dir: /var/lib/s }", "cds/app"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("store secret name"), "{err}");
    }
}
