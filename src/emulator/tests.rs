//! The emulator against the contract of docs/cds-api.md, over loopback HTTP.

use serde_json::{Value, json};

use super::*;

const TENANT: &str = "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f";
const ADMIN: &str = "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d";
const APP: &str = "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
const OTHER: &str = "4b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
const WEB: &str = "1b0c1d2e-3f40-4152-6374-8596a7b8c9d0";

fn seed(region: &str) -> Seed {
    Seed::from_yaml(&format!(
        r#"tenant_id: {TENANT}
region: {region}
clients:
  - {{ id: {ADMIN}, name: admin, kind: client_credentials, roles: [tenant_administrator],
      secrets: [{{ value: admin-secret, expiration: 2099-01-01T00:00:00Z }}] }}
  - {{ id: {APP}, name: app, kind: client_credentials, access_token_lifetime: 60,
      secrets: [{{ value: app-secret, expiration: 2099-01-01T00:00:00Z }}] }}
  - {{ id: {OTHER}, name: other, kind: client_credentials }}
  - {{ id: {WEB}, name: web, kind: hybrid,
      secrets: [{{ value: web-secret, expiration: 2099-01-01T00:00:00Z }}] }}
  - {{ id: 9b0c1d2e-3f40-4152-6374-8596a7b8c9d0, name: spa, kind: authorization_code }}
"#
    ))
    .unwrap()
}

struct Api {
    emu: Emulator,
    http: reqwest::Client,
}

impl Api {
    async fn start(region: &str) -> Api {
        let emu = Emulator::start(([127, 0, 0, 1], 0).into(), seed(region))
            .await
            .unwrap();
        Api {
            emu,
            http: reqwest::Client::new(),
        }
    }

