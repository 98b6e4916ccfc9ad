//! The one way the tests write a policy: [`PolicyText`], built section by section from
//! the YAML lines a test gives, in the order given, so that the text (and the line a
//! message points at) is exactly what the test reads. [`super::Env::policy_at`] and
//! [`super::Env::relative_policy`] start one for an environment. Not here: checking a policy (that is the rotator's own job), the
//! policy texts of the message tests that write a broken one on purpose.

/// A policy's text: `connect:` (the URL, the tenant, the credential and any more
/// settings), `lock_dir`, then `stores:`, `notifiers:`, `defaults:` and `clients:`, each
/// left out when empty.
#[derive(Clone, Debug)]
pub struct PolicyText {
    url: String,
    tenant: String,
    credentials: Vec<String>,
    connect: Vec<String>,
    lock_dir: Option<String>,
    stores: Vec<String>,
    notifiers: Vec<String>,
    defaults: Vec<String>,
    clients: Vec<String>,
}

impl PolicyText {
    /// A policy for `tenant` at the CDS `url`, with nothing else yet.
    pub fn new(url: &str, tenant: &str) -> PolicyText {
        PolicyText {
            url: url.to_owned(),
            tenant: tenant.to_owned(),
            credentials: Vec::new(),
            connect: Vec::new(),
            lock_dir: None,
            stores: Vec::new(),
            notifiers: Vec::new(),
            defaults: Vec::new(),
            clients: Vec::new(),
        }
    }

    /// A line under `connect.credentials:` (`client_id: …`, `client_secret_file: …`).
    pub fn credential(mut self, line: &str) -> Self {
        self.credentials.push(line.to_owned());
        self
    }

    /// A line under `connect:` after the credentials (`request_timeout: 5s`).
    pub fn connect(mut self, line: &str) -> Self {
        self.connect.push(line.to_owned());
        self
    }

    /// `lock_dir: dir`.
    pub fn lock_dir(mut self, dir: &str) -> Self {
        self.lock_dir = Some(dir.to_owned());
        self
    }

    /// A line under `stores:` (`local: { type: file, dir: … }`).
    pub fn store(mut self, line: &str) -> Self {
        self.stores.push(format!("  {line}"));
        self
    }

    /// A line under `notifiers:` (`ops: { type: log }`).
    pub fn notifier(mut self, line: &str) -> Self {
        self.notifiers.push(format!("  {line}"));
        self
    }

    /// A line under `defaults:` (`grace: 0s`).
    pub fn default(mut self, line: &str) -> Self {
        self.defaults.push(format!("  {line}"));
        self
    }

    /// Text written as it is at the end of `defaults:` (indented by the caller; an empty
    /// text is an empty line).
    pub fn defaults_text(mut self, text: &str) -> Self {
        self.defaults.push(text.to_owned());
        self
    }

    /// One entry of `clients:`, written as it is (`  - name: app\n    client_id: …`, or
    /// `  - { name: app, … }`).
    pub fn client(mut self, entry: &str) -> Self {
        self.clients.push(entry.to_owned());
        self
    }

    /// The policy's text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "connect:\n  url: {}\n  tenant_id: {}\n",
            self.url, self.tenant
        );
        if !self.credentials.is_empty() {
            text.push_str("  credentials:\n");
            for line in &self.credentials {
                text.push_str(&format!("    {line}\n"));
            }
        }
        for line in &self.connect {
            text.push_str(&format!("  {line}\n"));
        }
        if let Some(dir) = &self.lock_dir {
            text.push_str(&format!("lock_dir: {dir}\n"));
        }
        for (section, lines) in [
            ("stores", &self.stores),
            ("notifiers", &self.notifiers),
            ("defaults", &self.defaults),
            ("clients", &self.clients),
        ] {
            if !lines.is_empty() {
                text.push_str(&format!("{section}:\n"));
                for line in lines {
                    text.push_str(&format!("{line}\n"));
                }
            }
        }
        text
    }
}
