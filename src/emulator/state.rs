//! The emulator's tenant: clients, secrets (only their SHA-256), tokens, and the rules of
//! docs/cds-api.md that do not depend on HTTP (roles, the 10 cap, expiration rules).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::EmulatorError;

/// The most secrets a client may hold.
pub const MAX_SECRETS: usize = 10;

/// The emulator's seed: one tenant and its clients.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// The tenant id (GUID).
    pub tenant_id: String,
    /// `primary` (default) or `regional` (every identity write answers 405).
    #[serde(default)]
    pub region: Region,
    /// How new secret ids are chosen: `increasing` (default) or `lowest_free`.
    #[serde(default)]
    pub id_policy: IdPolicy,
    /// The tenant's clients.
    #[serde(default)]
    pub clients: Vec<SeedClient>,
}

/// Which region the emulator plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// The primary region: writes are accepted.
    #[default]
    Primary,
    /// A regional URL: writes answer 405.
    Regional,
}

/// How the emulator numbers new secrets. CDS documents ids as int32 and promises no
/// order, so the rotator must work under either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdPolicy {
    /// One more than the highest id ever given to the client.
    #[default]
    Increasing,
    /// The lowest id not in use: a deleted secret's id is handed out again.
    LowestFree,
}

/// The kinds of client CDS has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `ClientCredentialClients`.
    ClientCredentials,
    /// `HybridClients`.
    Hybrid,
    /// PKCE clients: no secrets, no client-credentials tokens.
    AuthorizationCode,
}

/// A client in the seed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedClient {
    /// Client id (GUID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind of client.
    pub kind: Kind,
    /// `tenant_administrator` or nothing (then only "Self").
    #[serde(default)]
    pub roles: Vec<String>,
    /// Access-token lifetime, 60..=3600 s.
    #[serde(default)]
    pub access_token_lifetime: Option<u32>,
    /// Whether the client may get tokens.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Its secrets, with values so that tests can authenticate.
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
}

impl SeedClient {
    /// The kind as the rotator's policy spells it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::ClientCredentials => "client_credentials",
            Kind::Hybrid => "hybrid",
            Kind::AuthorizationCode => "authorization_code",
        }
    }

    fn is_admin(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case("tenant_administrator"))
    }
}

/// A secret in the seed. Its `Debug` leaves the value out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecret {
    /// The value.
    pub value: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// When it stops working.
    #[serde(default)]
    pub expiration: Option<DateTime<Utc>>,
    /// Whether the expiration is enforced.
    #[serde(default)]
    pub expires: Option<bool>,
}

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSecret")
            .field("value", &"<redacted>")
            .field("description", &self.description)
            .field("expiration", &self.expiration)
            .field("expires", &self.expires)
            .finish()
    }
}