    async fn token(&self, id: &str, secret: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/identity/connect/token", self.emu.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={id}&client_secret={secret}"
            ))
            .send()
            .await
            .unwrap()
    }

    async fn bearer(&self, id: &str, secret: &str) -> String {
        let v: Value = self.token(id, secret).await.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    fn secrets(&self, kind: &str, client: &str) -> String {
        format!(
            "{}/api/v1/Tenants/{TENANT}/{kind}/{client}/Secrets",
            self.emu.url()
        )
    }

    async fn create(&self, token: &str, kind: &str, client: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.secrets(kind, client))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn expiring() -> Value {
    json!({"Expiration": "2090-01-01T00:00:00Z", "Expires": true, "Description": "t"})
}

#[tokio::test]
async fn tokens_need_a_valid_secret_of_a_client_with_secrets() {
    let api = Api::start("primary").await;
    let ok = api.token(APP, "app-secret").await;
    assert_eq!(ok.status().as_u16(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["expires_in"], 60);
    assert_eq!(v["token_type"], "Bearer");
    for (id, secret) in [
        (APP, "wrong"),
        ("9b0c1d2e-3f40-4152-6374-8596a7b8c9d0", "x"),
    ] {
        let resp = api.token(id, secret).await;
        assert_eq!(resp.status().as_u16(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client");
    }
}

#[tokio::test]
async fn the_token_endpoint_accepts_http_basic_client_authentication() {
    use base64::Engine as _;
    let api = Api::start("primary").await;
    let url = format!("{}/identity/connect/token", api.emu.url());
    let basic = |pair: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let post = |auth: String, body: &'static str| {
        api.http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .body(body)
            .send()
    };
    let grant = "grant_type=client_credentials";
    // Plain, and with id and secret form-urlencoded before base64 (RFC 6749 §2.3.1).
    for pair in [format!("{APP}:app-secret"), format!("{APP}:app%2Dsecret")] {
        let resp = post(basic(&pair), grant).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{pair}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    }
    let error = |resp: reqwest::Response| async move {
        assert_eq!(resp.status().as_u16(), 400);
        let v: Value = resp.json().await.unwrap();
        v["error"].as_str().unwrap_or_default().to_owned()
    };
    let wrong = post(basic(&format!("{APP}:wrong")), grant).await.unwrap();
    assert_eq!(error(wrong).await, "invalid_client");
    let garbled = post("Basic !!!".to_owned(), grant).await.unwrap();
    assert_eq!(error(garbled).await, "invalid_client");
    // One method per request (RFC 6749 §2.3).
    let both = post(
        basic(&format!("{APP}:app-secret")),
        "grant_type=client_credentials&client_id=x&client_secret=y",
    )
    .await
    .unwrap();
    assert_eq!(error(both).await, "invalid_request");
}

#[tokio::test]
async fn the_token_endpoint_says_when_a_client_is_disabled_or_unknown() {
    let mut seed = seed("primary");
    seed.clients[1].enabled = Some(false);
    let emu = Emulator::start(([127, 0, 0, 1], 0).into(), seed)
        .await
        .unwrap();
    let api = Api {
        emu,
        http: reqwest::Client::new(),
    };
    for (id, secret, description) in [
        (APP, "app-secret", Some("client is disabled")),
        (
            "7b0c1d2e-3f40-4152-6374-8596a7b8c9d0",
            "x",
            Some("client not found"),
        ),
        (WEB, "wrong", None),
    ] {
        let resp = api.token(id, secret).await;
        assert_eq!(resp.status().as_u16(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(v["error_description"].as_str(), description, "{id}");
    }
}

#[tokio::test]
async fn a_bind_error_names_the_address_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Emulator::start(addr, seed("primary")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {addr}: ")),
        "{err}"
    );

    let options = RunOptions {
        listen: addr.to_string(),
        seed: None,
        admin_secret_file: None,
    };
    let mut out = Vec::new();
    let err = run(options, &mut out).await.unwrap_err();
    assert!(matches!(err, EmulatorError::Bind { .. }), "{err:?}");
    assert!(!err.is_usage());
    // Nothing is printed twice by a report that follows the chain of sources.
    assert!(std::error::Error::source(&err).is_none());
    let text = err.to_string();
    assert_eq!(text.matches(&addr.to_string()).count(), 1, "{text}");
    assert_eq!(text.matches("os error").count(), 1, "{text}");
    assert!(text.contains("choose another --listen address"), "{text}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn a_listen_name_resolves_to_a_loopback_address() {
    let addr = resolve("localhost:0").await.unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(
        resolve("127.0.0.1:8080").await.unwrap(),
        ([127, 0, 0, 1], 8080).into()
    );
    let err = resolve("localhost").await.unwrap_err();
    assert!(err.is_usage());
    assert!(err.to_string().starts_with("--listen localhost: "), "{err}");
    assert!(err.to_string().contains("give HOST:PORT"), "{err}");
}

#[tokio::test]
async fn create_follows_the_expiration_rules_and_shows_the_value_once() {
    let api = Api::start("primary").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let (status, body) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["Id"], 2);
    let value = body["Secret"].as_str().unwrap().to_owned();
    assert!(value.len() >= 40);
    for bad in [
        json!({"Expires": true}),
        json!({}),
        json!({"Expires": false, "Expiration": "2090-01-01T00:00:00Z"}),
        json!({"Expiration": "2001-01-01T00:00:00Z"}),
    ] {
        let (status, body) = api
            .create(&admin, "ClientCredentialClients", APP, bad)
            .await;
        assert_eq!(status, 400);
        assert!(body["OperationId"].is_string());
    }
    let (status, _) = api
        .create(
            &admin,
            "ClientCredentialClients",
            APP,
            json!({"Expires": false}),
        )
        .await;
    assert_eq!(status, 201);
    let listed = api
        .http
        .get(api.secrets("ClientCredentialClients", APP))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.headers()["Total-Count"], "3");
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&value));
    assert!(!text.contains("Secret\""));
    // The new value gets tokens.
    assert_eq!(api.token(APP, &value).await.status().as_u16(), 200);
}

#[tokio::test]
async fn a_client_holds_at_most_ten_secrets() {
    let api = Api::start("primary").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    for _ in 0..9 {
        let (status, _) = api
            .create(&admin, "ClientCredentialClients", APP, expiring())
            .await;
        assert_eq!(status, 201);
    }
    let (status, body) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 400);
    assert!(body["Reason"].as_str().unwrap().contains("10"), "{body}");
    assert_eq!(api.emu.secrets(TENANT, APP).len(), 10);
}

