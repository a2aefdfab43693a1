//! The API beyond the security matrix: paging with cursors pinned to a version, data skipping
//! by file statistics, time travel by instant, request errors with stable codes; grants changed
//! by an admin without a restart (and refused to everyone else), rate limits, CORS closed by
//! default, and `/metrics`.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};
use marketlake_api::auth::mint;
use marketlake_api::config::AuthConfig;
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, OffsetAdvance};
use marketlake_schemas::l2::TradeRow;

use crate::api::{code, commit, page_rows, trade, Client};
use crate::support::{free_port, sigint, wait_output, Lake, LakeOptions};

const GRANTS: &str = r#"
[[grants]]
dataset = "l2.trades"
principal_kind = "group"
principal = "desk-eq"
symbols = ["AAPL", "IBM"]
column_masks = { account = "hash", trader = "hide" }

[[grants]]
dataset = "l2.trades"
principal_kind = "group"
principal = "compliance"
"#;

struct Served {
    lake: Lake,
    server: Child,
    client: Client,
    sink: ExactlyOnceSink,
    catalog_dir: std::path::PathBuf,
    _grants: tempfile::NamedTempFile,
}

/// A lake with `l2.trades` in three commits (one file each, ten seconds of trades apart) and
/// `serve` running with `extra_api` settings.
async fn serve(extra_api: &str) -> Result<(Served, Vec<i64>)> {
    serve_with_catalog(extra_api, None).await
}

/// As [`serve`], with the catalog at `catalog_url` (default: SQLite in a temporary directory).
async fn serve_with_catalog(
    extra_api: &str,
    catalog_url: Option<&str>,
) -> Result<(Served, Vec<i64>)> {
    let port = free_port();
    let grants = tempfile::NamedTempFile::new()?;
    std::fs::write(grants.path(), GRANTS)?;
    let catalog_dir = std::env::temp_dir().join(format!("ml-api-ops-{port}"));
    let catalog_url = catalog_url.map_or_else(
        || format!("sqlite://{}/catalog.db", catalog_dir.display()),
        str::to_owned,
    );
    let lake = Lake::new(LakeOptions {
        extra_toml: format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ncatalog_url = \"{catalog_url}\"\nseed_grants_file = \"{}\"\n{extra_api}\n",
            grants.path().display()
        ),
        ..LakeOptions::default()
    })?;
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == marketlake_schemas::names::L2_TRADES)
        .context("l2.trades spec")?;
    let mut sink = ExactlyOnceSink::open(&lake.lake_config(), spec, "api-ops").await?;
    let symbols = ["AAPL", "IBM", "MSFT", "AAPL"];
    let mut committed_at = Vec::new();
    let mut offset = None;
    for file in 0..3i64 {
        let rows: Vec<TradeRow> = (0..4)
            .map(|i| {
                let n = file * 10 + i;
                trade(n, symbols[i as usize], &format!("ACC-{n}"))
            })
            .collect();
        let to = file * 10 + 3;
        commit(&mut sink, &rows, offset, to).await?;
        offset = Some(to);
        committed_at.push(marketlake_schemas::now_utc_ns());
        // Commit timestamps are milliseconds: keep the versions apart in time.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let server = lake.spawn(&["serve"], "serve.log")?;
    let client = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    let mut up = false;
    for _ in 0..100 {
        if let Ok((200, _)) = client.get("/health", None).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "serve did not start:\n{}", lake.log("serve.log"));
    Ok((
        Served {
            lake,
            server,
            client,
            sink,
            catalog_dir,
            _grants: grants,
        },
        committed_at,
    ))
}

impl Served {
    async fn stop(self) -> Result<()> {
        sigint(&self.server);
        let exit = wait_output(self.server, Duration::from_secs(20))?;
        assert!(exit.status.success(), "{}", self.lake.log("serve.log"));
        let _ = std::fs::remove_dir_all(&self.catalog_dir);
        Ok(())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let mut request = self
            .client
            .http
            .request(method, format!("{}{path}", self.client.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("{path}; server log:\n{}", self.lake.log("serve.log")))?;
        Ok((status, headers, body.to_vec()))
    }

    async fn get(
        &self,
        path: &str,
        token: &str,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        self.send(reqwest::Method::GET, path, Some(token), None, &[])
            .await
    }
}

fn token(sub: &str, roles: &[&str], groups: &[&str]) -> Result<String> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(mint(
        &AuthConfig::default(),
        sub,
        &strings(roles),
        &strings(groups),
        600,
    )?)
}