impl Seed {
    /// The seed as YAML that [`Seed::from_yaml`] reads back: every key written, text
    /// quoted. It holds secret values: write it where only its owner can read it.
    pub fn to_yaml(&self) -> String {
        // A JSON string is a valid YAML double-quoted scalar.
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let time = |t: &Option<DateTime<Utc>>| {
            t.map_or_else(
                || "null".to_owned(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".to_owned());
        let mut out = format!(
            "tenant_id: {}\nregion: {}\nid_policy: {}\nclients:\n",
            q(&self.tenant_id),
            match self.region {
                Region::Primary => "primary",
                Region::Regional => "regional",
            },
            match self.id_policy {
                IdPolicy::Increasing => "increasing",
                IdPolicy::LowestFree => "lowest_free",
            },
        );
        for c in &self.clients {
            let roles: Vec<String> = c.roles.iter().map(|r| q(r)).collect();
            out.push_str(&format!(
                "  - id: {}\n    name: {}\n    kind: {}\n    roles: [{}]\n    access_token_lifetime: {}\n    enabled: {}\n    secrets:{}\n",
                q(&c.id),
                q(&c.name),
                c.kind_name(),
                roles.join(", "),
                opt(c.access_token_lifetime.map(|l| l.to_string())),
                opt(c.enabled.map(|e| e.to_string())),
                if c.secrets.is_empty() { " []" } else { "" },
            ));
            for s in &c.secrets {
                out.push_str(&format!(
                    "      - value: {}\n        description: {}\n        expiration: {}\n        expires: {}\n",
                    q(&s.value),
                    opt(s.description.as_deref().map(q)),
                    time(&s.expiration),
                    opt(s.expires.map(|e| e.to_string())),
                ));
            }
        }
        out
    }

    /// Parses a YAML seed.
    pub fn from_yaml(text: &str) -> Result<Seed, EmulatorError> {
        let seed: Seed =
            serde_saphyr::from_str(text).map_err(|e| EmulatorError::Seed(e.to_string()))?;
        seed.check()?;
        Ok(seed)
    }

    /// Refuses what CDS could not hold: a token lifetime out of 60..=3600 s, more than
    /// [`MAX_SECRETS`] secrets, secrets on an authorization-code client, a repeated id.
    fn check(&self) -> Result<(), EmulatorError> {
        let mut seen = std::collections::HashSet::new();
        for c in &self.clients {
            let id = c.id.to_ascii_lowercase();
            if !seen.insert(id.clone()) {
                return Err(EmulatorError::Seed(format!("client {id} is seeded twice")));
            }
            if let Some(l) = c.access_token_lifetime
                && !(60..=3600).contains(&l)
            {
                return Err(EmulatorError::Seed(format!(
                    "client {id}: access_token_lifetime {l} is not within 60..=3600 seconds"
                )));
            }
            if c.kind == Kind::AuthorizationCode && !c.secrets.is_empty() {
                return Err(EmulatorError::Seed(format!(
                    "client {id}: authorization_code clients have no secrets"
                )));
            }
            if c.secrets.len() > MAX_SECRETS {
                return Err(EmulatorError::Seed(format!(
                    "client {id}: at most {MAX_SECRETS} secrets per client"
                )));
            }
        }
        Ok(())
    }

    /// The demo tenant: an administrator and three clients to rotate.
    pub fn demo() -> Seed {
        let in_days = |d| Some(Utc::now() + chrono::Duration::days(d));
        let secret = |value: &str, description: &str, days| SeedSecret {
            value: value.to_owned(),
            description: Some(description.to_owned()),
            expiration: in_days(days),
            expires: Some(true),
        };
        let admin_secret = random_value();
        Seed {
            tenant_id: "7a1e0c52-3f6b-4d8a-9c2e-5b4f6a7d8e90".to_owned(),
            region: Region::Primary,
            id_policy: IdPolicy::Increasing,
            clients: vec![
                SeedClient {
                    id: "0d5c2b1a-9e8f-4a7b-8c6d-5e4f3a2b1c0d".to_owned(),
                    name: "cds-rotator-admin".to_owned(),
                    kind: Kind::ClientCredentials,
                    roles: vec!["tenant_administrator".to_owned()],
                    access_token_lifetime: None,
                    enabled: None,
                    secrets: vec![secret(&admin_secret, "rotator credential", 365)],
                },
                SeedClient {
                    id: "3c9a7e15-2b4d-4f6a-8e1c-7d9b5a3f2e10".to_owned(),
                    name: "historian-uploader".to_owned(),
                    kind: Kind::ClientCredentials,
                    roles: Vec::new(),
                    access_token_lifetime: Some(3600),
                    enabled: None,
                    secrets: vec![secret(&random_value(), "created in the portal", 20)],
                },
                SeedClient {
                    id: "5e2f8a94-6c1b-4d3e-9a7f-1b8c4d2e6f30".to_owned(),
                    name: "dashboard-backend".to_owned(),
                    kind: Kind::Hybrid,
                    roles: Vec::new(),
                    access_token_lifetime: None,
                    enabled: None,
                    secrets: Vec::new(),
                },
                SeedClient {
                    id: "8b4d1f27-9a3c-4e5b-8d6f-2c7a9e1b3d50".to_owned(),
                    name: "edge-gateway".to_owned(),
                    kind: Kind::ClientCredentials,
                    roles: Vec::new(),
                    access_token_lifetime: None,
                    enabled: None,
                    secrets: vec![
                        secret(&random_value(), "gateway A", 200),
                        secret(&random_value(), "gateway B", 10),
                    ],
                },
            ],
        }
    }

    /// The first administrator with a seeded secret: (client id, secret value).
    pub fn admin_credentials(&self) -> Option<(String, String)> {
        self.clients
            .iter()
            .filter(|c| c.is_admin())
            .find_map(|c| c.secrets.first().map(|s| (c.id.clone(), s.value.clone())))
    }
}

/// A fresh secret or token value.
pub fn random_value() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(44)
        .map(char::from)
        .collect()
}

fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A secret as the emulator keeps it: never the value, only its SHA-256.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    pub id: i32,
    pub description: Option<String>,
    pub expiration: Option<DateTime<Utc>>,
    pub expires: Option<bool>,
    pub value_sha256: String,
    pub created: Instant,
}

impl StoredSecret {
    fn works_at(&self, now: DateTime<Utc>) -> bool {
        match (self.expires, self.expiration) {
            (Some(false), _) | (_, None) => true,
            (_, Some(at)) => at > now,
        }
    }
}

/// A client as the emulator keeps it.
#[derive(Clone, Debug)]
pub struct StoredClient {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub admin: bool,
    pub enabled: bool,
    pub token_lifetime: u32,
    pub secrets: BTreeMap<i32, StoredSecret>,
    pub next_id: i32,
    pub id_policy: IdPolicy,
}

/// An issued access token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub client_id: String,
    pub expires: Instant,
}