#[tokio::test]
async fn self_may_manage_its_own_secrets_but_not_update_or_touch_others() {
    let api = Api::start("primary").await;
    let me = api.bearer(APP, "app-secret").await;
    let (status, body) = api
        .create(&me, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 201);
    let put = api
        .http
        .put(format!(
            "{}/{}",
            api.secrets("ClientCredentialClients", APP),
            body["Id"]
        ))
        .bearer_auth(&me)
        .json(&json!({"Description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 403);
    let (status, _) = api
        .create(&me, "ClientCredentialClients", OTHER, expiring())
        .await;
    assert_eq!(status, 403);
    let web = api.bearer(WEB, "web-secret").await;
    let (status, _) = api.create(&web, "HybridClients", WEB, expiring()).await;
    assert_eq!(status, 403, "hybrid secrets are Tenant Administrator only");
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let (status, _) = api.create(&admin, "HybridClients", WEB, expiring()).await;
    assert_eq!(status, 201);
    let (status, _) = api
        .create(&admin, "ClientCredentialClients", WEB, expiring())
        .await;
    assert_eq!(
        status, 404,
        "a hybrid client is not a client-credentials client"
    );
}

#[tokio::test]
async fn missing_tokens_answer_401_and_deletes_answer_204_then_404() {
    let api = Api::start("primary").await;
    let resp = api
        .http
        .get(api.secrets("ClientCredentialClients", APP))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let url = format!("{}/1", api.secrets("ClientCredentialClients", APP));
    for expected in [204, 404] {
        let resp = api
            .http
            .delete(&url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected);
    }
    assert_eq!(api.token(APP, "app-secret").await.status().as_u16(), 400);
}

#[tokio::test]
async fn a_regional_emulator_refuses_writes_with_405() {
    let api = Api::start("regional").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let (status, body) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 405);
    assert!(body["Reason"].as_str().unwrap().contains("primary region"));
}

#[tokio::test]
async fn faults_answer_instead_or_after_the_write() {
    let api = Api::start("primary").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    api.emu.inject(Fault {
        method: Some("POST".into()),
        path_contains: Some("/Secrets".into()),
        status: 503,
        retry_after: Some(7),
        times: 1,
        ..Fault::default()
    });
    let resp = api
        .http
        .post(api.secrets("ClientCredentialClients", APP))
        .bearer_auth(&admin)
        .json(&expiring())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(api.emu.secrets(TENANT, APP).len(), 1, "not carried out");
    api.emu.inject(Fault {
        method: Some("POST".into()),
        status: 500,
        times: 1,
        after_commit: true,
        ..Fault::default()
    });
    let (status, _) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        api.emu.secrets(TENANT, APP).len(),
        2,
        "carried out, answer lost"
    );
    let (status, _) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 201, "the fault was used up");
}