fn keys(rows: &[std::collections::BTreeMap<String, serde_json::Value>]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r["trade_key"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extraction_pages_skips_files_and_travels_in_time() -> Result<()> {
    let (mut served, committed_at) = serve("").await?;
    let compliance = token("carol", &["compliance"], &["compliance"])?;
    let quant = token("alice", &["quant"], &["desk-eq"])?;
    let base = 1_767_623_400_000_000_000i64;

    // Pages of 5 with a cursor: every row exactly once, on the version of the first page even
    // when a commit lands between pages.
    let (status, headers, body) = served
        .get("/v1/datasets/l2.trades/rows?limit=5", &compliance)
        .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-dataset-version"], "3");
    let mut seen = keys(&page_rows(&body)?);
    let mut page: serde_json::Value = serde_json::from_slice(&body)?;
    let late = vec![trade(90, "AAPL", "ACC-90")];
    commit(&mut served.sink, &late, Some(23), 90).await?;
    let mut pages = 1;
    while let Some(cursor) = page["next_cursor"].as_str() {
        let (status, _, body) = served
            .get(
                &format!("/v1/datasets/l2.trades/rows?limit=5&cursor={cursor}"),
                &compliance,
            )
            .await?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        seen.extend(keys(&page_rows(&body)?));
        page = serde_json::from_slice(&body)?;
        assert_eq!(page["version"], 3, "a cursor pins the version");
        pages += 1;
        assert!(pages < 10, "the cursor must make progress");
    }
    assert_eq!(pages, 3);
    // A cursor is sealed for its principal and dataset: another principal cannot use it.
    let (_, _, body) = served
        .get("/v1/datasets/l2.trades/rows?limit=5", &compliance)
        .await?;
    let first: serde_json::Value = serde_json::from_slice(&body)?;
    let cursor = first["next_cursor"].as_str().context("a cursor")?;
    assert!(!cursor.contains("parquet") && cursor.len() > 40);
    let (status, _, body) = served
        .get(
            &format!("/v1/datasets/l2.trades/rows?limit=5&cursor={cursor}"),
            &quant,
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_cursor");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 12, "{seen:?}");
    assert_eq!(unique.len(), 12, "no row twice: {seen:?}");
    let (_, _, body) = served
        .get("/v1/datasets/l2.trades/rows", &compliance)
        .await?;
    assert_eq!(
        page_rows(&body)?.len(),
        13,
        "the latest version has the late row"
    );

    // Data skipping: one second of trades reads only the file that holds it.
    let from = base + 10 * 1_000_000_000;
    let (status, headers, body) = served
        .get(
            &format!(
                "/v1/datasets/l2.trades/rows?from={from}&to={}",
                from + 1_000_000_000
            ),
            &compliance,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(keys(&page_rows(&body)?), vec!["t:10".to_string()]);
    assert_eq!(
        headers["x-scan-files"], "1/4",
        "files read / files in version"
    );
    let (_, headers, body) = served
        .get(
            "/v1/datasets/l2.trades/rows?symbols=IBM&format=ndjson",
            &compliance,
        )
        .await?;
    assert_eq!(String::from_utf8(body)?.lines().count(), 3);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    // Paging a narrow request: the scan selects rows inside row groups, and the cursor still
    // resumes right after the last row sent: each IBM row once, in scan order.
    let mut paged = Vec::new();
    let mut path = "/v1/datasets/l2.trades/rows?symbols=IBM&limit=1".to_string();
    for _ in 0..10 {
        let (status, _, body) = served.get(&path, &compliance).await?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        paged.extend(keys(&page_rows(&body)?));
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/datasets/l2.trades/rows?symbols=IBM&limit=1&cursor={cursor}")
            }
            None => break,
        }
    }
    let (_, _, body) = served
        .get("/v1/datasets/l2.trades/rows?symbols=IBM", &compliance)
        .await?;
    assert_eq!(paged, keys(&page_rows(&body)?));
    assert_eq!(paged.len(), 3, "{paged:?}");

    // Time travel by instant: as of just after the first commit.
    let (status, _, body) = served
        .get(
            &format!("/v1/datasets/l2.trades/rows?as_of_time={}", committed_at[0]),
            &compliance,
        )
        .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(page_rows(&body)?.len(), 4);

    // A masked column stays masked when asked for by name; a hidden one does not exist.
    let (_, _, body) = served
        .get("/v1/datasets/l2.trades/rows?columns=symbol,account", &quant)
        .await?;
    let rows = page_rows(&body)?;
    assert_eq!(rows.len(), 10, "AAPL and IBM only");
    assert!(rows
        .iter()
        .all(|r| r.len() == 2 && r["account"].as_str().is_some_and(|a| a.len() == 64)));

    // Errors: JSON with stable codes, before any byte of data.
    for (path, who, want) in [
        (
            "/v1/datasets/l2.trades/rows?limit=0",
            &compliance,
            "bad_limit",
        ),
        (
            "/v1/datasets/l2.trades/rows?columns=nope",
            &compliance,
            "unknown_column",
        ),
        (
            "/v1/datasets/l2.trades/rows?columns=trader",
            &quant,
            "unknown_column",
        ),
        (
            "/v1/datasets/l2.trades/rows?cursor=%7B%7D",
            &compliance,
            "bad_cursor",
        ),
        (
            "/v1/datasets/l2.trades/rows?format=xml",
            &compliance,
            "bad_format",
        ),
        (
            "/v1/datasets/l2.trades/rows?as_of_time=2001-01-01T00:00:00Z",
            &compliance,
            "bad_as_of_time",
        ),
        (
            "/v1/datasets/l2.trades/rows?as_of_time=yesterday",
            &compliance,
            "bad_as_of_time",
        ),
        (
            "/v1/datasets/l2.trades/rows?as_of_version=99",
            &compliance,
            "bad_version",
        ),
        (
            "/v1/datasets/l2.trades/rows?from=abc",
            &compliance,
            "bad_query",
        ),
        (
            "/v1/datasets/l2.trades/rows?format=csv&cursor=e30",
            &compliance,
            "bad_cursor",
        ),
    ] {
        let (status, _, body) = served.get(path, who).await?;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(code(&body), want, "{path}");
    }
    served.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_grants_live_and_the_api_protects_itself() -> Result<()> {
    admin_and_protection(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_grants_live_on_a_postgres_catalog() -> Result<()> {
    let postgres = crate::support::Postgres::start()?;
    admin_and_protection(Some(&postgres.url)).await
}

async fn admin_and_protection(catalog_url: Option<&str>) -> Result<()> {
    let (served, _) = serve_with_catalog(
        "rate_limit_burst = 12\nrate_limit_per_minute = 1\nauth_failures_per_minute = 30\ncors_allowed_origins = [\"https://desk.example.com\"]\nmax_body_bytes = 4096\nmetrics_token = \"scrape-0123456789abcdef\"",
        catalog_url,
    )
    .await?;
    let admin = token("root-admin", &["admin"], &[])?;
    let bob = token("bob", &["quant"], &["desk-fx"])?;
    let expired = mint(
        &AuthConfig::default(),
        "root-admin",
        &["admin".into()],
        &[],
        -3_600,
    )?;
    let forged = mint(
        &AuthConfig {
            hmac_secret: "not-the-server-secret-at-all".into(),
            ..AuthConfig::default()
        },
        "root-admin",
        &["admin".into()],
        &[],
        600,
    )?;
    let post = reqwest::Method::POST;
    let grant = serde_json::json!({
        "dataset": "l2.trades", "principal_kind": "user", "principal": "bob",
        "symbols": ["MSFT"], "column_masks": { "account": "hide" }
    })
    .to_string()
    .into_bytes();

    // Every admin route refuses a missing, expired or forged token and a non-admin.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/admin/grants"),
        (post.clone(), "/v1/admin/grants"),
        (reqwest::Method::DELETE, "/v1/admin/grants/x"),
        (reqwest::Method::GET, "/v1/admin/grant-changes"),
    ] {
        for (who, want_status, want_code) in [
            (None, 401, "token_missing"),
            (Some(expired.as_str()), 401, "token_expired"),
            (Some(forged.as_str()), 401, "bad_signature"),
            (Some(bob.as_str()), 403, "forbidden"),
        ] {
            let body = (method == post).then(|| grant.clone());
            let (status, _, body) = served.send(method.clone(), path, who, body, &[]).await?;
            assert_eq!(status, want_status, "{method} {path}");
            assert_eq!(code(&body), want_code, "{method} {path}");
        }
    }

    // Bob has nothing; an admin grants him MSFT; he sees it at once; a revoke takes it away.
    let (status, _, _) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
    assert_eq!(status, 404);
    let (status, _, body) = served
        .send(
            post.clone(),
            "/v1/admin/grants",
            Some(&admin),
            Some(grant.clone()),
            &[],
        )
        .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let grant_id = created["grant"]["grant_id"]
        .as_str()
        .context("grant id")?
        .to_string();
    let (status, _, body) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
    assert_eq!(status, 200);
    let rows = page_rows(&body)?;
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r["symbol"] == "MSFT" && !r.contains_key("account")));
    let (status, _, _) = served
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/admin/grants/{grant_id}"),
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(status, 200);
    let (status, _, _) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
    assert_eq!(status, 404, "revoked without a restart");
    let (_, _, body) = served.get("/v1/admin/grant-changes", &admin).await?;
    let changes: serde_json::Value = serde_json::from_slice(&body)?;
    let ours: Vec<(&str, &str)> = changes["changes"]
        .as_array()
        .context("changes")?
        .iter()
        .filter(|c| c["grant_id"] == grant_id.as_str())
        .filter_map(|c| Some((c["action"].as_str()?, c["actor"].as_str()?)))
        .collect();
    assert_eq!(
        ours,
        vec![("grant", "root-admin"), ("revoke", "root-admin")]
    );

    // The CLI changes the same catalog, live, and its changes are recorded too.
    let cli = |args: &[&str]| -> Result<String> {
        let output = served
            .lake
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let output = wait_output(output, Duration::from_secs(60))?;
        anyhow::ensure!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    let added = cli(&[
        "grants",
        "add",
        "--dataset",
        "l2.trades",
        "--user",
        "bob",
        "--symbols",
        "IBM",
        "--mask",
        "account=hash",
    ])?;
    let added: serde_json::Value = serde_json::from_str(added.trim())?;
    let (_, _, body) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
    let rows = page_rows(&body)?;
    assert!(rows.len() == 3 && rows.iter().all(|r| r["symbol"] == "IBM"));
    let cli_id = added["grant_id"].as_str().context("grant id")?;
    assert!(cli(&["grants", "list"])?.contains(cli_id));
    cli(&["grants", "revoke", cli_id])?;
    let (status, _, _) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
    assert_eq!(status, 404);
    let history = cli(&["grants", "history"])?;
    assert_eq!(
        history.lines().filter(|l| l.contains(cli_id)).count(),
        2,
        "{history}"
    );
    assert!(history.contains("\"actor\":\"cli:"), "{history}");

    // Bad grants and oversized bodies: 400 / 413 with codes.
    for (body, want_status, want_code) in [
        (b"{not json".to_vec(), 400, "bad_grant"),
        (
            br#"{"dataset":"l9.none","principal_kind":"user","principal":"x"}"#.to_vec(),
            400,
            "unknown_dataset",
        ),
        (
            br#"{"dataset":"l2.trades","principal_kind":"robot","principal":"x"}"#.to_vec(),
            400,
            "bad_grant",
        ),
        (vec![b' '; 8_192], 413, "body_too_large"),
    ] {
        let (status, _, body) = served
            .send(
                post.clone(),
                "/v1/admin/grants",
                Some(&admin),
                Some(body),
                &[],
            )
            .await?;
        assert_eq!(status, want_status, "{}", String::from_utf8_lossy(&body));
        assert_eq!(code(&body), want_code);
    }

    // No audit, no change: while the audit store refuses writes, a grant is refused whole —
    // not stored, not in the change history, not in effect.
    if catalog_url.is_none() {
        let db = served.catalog_dir.join("catalog.db");
        let sql = |statement: &str| -> Result<()> {
            let out = std::process::Command::new("python3")
                .arg("-c")
                .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()")
                .arg(&db)
                .arg(statement)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let changes = |body: &[u8]| -> Result<usize> {
            let value: serde_json::Value = serde_json::from_slice(body)?;
            Ok(value["changes"].as_array().context("changes")?.len())
        };
        let (_, _, body) = served.get("/v1/admin/grant-changes", &admin).await?;
        let before = changes(&body)?;
        sql("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit store down'); END")?;
        let refused = served
            .send(
                post.clone(),
                "/v1/admin/grants",
                Some(&admin),
                Some(grant.clone()),
                &[],
            )
            .await;
        sql("DROP TRIGGER audit_down")?;
        let (status, _, body) = refused?;
        assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
        let (status, _, _) = served.get("/v1/datasets/l2.trades/rows", &bob).await?;
        assert_eq!(status, 404, "an unaudited grant must not take effect");
        let (_, _, body) = served.get("/v1/admin/grant-changes", &admin).await?;
        assert_eq!(
            changes(&body)?,
            before,
            "no change recorded without its audit"
        );
    }

    // CORS: closed to unknown origins, open to the configured one.
    let preflight = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (status, headers, body) = served
        .send(
            reqwest::Method::OPTIONS,
            "/v1/datasets",
            None,
            None,
            &preflight,
        )
        .await?;
    assert_eq!(status, 403);
    assert_eq!(code(&body), "cors_origin_not_allowed");
    assert!(!headers.contains_key("access-control-allow-origin"));
    let (status, headers, _) = served
        .send(
            reqwest::Method::OPTIONS,
            "/v1/datasets",
            None,
            None,
            &[
                ("Origin", "https://desk.example.com"),
                ("Access-Control-Request-Method", "GET"),
            ],
        )
        .await?;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://desk.example.com"
    );

    // Rate limit per principal: a burst of 12, then 429 with Retry-After; others unaffected.
    let dave = token("dave", &["quant"], &["desk-eq"])?;
    let mut statuses = Vec::new();
    for _ in 0..13 {
        let (status, headers, body) = served.get("/v1/datasets", &dave).await?;
        if status == 429 {
            assert_eq!(code(&body), "rate_limited");
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [vec![200; 12], vec![429]].concat());
    let (status, _, _) = served.get("/v1/datasets", &bob).await?;
    assert_eq!(status, 200);

    // The OpenAPI document lists every route (it is built from the same table as the router).
    let (status, _, body) = served
        .send(reqwest::Method::GET, "/openapi.json", None, None, &[])
        .await?;
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(document["openapi"], "3.0.3");
    for path in [
        "/v1/datasets",
        "/v1/datasets/{name}/rows",
        "/v1/search/news",
        "/v1/stream/{name}",
        "/v1/admin/grants",
        "/v1/admin/grants/{id}",
        "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query",
        "/delta-sharing/files/{token}",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from /openapi.json"
        );
    }
    let codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .context("error codes")?;
    for code in [
        "token_expired",
        "rate_limited",
        "dataset_not_found",
        "body_too_large",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code}");
    }
    assert_eq!(
        document["paths"]["/v1/datasets/{name}/rows"]["get"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    // Every JSON success body is described, and real answers match their description.
    for (path, item) in document["paths"].as_object().context("paths")? {
        for (method, operation) in item.as_object().context("path item")? {
            if let Some(json) = operation["responses"]["200"]["content"].get("application/json") {
                assert!(
                    json.get("schema").is_some(),
                    "{method} {path}: JSON success without a schema"
                );
            }
        }
    }
    let carol = token("carol", &["compliance"], &["compliance"])?;
    for (path, who) in [
        ("/health", None),
        ("/v1/datasets", Some(&carol)),
        ("/v1/datasets/l2.trades/rows?limit=2", Some(&carol)),
        ("/v1/admin/grants", Some(&admin)),
        ("/v1/admin/grant-changes", Some(&admin)),
        ("/delta-sharing/shares", Some(&carol)),
        ("/delta-sharing/shares/marketlake", Some(&carol)),
        ("/delta-sharing/shares/marketlake/schemas", Some(&carol)),
        ("/delta-sharing/shares/marketlake/all-tables", Some(&carol)),
    ] {
        let (status, _, body) = served
            .send(
                reqwest::Method::GET,
                path,
                who.map(String::as_str),
                None,
                &[],
            )
            .await?;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let route = path.split('?').next().unwrap_or(path);
        let template = document["paths"]
            .as_object()
            .context("paths")?
            .keys()
            .find(|t| path_matches(t, route))
            .with_context(|| format!("{route}: no route in the document"))?
            .clone();
        let schema = &document["paths"][&template]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let errors = schema_errors(schema, &answer, &document, "$");
        assert!(errors.is_empty(), "{path} against {template}: {errors:?}");
    }

    // Metrics: Prometheus text with requests by route and status, for the scraper's token only
    // when `api.metrics_token` is set.
    for wrong in [None, Some("scrape-0123456789abcdeX"), Some(admin.as_str())] {
        let (status, _, body) = served
            .send(reqwest::Method::GET, "/metrics", wrong, None, &[])
            .await?;
        assert_eq!(status, 401, "{wrong:?}");
        assert_eq!(code(&body), "metrics_token");
    }
    let (status, _, body) = served
        .send(
            reqwest::Method::GET,
            "/metrics",
            Some("scrape-0123456789abcdef"),
            None,
            &[],
        )
        .await?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body)?;
    assert!(
        text.contains("marketlake_api_requests_total{route=\"/v1/datasets\",status=\"429\"} 1"),
        "{text}"
    );
    // 6 rows from the extractions above, 2 from the response-schema check.
    assert!(
        text.contains("marketlake_api_rows_served_total{dataset=\"l2.trades\"} 8"),
        "{text}"
    );
    // The rows read opened data files, whose footers are now cached.
    let misses = text
        .lines()
        .find_map(|l| l.strip_prefix("marketlake_api_footer_cache_lookups_total{result=\"miss\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(misses.is_some_and(|n| n >= 1), "{text}");
    assert!(
        !text.contains("marketlake_api_footer_cache_files 0\n"),
        "{text}"
    );
    // A flood of refused tokens from one address is cut off before any work (no audit write
    // per request): 429 too_many_failures, even for a valid token from that address.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let (status, _, body) = served
            .send(
                reqwest::Method::GET,
                "/v1/datasets",
                Some("not.a.jwt"),
                None,
                &[],
            )
            .await?;
        statuses.push((status, code(&body)));
    }
    assert_eq!(statuses[0], (401, "token_malformed".to_string()));
    assert_eq!(
        statuses.last(),
        Some(&(429, "too_many_failures".to_string())),
        "{statuses:?}"
    );
    let (status, _, _) = served.get("/v1/datasets", &bob).await?;
    assert_eq!(status, 429, "the address is cut off for a while");

    served.stop().await
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/it/fixtures/jwt")
        .join(name)
}

/// A token signed with a fixture key (`alg`, `kid`), for `sub` in group compliance.
fn signed(
    alg: jsonwebtoken::Algorithm,
    kid: &str,
    key: &jsonwebtoken::EncodingKey,
    ttl: i64,
) -> Result<String> {
    let auth = AuthConfig::default();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    let now = marketlake_schemas::now_utc_ns() / 1_000_000_000;
    Ok(jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "carol", "iss": auth.issuer, "aud": auth.audience,
            "exp": now + ttl, "nbf": now - 5, "groups": ["compliance"]}),
        key,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_tokens_are_verified_against_the_jwks() -> Result<()> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    // Start with only the RSA key published; the others are added later (rotation).
    let jwks: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("jwks.json"))?)?;
    let all_keys = jwks["keys"].as_array().context("keys")?.clone();
    let jwks_file = tempfile::NamedTempFile::new()?;
    std::fs::write(
        jwks_file.path(),
        serde_json::json!({ "keys": [all_keys[0].clone()] }).to_string(),
    )?;
    let (served, _) = serve(&format!(
        "[api.auth]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\njwks_file = \"{}\"\njwks_refetch_secs = 1\n",
        jwks_file.path().display()
    ))
    .await?;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.pem"))?)?;
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec.pem"))?)?;
    let ed = EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519.pem"))?)?;
    let path = "/v1/datasets/l2.trades/rows?limit=1";

    let good = signed(Algorithm::RS256, "rsa-1", &rsa, 600)?;
    let (status, _, body) = served.get(path, &good).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = signed(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(&std::fs::read(fixture("rsa.pub.pem"))?),
        600,
    )?;
    // A payload changed after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let claims = serde_json::json!({"sub": "mallory", "iss": "marketlake-local", "aud": "marketlake", "exp": 9_999_999_999i64, "groups": ["compliance"]});
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string(),
    );
    let tampered = parts.join(".");
    let cases = [
        ("HS256 with the RSA public key", confused, "alg_not_allowed"),
        ("tampered payload", tampered, "bad_signature"),
        (
            "expired",
            signed(Algorithm::RS256, "rsa-1", &rsa, -3_600)?,
            "token_expired",
        ),
        (
            "unknown kid",
            signed(Algorithm::RS256, "rsa-9", &rsa, 600)?,
            "unknown_key",
        ),
        (
            "ES256 under the RSA key's kid",
            signed(Algorithm::ES256, "rsa-1", &ec, 600)?,
            "alg_not_allowed",
        ),
        (
            "EC key not published yet",
            signed(Algorithm::ES256, "ec-1", &ec, 600)?,
            "unknown_key",
        ),
    ];
    for (what, token, want) in &cases {
        let (status, _, body) = served.get(path, token).await?;
        assert_eq!(status, 401, "{what}: {}", String::from_utf8_lossy(&body));
        assert_eq!(code(&body), *want, "{what}");
    }

    // Rotation: the issuer publishes its EC and Ed25519 keys; an unknown kid refetches the
    // JWKS (at most once per jwks_refetch_secs) and the new keys work without a restart.
    std::fs::write(jwks_file.path(), jwks.to_string())?;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for (alg, kid, key) in [
        (Algorithm::ES256, "ec-1", &ec),
        (Algorithm::EdDSA, "ed-1", &ed),
    ] {
        let token = signed(alg, kid, key, 600)?;
        let (status, _, body) = served.get(path, &token).await?;
        assert_eq!(status, 200, "{kid}: {}", String::from_utf8_lossy(&body));
    }
    // A flood of made-up kids does not refetch more than once per second.
    for i in 0..20 {
        let token = signed(Algorithm::RS256, &format!("made-up-{i}"), &rsa, 600)?;
        let (status, _, _) = served.get(path, &token).await?;
        assert_eq!(status, 401);
    }
    let loads = served.lake.log("serve.log").matches("JWKS loaded").count();
    assert!(
        (2..=6).contains(&loads),
        "JWKS loads: {loads} (20 unknown kids must not mean 20 fetches)"
    );
    served.stop().await
}