/// Why the token endpoint gave no token. All are `invalid_client`; CDS-like text tells
/// the first two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No client with that id.
    NotFound,
    /// The client is disabled.
    Disabled,
    /// The secret is wrong, expired, not propagated yet, or the client has no secrets.
    BadSecret,
}

impl Denial {
    /// The `error_description` answered, if any.
    pub fn description(self) -> Option<&'static str> {
        match self {
            Denial::NotFound => Some("client not found"),
            Denial::Disabled => Some("client is disabled"),
            Denial::BadSecret => None,
        }
    }
}

/// Why a secret write was refused.
#[derive(Debug)]
pub enum Refusal {
    /// 400 with this reason.
    Invalid(String),
}

/// The tenant.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub regional: bool,
    pub clients: BTreeMap<String, StoredClient>,
    pub tokens: HashMap<String, IssuedToken>,
    pub propagation: Duration,
}

impl Tenant {
    /// Builds the tenant from a seed.
    pub fn from_seed(seed: Seed) -> Result<Tenant, EmulatorError> {
        seed.check()?;
        let mut clients = BTreeMap::new();
        for c in seed.clients {
            let id = c.id.to_ascii_lowercase();
            let mut stored = StoredClient {
                id: id.clone(),
                name: c.name.clone(),
                kind: c.kind,
                admin: c.is_admin(),
                enabled: c.enabled.unwrap_or(true),
                token_lifetime: c.access_token_lifetime.unwrap_or(3600).clamp(60, 3600),
                secrets: BTreeMap::new(),
                next_id: 1,
                id_policy: seed.id_policy,
            };
            for s in c.secrets {
                stored.add(&s.value, s.description, s.expiration, s.expires);
            }
            if clients.insert(id.clone(), stored).is_some() {
                return Err(EmulatorError::Seed(format!("client {id} is seeded twice")));
            }
        }
        Ok(Tenant {
            id: seed.tenant_id.to_ascii_lowercase(),
            regional: seed.region == Region::Regional,
            clients,
            tokens: HashMap::new(),
            propagation: Duration::ZERO,
        })
    }

