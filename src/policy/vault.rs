//! The `vault` store in the policy: HashiCorp Vault or OpenBao KV v2, as declared and
//! as validated (address, mount, namespace, how the rotator logs in, secret paths).
//!
//! Tokens, AppRole secret ids and Kubernetes JWTs are never taken from the policy
//! itself, only from an environment variable or a file. Not here: talking to Vault
//! (that is `store::vault`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Location;

use super::{
    ClientPolicy, ConnectSettings, SecretSource, StoreSpec, Validator, is_env_name, is_file_path,
    resolve,
};
use crate::domain::service_url::{ServiceUrl, UrlProblem};

/// Where a Kubernetes pod's service-account token is mounted.
pub const KUBERNETES_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A Vault (or OpenBao) KV v2 store as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSpec {
    /// `https://host:port` (plain http only to loopback), without a trailing slash.
    pub address: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    address: String,
    #[serde(default)]
    mount: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    auth: RawVaultAuth,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
enum RawVaultAuth {
    Token {
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Only to refuse it: the value is never kept.
        #[serde(default)]
        token: Option<IgnoredAny>,
    },
    Approle {
        #[serde(default)]
        mount: Option<String>,
        #[serde(default)]
        role_id: Option<String>,
        #[serde(default)]
        role_id_file: Option<PathBuf>,
        #[serde(default)]
        secret_id_file: Option<PathBuf>,
        /// Only to refuse it: the value is never kept.
        #[serde(default)]
        secret_id: Option<IgnoredAny>,
    },
    Kubernetes {
        #[serde(default)]
        mount: Option<String>,
        role: String,
        #[serde(default)]
        jwt_file: Option<PathBuf>,
        /// Only to refuse it: the value is never kept.
        #[serde(default)]
        jwt: Option<IgnoredAny>,
    },
}

/// One Vault secret as a collision key: address, namespace, mount, secret path.
pub(super) type VaultSlot = (String, Option<String>, String, String);

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

impl Validator {
    /// Checks a `type: vault` store declared at `at`. Parts found wrong are reported and
    /// left empty (the policy is refused then), so clients still see the store declared.
    pub(super) fn vault_store(
        &mut self,
        at: Location,
        name: &str,
        base: &Path,
        raw: RawVault,
    ) -> StoreSpec {
        let address = self.vault_address(at, name, &raw.address);
        let mount = raw.mount.unwrap_or_else(|| "secret".to_owned());
        if !is_secret_path(&mount) {
            self.problem(
                at,
                format!("store `{name}`: mount `{mount}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (e.g. secret)"),
            );
        }
        if let Some(ns) = &raw.namespace
            && !is_secret_path(ns)
        {
            self.problem(
                at,
                format!("store `{name}`: namespace `{ns}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (e.g. admin/team)"),
            );
        }
        let auth = self.vault_auth(at, name, base, raw.auth);
        StoreSpec::Vault(VaultSpec {
            address: address.unwrap_or_default(),
            mount,
            namespace: raw.namespace,
            auth: auth.unwrap_or(VaultAuth::Token(SecretSource::Env(String::new()))),
        })
    }

    fn vault_address(&mut self, at: Location, name: &str, text: &str) -> Option<String> {
        let text = text.trim().trim_end_matches('/');
        let url = match ServiceUrl::parse(text) {
            Ok(url) => url,
            Err(UrlProblem::NotAUrl | UrlProblem::NoHost) => {
                self.problem(
                    at,
                    format!("store `{name}`: address `{text}` is not a URL; use e.g. https://vault.example.com:8200"),
                );
                return None;
            }
            Err(UrlProblem::PlainHttp { .. }) => {
                self.problem(
                    at,
                    format!("store `{name}`: address `{text}` uses plain http to a non-loopback host; the secrets would travel unencrypted: use https"),
                );
                return None;
            }
            Err(UrlProblem::Scheme(other)) => {
                self.problem(
                    at,
                    format!("store `{name}`: address scheme `{other}` is not supported; use https"),
                );
                return None;
            }
        };
        let url = url.url();
        if url.path() != "/" && !url.path().is_empty()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            self.problem(
                at,
                format!("store `{name}`: address must be only scheme, host and port (like https://vault:8200), without a path, user, query or fragment"),
            );
            return None;
        }
        Some(text.to_owned())
    }

    fn vault_auth(
        &mut self,
        at: Location,
        name: &str,
        base: &Path,
        raw: RawVaultAuth,
    ) -> Option<VaultAuth> {
        match raw {
            RawVaultAuth::Token {
                token_env,
                token_file,
                token,
            } => {
                if token.is_some() {
                    self.problem(
                        at,
                        format!("store `{name}`: a plaintext token in the policy is refused: put it in a file readable only by cds-rotator and set auth.token_file, or set auth.token_env"),
                    );
                    return None;
                }
                match (token_env, token_file) {
                    (Some(env), None) => self
                        .vault_env(at, name, "auth.token_env", &env)
                        .map(|e| VaultAuth::Token(SecretSource::Env(e))),
                    (None, Some(file)) => self
                        .vault_file(at, name, "auth.token_file", base, &file)
                        .map(|f| VaultAuth::Token(SecretSource::File(f))),
                    _ => {
                        self.problem(
                            at,
                            format!("store `{name}`: auth method token needs exactly one of token_env (a variable name) or token_file (a path)"),
                        );
                        None
                    }
                }
            }
            RawVaultAuth::Approle {
                mount,
                role_id,
                role_id_file,
                secret_id_file,
                secret_id,
            } => {
                if secret_id.is_some() {
                    self.problem(
                        at,
                        format!("store `{name}`: a plaintext secret_id in the policy is refused: put it in a file readable only by cds-rotator and set auth.secret_id_file"),
                    );
                    return None;
                }
                let mount = self.auth_mount(at, name, mount, "approle");
                let role_id = match (role_id, role_id_file) {
                    (Some(id), None) if is_role(&id) => Some(RoleId::Value(id)),
                    (Some(_), None) => {
                        self.problem(
                            at,
                            format!("store `{name}`: auth.role_id must be letters, digits, `-`, `_`, `.` (at most 200); the value given is not shown"),
                        );
                        None
                    }
                    (None, Some(file)) => self
                        .vault_file(at, name, "auth.role_id_file", base, &file)
                        .map(RoleId::File),
                    _ => {
                        self.problem(
                            at,
                            format!("store `{name}`: auth method approle needs exactly one of role_id or role_id_file"),
                        );
                        None
                    }
                };
                let secret_id_file = match secret_id_file {
                    Some(file) => self.vault_file(at, name, "auth.secret_id_file", base, &file),
                    None => {
                        self.problem(
                            at,
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
            RawVaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
                jwt,
            } => {
                if jwt.is_some() {
                    self.problem(
                        at,
                        format!("store `{name}`: a plaintext jwt in the policy is refused: leave it out (the pod's service-account token is read from {KUBERNETES_JWT}) or set auth.jwt_file"),
                    );
                    return None;
                }
                let mount = self.auth_mount(at, name, mount, "kubernetes");
                if !is_role(&role) {
                    self.problem(
                        at,
                        format!("store `{name}`: auth.role `{role}` must be letters, digits, `-`, `_`, `.`"),
                    );
                }
                let jwt_file = match jwt_file {
                    Some(file) => self.vault_file(at, name, "auth.jwt_file", base, &file),
                    None => Some(PathBuf::from(KUBERNETES_JWT)),
                };
                Some(VaultAuth::Kubernetes {
                    mount: mount?,
                    role: is_role(&role).then_some(role)?,
                    jwt_file: jwt_file?,
                })
            }
        }
    }

    fn auth_mount(
        &mut self,
        at: Location,
        name: &str,
        mount: Option<String>,
        default: &str,
    ) -> Option<String> {
        let mount = mount.unwrap_or_else(|| default.to_owned());
        if is_secret_path(&mount) {
            Some(mount)
        } else {
            self.problem(
                at,
                format!("store `{name}`: auth.mount `{mount}` must be path segments of letters, digits, `-`, `_`, `.` (e.g. {default})"),
            );
            None
        }
    }

    fn vault_env(&mut self, at: Location, name: &str, key: &str, env: &str) -> Option<String> {
        if is_env_name(env) {
            Some(env.to_owned())
        } else {
            self.problem(
                at,
                format!("store `{name}`: {key} must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit, at most 128 characters); the value given is not shown, in case it is the token itself"),
            );
            None
        }
    }

    fn vault_file(
        &mut self,
        at: Location,
        name: &str,
        key: &str,
        base: &Path,
        file: &Path,
    ) -> Option<PathBuf> {
        if is_file_path(file) {
            Some(resolve(base, file))
        } else {
            self.problem(
                at,
                format!("store `{name}`: {key} must be the PATH of a file: absolute, or relative to the policy's directory and starting with ./ or ../; the value given is not shown, in case it is the secret itself"),
            );
            None
        }
    }

    /// Two clients must never write one Vault secret (the second publish would replace
    /// the first client's value), and the rotator's own client cannot be rotated into
    /// Vault: the rotator reads its own credential from a file, so retiring the old
    /// secret would lock it out.
    pub(super) fn vault_slot(
        &mut self,
        at: Location,
        c: &ClientPolicy,
        spec: &VaultSpec,
        connect: Option<&ConnectSettings>,
        written: &mut BTreeMap<VaultSlot, (String, String)>,
    ) {
        let slot = (
            spec.address.clone(),
            spec.namespace.clone(),
            spec.mount.clone(),
            c.secret.clone(),
        );
        if let Some((client, store)) = written.get(&slot) {
            self.problem(
                at,
                format!(
                    "client `{}` would write vault secret {}/{} of store `{}`, which client `{}` writes too (store `{store}`); they would overwrite each other's secret: give one of them another secret name",
                    c.name, spec.mount, c.secret, c.store, client
                ),
            );
        } else {
            written.insert(slot, (c.name.clone(), c.store.clone()));
        }
        if connect.is_some_and(|conn| {
            conn.client_id == c.client_id && !super::reads_own_credential(conn, c)
        }) {
            self.problem(
                at,
                format!(
                    "client `{}` is the rotator's own client, but the rotator does not read its credential from where it is published: retiring the old secret would lock it out; set connect.credentials.client_secret_store to {{ name: {}, secret: {} }}",
                    c.name, c.store, c.secret
                ),
            );
        }
    }

    /// Checks a client's secret path in a vault store.
    pub(super) fn vault_secret(&mut self, at: Location, client: &str, store: &str, secret: &str) {
        if !is_secret_path(secret) {
            self.problem(
                at,
                format!(
                    "client `{client}`: secret `{secret}` in vault store `{store}` must be path segments of letters, digits, `-`, `_`, `.` separated by `/` (like cds/app), without `..`, at most 200 characters"
                ),
            );
        }
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
    use super::super::Policy;
    use super::*;

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

    fn parse(text: &str) -> Result<Policy, super::super::PolicyError> {
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
                address: "https://vault:8200".into(),
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