/// Read SSE events from `response` until `want` events have arrived (or 20 s).
async fn sse_events(
    response: reqwest::Response,
    want: usize,
) -> Result<Vec<(String, Vec<serde_json::Value>)>> {
    let mut response = response;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    while events.len() < want {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .context("SSE events did not arrive in time")??
            .context("the stream ended")?;
        text.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Vec<serde_json::Value>>(v)?);
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rows_stream_entitled_and_resumable() -> Result<()> {
    let (mut served, _) = serve("").await?;
    let compliance = token("carol", &["compliance"], &["compliance"])?;
    let quant = token("alice", &["quant"], &["desk-eq"])?;
    let other_desk = token("bob", &["quant"], &["desk-fx"])?;
    let http = served.client.http.clone();
    let base = served.client.base.clone();
    let open = |token: Option<String>, last_event: Option<&'static str>, query: &'static str| {
        let mut request = http.get(format!("{base}/v1/stream/l2.trades{query}"));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(id) = last_event {
            request = request.header("Last-Event-ID", id);
        }
        request.send()
    };
    let refused = open(None, None, "").await?;
    assert_eq!(refused.status().as_u16(), 401);
    let refused = open(Some(other_desk.clone()), None, "").await?;
    assert_eq!(refused.status().as_u16(), 404);

    // From version 1: the commits of versions 2 and 3, one event each.
    let response = open(Some(compliance.clone()), None, "?from_version=1").await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_events(response, 2).await?;
    let ids: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["2.0", "3.0"]);
    assert!(events.iter().all(|e| e.1.len() == 4));

    // A subscriber sees a new commit as it lands; the quant only its symbols, masked.
    let live = open(Some(compliance.clone()), None, "").await?;
    let masked = open(Some(quant.clone()), None, "").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: Vec<TradeRow> = vec![trade(40, "MSFT", "ACC-40"), trade(41, "IBM", "ACC-41")];
    commit(&mut served.sink, &rows, Some(23), 41).await?;
    let events = sse_events(live, 1).await?;
    assert_eq!(events[0].0, "4.0");
    assert_eq!(events[0].1.len(), 2);
    let events = sse_events(masked, 1).await?;
    assert_eq!(events[0].1.len(), 1, "MSFT is outside the quant's grant");
    let row = &events[0].1[0];
    assert_eq!(row["symbol"], "IBM");
    assert_eq!(row["account"].as_str().map(str::len), Some(64));
    assert!(row.get("trader").is_none());

    // Resuming after event 3.0 delivers exactly what followed it.
    let resumed = open(Some(compliance.clone()), Some("3.0"), "").await?;
    let events = sse_events(resumed, 1).await?;
    assert_eq!(events[0].0, "4.0");
    let bad = open(Some(compliance.clone()), Some("x.y"), "").await?;
    assert_eq!(bad.status().as_u16(), 400);

    // The table gains a column (schema evolution): the stream accepts it in `columns` once it
    // exists, and streams its values.
    let refused = open(Some(compliance.clone()), None, "?columns=symbol,broker").await?;
    assert_eq!(refused.status().as_u16(), 400, "no such column yet");
    let broker = marketlake_schemas::extra::ExtraColumn {
        name: "broker".into(),
        kind: marketlake_schemas::extra::ExtraType::String,
    };
    let mut spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == marketlake_schemas::names::L2_TRADES)
        .context("l2.trades spec")?;
    spec.schema = marketlake_schemas::l2::trades_schema_with(std::slice::from_ref(&broker));
    let mut evolved = ExactlyOnceSink::open(&served.lake.lake_config(), spec, "api-ops").await?;
    let mut row = trade(42, "IBM", "ACC-42");
    row.extra.insert(
        "broker".into(),
        marketlake_schemas::extra::ExtraValue::String("GSCO".into()),
    );
    let batch = marketlake_schemas::l2::trades_batch_with(&[row], 0, &[broker])?;
    let advance = OffsetAdvance {
        topic: "raw.trades".into(),
        partition: 0,
        from: Some(41),
        to: 42,
    };
    let outcome = evolved.commit(batch, &[advance]).await?;
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    let evolved_stream = open(
        Some(compliance),
        None,
        "?from_version=4&columns=symbol,broker",
    )
    .await?;
    assert_eq!(evolved_stream.status().as_u16(), 200);
    let events = sse_events(evolved_stream, 1).await?;
    assert_eq!(events[0].1.len(), 1, "{events:?}");
    assert_eq!(events[0].1[0]["broker"], "GSCO");
    assert_eq!(events[0].1[0]["symbol"], "IBM");
    served.stop().await
}