    /// Issues a token for a client id and secret, or says why not (`invalid_client`).
    pub fn grant(&mut self, client_id: &str, secret: &str) -> Result<(String, u32), Denial> {
        let now = Utc::now();
        let propagation = self.propagation;
        let client = self
            .clients
            .get(&client_id.to_ascii_lowercase())
            .ok_or(Denial::NotFound)?;
        if !client.enabled {
            return Err(Denial::Disabled);
        }
        if client.kind == Kind::AuthorizationCode {
            return Err(Denial::BadSecret);
        }
        let h = hash(secret);
        let ok = client
            .secrets
            .values()
            .any(|s| s.value_sha256 == h && s.works_at(now) && s.created.elapsed() >= propagation);
        if !ok {
            return Err(Denial::BadSecret);
        }
        let token = random_value();
        let lifetime = client.token_lifetime;
        self.tokens.insert(
            hash(&token),
            IssuedToken {
                client_id: client.id.clone(),
                expires: Instant::now() + Duration::from_secs(lifetime.into()),
            },
        );
        Ok((token, lifetime))
    }

    /// The client a bearer token belongs to, if the token is valid.
    pub fn caller(&self, token: &str) -> Option<&StoredClient> {
        let t = self.tokens.get(&hash(token))?;
        if t.expires <= Instant::now() {
            return None;
        }
        self.clients.get(&t.client_id)
    }
}

impl StoredClient {
    /// The id of the next secret, by the tenant's [`IdPolicy`].
    fn allocate_id(&mut self) -> i32 {
        match self.id_policy {
            IdPolicy::Increasing => {
                let id = self.next_id;
                self.next_id += 1;
                id
            }
            IdPolicy::LowestFree => (1..)
                .find(|id| !self.secrets.contains_key(id))
                .unwrap_or(i32::MAX),
        }
    }

    /// Adds a secret without checks (seeding); returns its id.
    pub fn add(
        &mut self,
        value: &str,
        description: Option<String>,
        expiration: Option<DateTime<Utc>>,
        expires: Option<bool>,
    ) -> i32 {
        let id = self.allocate_id();
        self.secrets.insert(
            id,
            StoredSecret {
                id,
                description,
                expiration,
                expires,
                value_sha256: hash(value),
                // Seeded secrets have propagated long ago.
                created: Instant::now()
                    .checked_sub(Duration::from_secs(86_400))
                    .unwrap_or_else(Instant::now),
            },
        );
        id
    }

    /// Creates a secret by the API's rules; returns it and its value.
    pub fn create(
        &mut self,
        description: Option<String>,
        expiration: Option<DateTime<Utc>>,
        expires: Option<bool>,
    ) -> Result<(StoredSecret, String), Refusal> {
        check_expiration(expiration, expires)?;
        if self.secrets.len() >= MAX_SECRETS {
            return Err(Refusal::Invalid(format!(
                "The client already has the maximum of {MAX_SECRETS} secrets."
            )));
        }
        let value = random_value();
        let id = self.allocate_id();
        let secret = StoredSecret {
            id,
            description,
            expiration,
            expires,
            value_sha256: hash(&value),
            created: Instant::now(),
        };
        self.secrets.insert(id, secret.clone());
        Ok((secret, value))
    }

    /// Updates a secret: only the given fields change; the result must follow the rules.
    pub fn update(
        &mut self,
        id: i32,
        description: Option<String>,
        expiration: Option<DateTime<Utc>>,
        expires: Option<bool>,
    ) -> Option<Result<StoredSecret, Refusal>> {
        let current = self.secrets.get(&id)?.clone();
        let mut next = current;
        if description.is_some() {
            next.description = description;
        }
        if expiration.is_some() {
            next.expiration = expiration;
        }
        if expires.is_some() {
            next.expires = expires;
        }
        if let Err(e) = check_expiration(next.expiration, next.expires) {
            return Some(Err(e));
        }
        self.secrets.insert(id, next.clone());
        Some(Ok(next))
    }
}