#[tokio::test]
async fn lists_page_with_skip_and_count() {
    let api = Api::start("primary").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    for _ in 0..5 {
        api.create(&admin, "ClientCredentialClients", APP, expiring())
            .await;
    }
    let resp = api
        .http
        .get(format!(
            "{}?skip=2&count=3",
            api.secrets("ClientCredentialClients", APP)
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["Total-Count"], "6");
    let page: Vec<Value> = resp.json().await.unwrap();
    let ids: Vec<i64> = page.iter().map(|s| s["Id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![3, 4, 5]);
}

#[tokio::test]
async fn new_secrets_get_tokens_only_after_the_propagation_delay() {
    let api = Api::start("primary").await;
    api.emu
        .set_token_propagation_delay(std::time::Duration::from_millis(300));
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let (_, body) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    let value = body["Secret"].as_str().unwrap();
    assert_eq!(api.token(APP, value).await.status().as_u16(), 400);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(api.token(APP, value).await.status().as_u16(), 200);
}

#[test]
fn seeds_that_cds_could_not_hold_are_refused() {
    let base = format!("tenant_id: {TENANT}\nclients:\n");
    for bad in [
        format!(
            "  - {{ id: {APP}, name: a, kind: client_credentials, access_token_lifetime: 59 }}"
        ),
        format!(
            "  - {{ id: {APP}, name: a, kind: authorization_code, secrets: [{{ value: v }}] }}"
        ),
        format!(
            "  - {{ id: {APP}, name: a, kind: client_credentials }}\n  - {{ id: {}, name: b, kind: hybrid }}",
            APP.to_ascii_uppercase()
        ),
        format!("  - {{ id: {APP}, name: a, kind: client_credentials, colour: red }}"),
    ] {
        assert!(
            matches!(
                Seed::from_yaml(&format!("{base}{bad}")),
                Err(EmulatorError::Seed(_))
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_demo_seed_lets_its_administrator_list_the_clients() {
    let seed = Seed::demo();
    let (id, secret) = seed.admin_credentials().unwrap();
    let tenant = seed.tenant_id.clone();
    let emu = Emulator::start(([127, 0, 0, 1], 0).into(), seed)
        .await
        .unwrap();
    let api = Api {
        emu,
        http: reqwest::Client::new(),
    };
    let admin = api.bearer(&id, &secret).await;
    // Collection names and GUIDs match case-insensitively, as in ASP.NET.
    let resp = api
        .http
        .get(format!(
            "{}/api/v1/tenants/{}/clientcredentialclients",
            api.emu.url(),
            tenant.to_ascii_uppercase()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["Total-Count"], "3");
    let clients: Vec<Value> = resp.json().await.unwrap();
    let names: Vec<&str> = clients.iter().filter_map(|c| c["Name"].as_str()).collect();
    assert!(names.contains(&"historian-uploader") && names.contains(&"edge-gateway"));
    for key in [
        "Id",
        "Name",
        "Enabled",
        "AccessTokenLifetime",
        "Tags",
        "RoleIds",
    ] {
        assert!(clients[0].get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn head_counts_secrets_without_a_body() {
    let api = Api::start("primary").await;
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let resp = api
        .http
        .head(api.secrets("ClientCredentialClients", APP))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["Total-Count"], "1");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn control_endpoints_drive_faults_state_and_propagation() {
    let api = Api::start("primary").await;
    let control = |path: &str| format!("{}/_emulator/{path}", api.emu.url());
    // A fault without a status is refused; faults never hit the control paths.
    let resp = api
        .http
        .post(control("faults"))
        .json(&json!({"delay_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = api
        .http
        .post(control("faults"))
        .json(&json!({"status": 429, "retry_after": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let resp = api.token(APP, "app-secret").await;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let state: Value = api
        .http
        .get(control("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["tenants"][TENANT][APP][0]["id"], 1);
    assert!(state["tenants"][TENANT][APP][0]["value_sha256"].is_string());
    assert_eq!(state["requests"][0]["status"], 429);
    assert_eq!(state["requests"][0]["path"], "/identity/connect/token");
    let resp = api.http.delete(control("faults")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let resp = api
        .http
        .post(control("propagation_delay_ms"))
        .json(&60_000)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let admin = api.bearer(ADMIN, "admin-secret").await;
    let (status, body) = api
        .create(&admin, "ClientCredentialClients", APP, expiring())
        .await;
    assert_eq!(status, 201);
    let value = body["Secret"].as_str().unwrap();
    assert_eq!(api.token(APP, value).await.status().as_u16(), 400);
    // The value never shows in the state, only its hash.
    let state = api
        .http
        .get(control("state"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!state.contains(value));
}

#[tokio::test]
async fn a_wildcard_bind_is_reached_over_loopback_and_shutdown_stops_serving() {
    let emu = Emulator::start(([0, 0, 0, 0], 0).into(), seed("primary"))
        .await
        .unwrap();
    let url = emu.url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let well_known = format!("{url}/identity/.well-known/openid-configuration");
    let v: Value = reqwest::get(&well_known)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/identity/connect/token")
    );
    emu.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(reqwest::get(&well_known).await.is_err());
}

#[tokio::test]
async fn faults_can_answer_a_raw_body_or_streamed_padding_instead() {
    let api = Api::start("primary").await;
    api.emu.inject_with_body(
        Fault {
            method: Some("POST".into()),
            status: 400,
            times: 1,
            ..Fault::default()
        },
        FaultBody::Raw(r#"{"error":"raw"}"#.into()),
    );
    let resp = api.token(APP, "app-secret").await;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.content_length(), Some(15));
    assert_eq!(resp.text().await.unwrap(), r#"{"error":"raw"}"#);

    // Status 0 keeps the real answer's status and headers; padding has no length.
    let admin = api.bearer(ADMIN, "admin-secret").await;
    api.emu.inject_with_body(
        Fault {
            method: Some("GET".into()),
            path_contains: Some("/Secrets".into()),
            times: 1,
            ..Fault::default()
        },
        FaultBody::Padding(1_000_000),
    );
    let resp = api
        .http
        .get(api.secrets("ClientCredentialClients", APP))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["Total-Count"], "1");
    assert!(resp.headers().get("content-length").is_none());
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), 1_000_000);
    let page: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert!(page.is_empty());

    // The same through the control endpoint.
    let control = format!("{}/_emulator/faults", api.emu.url());
    for (rule, expected) in [
        (json!({"status": 0, "pad_bytes": 10, "times": 1}), 204),
        (json!({"status": 400, "body": "{}", "times": 1}), 204),
        (json!({"status": 400, "body": 5}), 400),
        (json!({"status": 400, "body": "{}", "pad_bytes": 10}), 400),
        (json!({"status": 400, "bdy": "{}"}), 400),
    ] {
        let resp = api.http.post(&control).json(&rule).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), expected, "{rule}");
    }
    let resp = api.token(APP, "app-secret").await;
    assert_eq!(resp.text().await.unwrap(), format!("[{}]", " ".repeat(8)));
    let resp = api.token(APP, "app-secret").await;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.text().await.unwrap(), "{}");
}