/// The delta-sharing Python client (installed by `scripts/ensure-tools --with-test-tools`).
fn sharing_python() -> std::path::PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    std::path::PathBuf::from(home).join(".cache/marketlake-sharing-venv/bin/python")
}

/// Run `script` with the delta-sharing client against a profile for `token`; its stdout.
fn sharing_client(base: &str, token: &str, script: &str) -> Result<String> {
    let profile = tempfile::NamedTempFile::new()?;
    std::fs::write(
        profile.path(),
        serde_json::json!({
            "shareCredentialsVersion": 1,
            "endpoint": format!("{base}/delta-sharing"),
            "bearerToken": token,
        })
        .to_string(),
    )?;
    let child = std::process::Command::new(sharing_python())
        .arg("-c")
        .arg(script)
        .arg(profile.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("the delta-sharing client (scripts/ensure-tools --with-test-tools)")?;
    let output = wait_output(child, Duration::from_secs(120))?;
    anyhow::ensure!(
        output.status.success(),
        "delta-sharing client failed: {}\n--- stdout\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Whether a concrete path fits a route template (`{name}` matches one segment).
fn path_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

/// Where `value` breaks `schema` (the OpenAPI 3.0 subset the document uses: `$ref`, `type`,
/// `nullable`, `required`, `properties`, `items`, `additionalProperties`, `enum`).
fn schema_errors(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    document: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.trim_start_matches("#/components/schemas/");
        let resolved = &document["components"]["schemas"][name];
        if resolved.is_null() {
            return vec![format!("{at}: unresolved {target}")];
        }
        return schema_errors(resolved, value, document, at);
    }
    if value.is_null() {
        return if schema["nullable"] == true || schema.get("type").is_none() {
            Vec::new()
        } else {
            vec![format!("{at}: null where {schema} is not nullable")]
        };
    }
    let fits = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => return vec![format!("{at}: unknown type {other}")],
    };
    if !fits {
        return vec![format!("{at}: {value} is not a {}", schema["type"])];
    }
    let mut errors = Vec::new();
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if let Some(name) = name.as_str().filter(|n| !object.contains_key(*n)) {
                errors.push(format!("{at}: missing {name}"));
            }
        }
        for (name, child) in object {
            let child_schema = schema["properties"]
                .get(name)
                .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
            if let Some(child_schema) = child_schema {
                errors.extend(schema_errors(
                    child_schema,
                    child,
                    document,
                    &format!("{at}.{name}"),
                ));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            errors.extend(schema_errors(items, item, document, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// A change-feed request over `range` of `l2.trades`: its status and its lines (the error
/// object when refused).
async fn changes(
    served: &Served,
    token: &str,
    range: &str,
) -> Result<(u16, Vec<serde_json::Value>)> {
    let (status, _, body) = served
        .get(
            &format!("/delta-sharing/shares/marketlake/schemas/l2/tables/trades/changes?{range}"),
            token,
        )
        .await?;
    let lines = String::from_utf8(body)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    Ok((status, lines))
}

/// The change-feed requests over these ranges are refused with the protocol's error.
async fn changes_refused(served: &Served, token: &str, ranges: &[&str]) -> Result<()> {
    for range in ranges {
        let (status, lines) = changes(served, token, range).await?;
        assert_eq!(status, 400, "{range}: {lines:?}");
        let error = lines.first().context("an error object")?;
        assert_eq!(error["errorCode"], "INVALID_PARAMETER_VALUE", "{range}");
    }
    Ok(())
}

/// The `add` actions of a successful change-feed request over `range` of `l2.trades`.
async fn change_adds(served: &Served, token: &str, range: &str) -> Result<Vec<serde_json::Value>> {
    let (status, lines) = changes(served, token, range).await?;
    assert_eq!(status, 200, "{range}: {lines:?}");
    Ok(lines
        .into_iter()
        .filter_map(|l| l.get("add").cloned())
        .collect())
}

/// The lines of a sharing `query` answer.
async fn sharing_lines(served: &Served, token: &str, body: &str) -> Result<Vec<serde_json::Value>> {
    let (status, _, answer) = served
        .send(
            reqwest::Method::POST,
            "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/query",
            Some(token),
            Some(body.as_bytes().to_vec()),
            &[],
        )
        .await?;
    anyhow::ensure!(status == 200, "query {body}: {status}");
    Ok(String::from_utf8(answer)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect())
}

/// The sharing `version` for `startingTimestamp=instant`: `None` when refused with the
/// protocol's error.
async fn sharing_version(served: &Served, token: &str, instant: &str) -> Result<Option<i64>> {
    let (status, headers, body) = served
        .get(
            &format!(
                "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/version?startingTimestamp={instant}"
            ),
            token,
        )
        .await?;
    if status == 400 {
        let error: serde_json::Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(error["errorCode"] == "INVALID_PARAMETER_VALUE", "{error}");
        return Ok(None);
    }
    anyhow::ensure!(status == 200, "version at {instant}: {status}");
    let version = headers
        .get("delta-table-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("delta-table-version")?;
    Ok(Some(version))
}

/// How many files a Delta Sharing query of `l2.trades` with `body` answers.
async fn sharing_query_files(served: &Served, token: &str, body: &str) -> Result<usize> {
    let lines = sharing_lines(served, token, body).await?;
    Ok(lines.iter().filter(|l| l.get("file").is_some()).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sharing_client_reads_only_entitled_data() -> Result<()> {
    let (mut served, _) = serve("").await?;
    let base = served.client.base.clone();
    let compliance = token("carol", &["compliance"], &["compliance"])?;
    let quant = token("alice", &["quant"], &["desk-eq"])?;
    let other_desk = token("bob", &["quant"], &["desk-fx"])?;
    let script = r##"
import json, os, sys, delta_sharing
profile = sys.argv[1]
tables = sorted(f"{t.share}.{t.schema}.{t.name}" for t in delta_sharing.SharingClient(profile).list_all_tables())
out = {"tables": tables}
if "marketlake.l2.trades" in tables:
    df = delta_sharing.load_as_pandas(profile + "#marketlake.l2.trades")
    out["rows"] = len(df)
    out["columns"] = sorted(df.columns)
    out["symbols"] = sorted(set(df["symbol"]))
    out["accounts"] = sorted(set(str(a) for a in df["account"]))
    out["v1_rows"] = len(delta_sharing.load_as_pandas(profile + "#marketlake.l2.trades", version=1))
    out["limited"] = len(delta_sharing.load_as_pandas(profile + "#marketlake.l2.trades", limit=2))
    changes = delta_sharing.load_table_changes_as_pandas(profile + "#marketlake.l2.trades", starting_version=2)
    out["changes"] = len(changes)
    out["change_versions"] = sorted(set(int(v) for v in changes["_commit_version"]))
    out["change_types"] = sorted(set(changes["_change_type"]))
    out["change_symbols"] = sorted(set(changes["symbol"]))
    out["change_accounts"] = sorted(set(str(a) for a in changes["account"]))
print(json.dumps(out), flush=True)
# pyarrow's thread pools sometimes abort the interpreter's teardown ("terminate called without
# an active exception"); the answer is out, so leave without it.
os._exit(0)
"##;
    // Compliance: the table's own files, every row and column in clear, time travel, limit.
    let seen: serde_json::Value =
        serde_json::from_str(sharing_client(&base, &compliance, script)?.trim())?;
    assert_eq!(seen["tables"], serde_json::json!(["marketlake.l2.trades"]));
    assert_eq!(seen["rows"], 12);
    assert_eq!(seen["symbols"], serde_json::json!(["AAPL", "IBM", "MSFT"]));
    assert!(seen["columns"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "trader")));
    assert!(seen["accounts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a == "ACC-2")));
    assert_eq!(seen["v1_rows"], 4);
    assert!(seen["limited"].as_u64().is_some_and(|n| n >= 2));
    // The change data feed from version 2: the two later commits' rows, all inserts.
    assert_eq!(seen["changes"], 8, "{seen}");
    assert_eq!(seen["change_versions"], serde_json::json!([2, 3]));
    assert_eq!(seen["change_types"], serde_json::json!(["insert"]));
    assert_eq!(
        seen["change_symbols"],
        serde_json::json!(["AAPL", "IBM", "MSFT"])
    );

    // The quant: files written for the grant — AAPL and IBM only, account hashed, no trader.
    let seen: serde_json::Value =
        serde_json::from_str(sharing_client(&base, &quant, script)?.trim())?;
    assert_eq!(seen["rows"], 9, "{seen}");
    assert_eq!(seen["symbols"], serde_json::json!(["AAPL", "IBM"]));
    let columns = seen["columns"].as_array().context("columns")?;
    assert!(!columns.iter().any(|c| c == "trader"), "{seen}");
    assert!(
        seen["accounts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a.as_str().is_some_and(|a| a.len() == 64))),
        "{seen}"
    );
    // Its change data feed goes through the same entitled files.
    assert_eq!(seen["changes"], 6, "{seen}");
    assert_eq!(seen["change_symbols"], serde_json::json!(["AAPL", "IBM"]));
    assert!(
        seen["change_accounts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a.as_str().is_some_and(|a| a.len() == 64))),
        "{seen}"
    );

    // Another desk sees no table; a table it asks for directly does not exist for it.
    let seen: serde_json::Value =
        serde_json::from_str(sharing_client(&base, &other_desk, script)?.trim())?;
    assert_eq!(seen["tables"], serde_json::json!([]));
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/metadata",
        ),
        (
            reqwest::Method::POST,
            "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/query",
        ),
        (
            reqwest::Method::GET,
            "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/changes?startingVersion=1",
        ),
    ] {
        let request_body = (method == reqwest::Method::POST).then(|| b"{}".to_vec());
        let (status, _, body) = served
            .send(
                method.clone(),
                path,
                Some(&other_desk),
                request_body.clone(),
                &[],
            )
            .await?;
        assert_eq!(status, 404, "{path}");
        let error: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(error["errorCode"], "RESOURCE_DOES_NOT_EXIST");
        let (status, _, _) = served.send(method, path, None, request_body, &[]).await?;
        assert_eq!(status, 401, "{path} without a token");
    }

    // jsonPredicateHints prune the table's own files on their statistics (compliance: the first
    // file ends at n = 3, before the hint's n >= 10); where entitled files are served they are
    // ignored (the quant); a malformed hint is ignored, never an error.
    let after_first_file = serde_json::json!({"op": "greaterThanOrEqual", "children": [
        {"op": "column", "name": "event_time_ns", "valueType": "long"},
        {"op": "literal", "value": (1_767_623_400_000_000_000i64 + 10_000_000_000).to_string(),
         "valueType": "long"}
    ]})
    .to_string();
    let with_hint = serde_json::json!({ "jsonPredicateHints": after_first_file }).to_string();
    let malformed = serde_json::json!({ "jsonPredicateHints": "{\"op\": " }).to_string();
    let none = "{}".to_string();
    // Change ranges outside the table's versions are refused with the protocol's error.
    changes_refused(
        &served,
        &compliance,
        &[
            "startingVersion=9",
            "startingVersion=2&endingVersion=1",
            "endingVersion=2",
            "startingVersion=1&startingTimestamp=2026-01-01T00:00:00Z",
            "startingTimestamp=yesterday",
            "startingVersion=0&endingTimestamp=2000-01-01T00:00:00Z",
        ],
    )
    .await?;
    // From an instant before the table existed: every commit; up to an instant after the
    // last commit: the same three, read walking the versions.
    for range in [
        "startingTimestamp=2000-01-01T00:00:00Z",
        "startingVersion=1&endingTimestamp=2100-01-01T00:00:00Z",
    ] {
        assert_eq!(
            change_adds(&served, &compliance, range).await?.len(),
            3,
            "{range}"
        );
    }

    // A streaming reader's query from a version lists the same data change files as
    // `changes`; it cannot also name a snapshot, nor end without a start.
    let changed = change_adds(&served, &compliance, "startingVersion=2").await?;
    let lines = sharing_lines(&served, &compliance, r#"{"startingVersion": 2}"#).await?;
    let streamed: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("add")).collect();
    let ids = |adds: &[&serde_json::Value]| -> Vec<(i64, String)> {
        adds.iter()
            .map(|a| (a["version"].as_i64().unwrap_or(-1), a["id"].to_string()))
            .collect()
    };
    assert_eq!(ids(&streamed), ids(&changed.iter().collect::<Vec<_>>()));
    assert_eq!(streamed.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.get("file").is_none()), "{lines:?}");
    // From version 0: the listing is described by version 0's metadata (with its version),
    // and no version after it changed the metadata.
    let lines = sharing_lines(&served, &compliance, r#"{"startingVersion": 0}"#).await?;
    let metadata: Vec<Option<i64>> = lines
        .iter()
        .filter(|l| l.get("metaData").is_some())
        .map(|l| l["metaData"]["version"].as_i64())
        .collect();
    assert_eq!(metadata, [Some(0)], "{lines:?}");
    // The quant streams the same entitled files as its change feed lists.
    let quant_changes = change_adds(&served, &quant, "startingVersion=1").await?;
    let lines = sharing_lines(&served, &quant, r#"{"startingVersion": 1}"#).await?;
    let quant_streamed: Vec<&serde_json::Value> =
        lines.iter().filter_map(|l| l.get("add")).collect();
    assert_eq!(
        ids(&quant_streamed),
        ids(&quant_changes.iter().collect::<Vec<_>>())
    );
    assert_eq!(quant_streamed.len(), 3);
    assert!(
        quant_streamed.iter().all(|a| a.get("stats").is_none()),
        "entitled files carry no table statistics: {quant_streamed:?}"
    );
    for body in [
        r#"{"startingVersion": 2, "version": 3}"#,
        r#"{"endingVersion": 2}"#,
        r#"{"startingVersion": 9}"#,
    ] {
        let (status, _, answer) = served
            .send(
                reqwest::Method::POST,
                "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/query",
                Some(&compliance),
                Some(body.as_bytes().to_vec()),
                &[],
            )
            .await?;
        assert_eq!(status, 400, "{body}");
        let error: serde_json::Value = serde_json::from_slice(&answer)?;
        assert_eq!(error["errorCode"], "INVALID_PARAMETER_VALUE", "{body}");
    }
    // Historical metadata: version 0 created the table, and no later version changed it.
    for (range, versions) in [
        ("startingVersion=0&includeHistoricalMetadata=true", vec![0]),
        ("startingVersion=1&includeHistoricalMetadata=true", vec![]),
        ("startingVersion=0", vec![]),
    ] {
        let (status, lines) = changes(&served, &compliance, range).await?;
        assert_eq!(status, 200, "{range}");
        let historical: Vec<i64> = lines
            .iter()
            .filter_map(|l| l["metaData"]["version"].as_i64())
            .collect();
        assert_eq!(historical, versions, "{range}");
    }
    // The version endpoint with startingTimestamp: the first version committed at or after it.
    let all = change_adds(&served, &compliance, "startingVersion=0").await?;
    let committed: Vec<(i64, i64)> = all
        .iter()
        .filter_map(|a| Some((a["version"].as_i64()?, a["timestamp"].as_i64()?)))
        .collect();
    // One append per version: 1, 2 and 3, committed 30 ms apart.
    let (_, second_ms) = *committed
        .iter()
        .find(|(v, _)| *v == 2)
        .context("version 2's commit")?;
    let first_at_or_after = |instant_ms: i64| {
        committed
            .iter()
            .find(|(_, ms)| *ms >= instant_ms)
            .map(|(v, _)| *v)
    };
    assert_eq!(first_at_or_after(second_ms), Some(2));
    assert_eq!(first_at_or_after(second_ms + 1), Some(3));
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    for (instant, expected) in [
        (rfc3339(second_ms), Some(2)),
        (rfc3339(second_ms + 1), Some(3)),
        ("2000-01-01T00:00:00Z".to_string(), Some(0)),
        ("2100-01-01T00:00:00Z".to_string(), None),
    ] {
        assert_eq!(
            sharing_version(&served, &compliance, &instant).await?,
            expected,
            "{instant}"
        );
    }

    for (who, body, files) in [
        (&compliance, &none, 3),
        (&compliance, &with_hint, 2),
        (&compliance, &malformed, 3),
        (&quant, &with_hint, 3),
    ] {
        assert_eq!(
            sharing_query_files(&served, who, body).await?,
            files,
            "{body}"
        );
    }

    // File URLs are signed: a tampered one is refused; a revoked grant stops downloads.
    let (_, _, body) = served
        .send(
            reqwest::Method::POST,
            "/delta-sharing/shares/marketlake/schemas/l2/tables/trades/query",
            Some(&quant),
            Some(b"{}".to_vec()),
            &[],
        )
        .await?;
    let text = String::from_utf8(body)?;
    let url = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| l["file"]["url"].as_str().map(str::to_owned))
        .context("a file url")?;
    let (payload, mac) = url.rsplit_once('.').context("signed url")?;
    let forged = format!("{payload}.{}", mac.replace('a', "b").replace('1', "2"));
    let status = served
        .client
        .http
        .get(&forged)
        .send()
        .await?
        .status()
        .as_u16();
    assert_eq!(status, 403);
    let ranged = served
        .client
        .http
        .get(&url)
        .header("Range", "bytes=0-3")
        .send()
        .await?;
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(ranged.bytes().await?.as_ref(), b"PAR1");

    // A checkpoint at the last append (nothing small enough to compact), then a compaction and
    // its checkpoint: the change feed still lists the three appends, with commit times read
    // from the log where the checkpointed snapshot no longer holds them, and the compaction
    // itself lists nothing.
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == marketlake_schemas::names::L2_TRADES)
        .context("l2.trades spec")?;
    for small_file_bytes in [0, 32 * 1024 * 1024] {
        let report = marketlake_lake::maintain::maintain_table(
            &served.lake.lake_config(),
            &spec,
            small_file_bytes,
        )
        .await?;
        assert_eq!(
            report.compaction_version.is_some(),
            small_file_bytes > 0,
            "{report:?}"
        );
        let adds = change_adds(&served, &compliance, "startingVersion=0").await?;
        let versions: Vec<i64> = adds.iter().filter_map(|a| a["version"].as_i64()).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert!(
            adds.iter().all(|a| a["timestamp"]
                .as_i64()
                .is_some_and(|t| t > 1_700_000_000_000)),
            "{adds:?}"
        );
    }

    // Log cleanup past the retention removes the commits before the oldest checkpoint kept
    // (version 3, written above): the versions before it are the caller's out-of-range
    // request (400), never a server error, and the later ones still list.
    let log = served
        .lake
        .lake_config()
        .root
        .join(spec.name.relative_path())
        .join("_delta_log");
    for version in 0..3 {
        std::fs::remove_file(log.join(format!("{version:020}.json")))?;
    }
    changes_refused(
        &served,
        &compliance,
        &[
            "startingTimestamp=2000-01-01T00:00:00Z",
            "startingVersion=1",
            "startingVersion=3",
        ],
    )
    .await?;
    assert_eq!(
        sharing_version(&served, &compliance, "2000-01-01T00:00:00Z").await?,
        None
    );
    let adds = change_adds(&served, &compliance, "startingVersion=4").await?;
    assert!(adds.is_empty(), "a compaction lists nothing: {adds:?}");
    // Time travel to before the oldest readable version is refused, never answered with it.
    let (status, _, body) = served
        .get(
            "/v1/datasets/l2.trades/rows?as_of_time=2000-01-01T00:00:00Z",
            &compliance,
        )
        .await?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(error["error"]["code"], "bad_as_of_time");

    // A commit after the cleanup (version 5) lists as usual.
    let rows: Vec<TradeRow> = (40..42)
        .map(|n| trade(n, "IBM", &format!("ACC-{n}")))
        .collect();
    commit(&mut served.sink, &rows, Some(23), 41).await?;
    let adds = change_adds(&served, &compliance, "startingVersion=4").await?;
    let versions: Vec<i64> = adds.iter().filter_map(|a| a["version"].as_i64()).collect();
    assert_eq!(versions, [5]);

    // A feed gains a field: the table gains a nullable column (a metadata-only version, 6).
    // Historical metadata lists that version with the new schema; the quant's line keeps its
    // masks (the hidden trader column stays out).
    let evolved = marketlake_lake::TableSpec {
        schema: marketlake_schemas::l2::trades_schema_with(&[
            marketlake_schemas::extra::ExtraColumn {
                name: "venue_fee".into(),
                kind: marketlake_schemas::extra::ExtraType::Float64,
            },
        ]),
        ..spec
    };
    marketlake_lake::open_or_create(&served.lake.lake_config(), &evolved).await?;
    for who in [&compliance, &quant] {
        let (status, lines) = changes(
            &served,
            who,
            "startingVersion=4&includeHistoricalMetadata=true",
        )
        .await?;
        assert_eq!(status, 200, "{lines:?}");
        let historical: Vec<serde_json::Value> = lines
            .into_iter()
            .filter(|l| l["metaData"]["version"].is_i64())
            .collect();
        assert_eq!(historical.len(), 1, "{historical:?}");
        assert_eq!(historical[0]["metaData"]["version"], 6);
        let schema = historical[0]["metaData"]["schemaString"]
            .as_str()
            .context("schemaString")?;
        assert!(schema.contains("venue_fee"), "{schema}");
        assert_eq!(
            schema.contains("\"trader\""),
            who == &compliance,
            "{schema}"
        );
    }
    served.stop().await
}