/// The Expires/Expiration rules of docs/cds-api.md.
fn check_expiration(
    expiration: Option<DateTime<Utc>>,
    expires: Option<bool>,
) -> Result<(), Refusal> {
    match (expires, expiration) {
        (Some(false), Some(_)) => Err(Refusal::Invalid(
            "Expiration cannot be set when Expires is false.".to_owned(),
        )),
        (Some(true) | None, None) => Err(Refusal::Invalid(
            "Expiration is required unless Expires is false.".to_owned(),
        )),
        (_, Some(at)) if at <= Utc::now() => Err(Refusal::Invalid(
            "Expiration must be in the future.".to_owned(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id_policy: IdPolicy) -> StoredClient {
        let far = Some(Utc::now() + chrono::Duration::days(30));
        let mut c = StoredClient {
            id: "c".into(),
            name: "c".into(),
            kind: Kind::ClientCredentials,
            admin: false,
            enabled: true,
            token_lifetime: 3600,
            secrets: BTreeMap::new(),
            next_id: 1,
            id_policy,
        };
        for _ in 0..3 {
            c.create(None, far, Some(true)).map_err(|_| ()).unwrap();
        }
        c.secrets.remove(&1);
        c.secrets.remove(&2);
        c
    }

    #[test]
    fn a_seed_written_as_yaml_reads_back_the_same() {
        let mut seed = Seed::demo();
        seed.region = Region::Regional;
        seed.id_policy = IdPolicy::LowestFree;
        seed.clients[1].enabled = Some(false);
        seed.clients[1].secrets[0].description = Some("quote \" and\nnewline: #x".into());
        seed.clients[1].secrets.push(SeedSecret {
            value: "v: 'tricky' \"value\"".into(),
            description: None,
            expiration: None,
            expires: Some(false),
        });
        seed.clients.push(SeedClient {
            id: "9b0c1d2e-3f40-4152-6374-8596a7b8c9d0".into(),
            name: "spa".into(),
            kind: Kind::AuthorizationCode,
            roles: Vec::new(),
            access_token_lifetime: Some(60),
            enabled: Some(true),
            secrets: Vec::new(),
        });
        // The YAML holds whole seconds.
        for c in &mut seed.clients {
            for s in &mut c.secrets {
                s.expiration = s
                    .expiration
                    .map(|t| DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t));
            }
        }
        let yaml = seed.to_yaml();
        assert_eq!(Seed::from_yaml(&yaml).unwrap(), seed, "{yaml}");
    }

    #[test]
    fn a_seed_secrets_debug_leaves_the_value_out() {
        let seed = Seed::demo();
        let (_, value) = seed.admin_credentials().unwrap();
        let debug = format!("{seed:?}");
        assert!(!debug.contains(&value));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn ids_increase_or_reuse_the_lowest_free_one_by_policy() {
        let far = Some(Utc::now() + chrono::Duration::days(30));
        let mut c = client(IdPolicy::Increasing);
        assert_eq!(
            c.create(None, far, Some(true))
                .map_err(|_| ())
                .unwrap()
                .0
                .id,
            4
        );
        let mut c = client(IdPolicy::LowestFree);
        assert_eq!(
            c.create(None, far, Some(true))
                .map_err(|_| ())
                .unwrap()
                .0
                .id,
            1
        );
        assert_eq!(
            c.create(None, far, Some(true))
                .map_err(|_| ())
                .unwrap()
                .0
                .id,
            2
        );
        assert_eq!(
            c.create(None, far, Some(true))
                .map_err(|_| ())
                .unwrap()
                .0
                .id,
            4
        );
    }
}
