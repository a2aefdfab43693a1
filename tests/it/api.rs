//! The API's security matrix and extraction: every protected route × {no token, expired, wrong
//! audience, wrong issuer, bad signature, `alg: none`, a `jku` header, a principal of another
//! desk, an entitled quant, compliance}; no row outside the filter and no masked value in any
//! format; every data response audited with the hash of its body; time travel by version.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use marketlake_api::auth::mint;
use marketlake_api::config::AuthConfig;
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, OffsetAdvance};
use marketlake_schemas::l2::{self, Lineage, TradeAction, TradeRow};
use sha2::Digest;

use crate::support::{free_port, sigint, wait_output, Lake, LakeOptions};

pub(crate) fn trade(i: i64, symbol: &str, account: &str) -> TradeRow {
    TradeRow {
        trade_key: format!("t:{i}"),
        action: TradeAction::New,
        supersedes: None,
        symbol: symbol.into(),
        isin: None,
        figi: None,
        instrument_name: None,
        exchange: None,
        currency: Some("USD".into()),
        price: 10_000_000_000 + i,
        quantity: 1_000_000,
        side: Some("buy".into()),
        venue: Some("XNAS".into()),
        trade_id: None,
        order_id: Some(format!("O{i}")),
        account: Some(account.into()),
        trader: Some(format!("trader-{account}")),
        event_time_ns: 1_767_623_400_000_000_000 + i * 1_000_000_000,
        received_at_ns: 1_767_623_400_000_000_000 + i * 1_000_000_000,
        reference_version: None,
        extra: Default::default(),
        flags: Vec::new(),
        lineage: Lineage {
            source_id: "api-test".into(),
            source_uri: "test://api".into(),
            source_position: i,
            raw_topic: "raw.trades".into(),
            raw_partition: 0,
            raw_offset: i,
        },
    }
}

pub(crate) async fn commit(
    sink: &mut ExactlyOnceSink,
    rows: &[TradeRow],
    from: Option<i64>,
    to: i64,
) -> Result<()> {
    let batch = l2::trades_batch(rows, 0)?;
    let advance = OffsetAdvance {
        topic: "raw.trades".into(),
        partition: 0,
        from,
        to,
    };
    let outcome = sink.commit(batch, &[advance]).await?;
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    Ok(())
}

pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Client {
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, Vec<u8>)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }
}

/// The rows of a JSON page.
pub(crate) fn page_rows(body: &[u8]) -> Result<Vec<BTreeMap<String, serde_json::Value>>> {
    let page: serde_json::Value = serde_json::from_slice(body)?;
    Ok(serde_json::from_value(page["rows"].clone())?)
}

/// A body as text whatever its format (binary formats decoded, then written as NDJSON), so
/// the same leak checks apply to every format.
fn as_text(format: &str, body: Vec<u8>) -> Result<String> {
    use marketlake_lake::extract::{decode, encode, Format};
    // `format` may carry more query parameters: `arrow&dictionary=true`.
    let name = format.split('&').next().unwrap_or(format);
    let format = Format::parse(name).context("format")?;
    if !matches!(format, Format::Arrow | Format::Parquet) {
        return Ok(String::from_utf8(body)?);
    }
    let batches = decode(format, body)?;
    let schema = batches.first().context("at least one batch")?.schema();
    let (text, _) = encode(schema, &batches, Format::Ndjson)?;
    Ok(String::from_utf8(text)?)
}

pub(crate) fn code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn unsigned_none_token(auth: &AuthConfig) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = marketlake_schemas::now_utc_ns() / 1_000_000_000;
    format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(
            serde_json::json!({"sub": "mallory", "iss": auth.issuer, "aud": auth.audience, "exp": now + 600, "groups": ["compliance"]})
        )
    )
}

fn jku_token(auth: &AuthConfig) -> Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.jku = Some("https://evil.example/jwks.json".into());
    let now = marketlake_schemas::now_utc_ns() / 1_000_000_000;
    Ok(jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "mallory", "iss": auth.issuer, "aud": auth.audience, "exp": now + 600, "groups": ["compliance"]}),
        &jsonwebtoken::EncodingKey::from_secret(auth.hmac_secret.as_bytes()),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_authenticates_entitles_and_audits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    security_matrix(&format!("sqlite://{}/catalog.db", dir.path().display())).await
}

/// The same matrix with the catalog on PostgreSQL (several API instances share one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_authenticates_entitles_and_audits_on_postgres() -> Result<()> {
    let postgres = crate::support::Postgres::start()?;
    security_matrix(&postgres.url).await
}

async fn security_matrix(catalog_url: &str) -> Result<()> {
    let port = free_port();
    let grants = tempfile::NamedTempFile::new()?;
    std::fs::write(
        grants.path(),
        r#"
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
"#,
    )?;
    let lake = Lake::new(LakeOptions {
        extra_toml: format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ncatalog_url = \"{catalog_url}\"\nseed_grants_file = \"{}\"\n",
            grants.path().display()
        ),
        ..LakeOptions::default()
    })?;
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == marketlake_schemas::names::L2_TRADES)
        .context("l2.trades spec")?;
    let mut sink = ExactlyOnceSink::open(&lake.lake_config(), spec, "api-test").await?;
    let first: Vec<TradeRow> = vec![
        trade(0, "AAPL", "ACC-1"),
        trade(1, "IBM", "ACC-2"),
        trade(2, "MSFT", "ACC-3"),
    ];
    commit(&mut sink, &first, None, 2).await?;
    let second = vec![trade(3, "AAPL", "ACC-4"), trade(4, "MSFT", "ACC-5")];
    commit(&mut sink, &second, Some(2), 4).await?;

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

    let auth = AuthConfig::default();
    let quant = mint(&auth, "alice", &["quant".into()], &["desk-eq".into()], 600)?;
    let other_desk = mint(&auth, "bob", &["quant".into()], &["desk-fx".into()], 600)?;
    let compliance = mint(
        &auth,
        "carol",
        &["compliance".into()],
        &["compliance".into()],
        600,
    )?;
    let expired = mint(&auth, "alice", &[], &["desk-eq".into()], -3_600)?;
    let wrong_audience = mint(
        &AuthConfig {
            audience: "other".into(),
            ..auth.clone()
        },
        "alice",
        &[],
        &["desk-eq".into()],
        600,
    )?;
    let wrong_issuer = mint(
        &AuthConfig {
            issuer: "someone-else".into(),
            ..auth.clone()
        },
        "alice",
        &[],
        &["desk-eq".into()],
        600,
    )?;
    let bad_signature = mint(
        &AuthConfig {
            hmac_secret: "a-different-secret-entirely".into(),
            ..auth.clone()
        },
        "alice",
        &[],
        &["desk-eq".into()],
        600,
    )?;
    let none = unsigned_none_token(&auth);
    let jku = jku_token(&auth)?;
    let rejected: Vec<(&str, Option<&str>, &str)> = vec![
        ("no token", None, "token_missing"),
        ("expired", Some(&expired), "token_expired"),
        ("wrong audience", Some(&wrong_audience), "wrong_audience"),
        ("wrong issuer", Some(&wrong_issuer), "wrong_issuer"),
        ("bad signature", Some(&bad_signature), "bad_signature"),
        ("alg none", Some(&none), "alg_not_allowed"),
        ("jku header", Some(&jku), "forbidden_header"),
        ("garbage", Some("not.a.jwt"), "token_malformed"),
    ];
    for route in ["/v1/datasets", "/v1/datasets/l2.trades/rows"] {
        for (what, token, want) in &rejected {
            let (status, body) = client.get(route, *token).await?;
            assert_eq!(
                status,
                401,
                "{route} with {what}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(code(&body), *want, "{route} with {what}");
        }
    }

    // Dataset listing follows the grants.
    let (status, body) = client.get("/v1/datasets", Some(&quant)).await?;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body)?;
    let names: Vec<&str> = listed["datasets"]
        .as_array()
        .context("datasets")?
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, vec!["l2.trades"]);
    let (_, body) = client.get("/v1/datasets", Some(&other_desk)).await?;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body)?["datasets"],
        serde_json::json!([])
    );

    // Another desk: 404, exactly like a dataset that does not exist.
    let (status, denied) = client
        .get("/v1/datasets/l2.trades/rows", Some(&other_desk))
        .await?;
    assert_eq!(status, 404);
    let (status, missing) = client
        .get("/v1/datasets/l9.nothing/rows", Some(&compliance))
        .await?;
    assert_eq!(status, 404);
    assert_eq!(code(&denied), code(&missing));

    // The quant: only AAPL and IBM, account hashed, trader hidden, in every format (and with
    // the categorical columns as dictionaries).
    let formats = [
        "json",
        "ndjson",
        "csv",
        "arrow",
        "parquet",
        "arrow&dictionary=true",
        "parquet&dictionary=true",
    ];
    let mut texts = BTreeMap::new();
    for format in formats {
        let (status, body) = client
            .get(
                &format!("/v1/datasets/l2.trades/rows?format={format}"),
                Some(&quant),
            )
            .await?;
        assert_eq!(status, 200, "{format}: {}", String::from_utf8_lossy(&body));
        // The raw bytes too: a dictionary must not carry values of rows outside the grant.
        assert!(
            !body.windows(4).any(|w| w == b"MSFT"),
            "{format} carries a value of a row outside the filter"
        );
        let text = as_text(format, body)?;
        texts.insert(format, text.clone());
        assert!(
            !text.contains("MSFT"),
            "{format} leaks a row outside the filter: {text}"
        );
        for account in ["ACC-1", "ACC-2", "ACC-4"] {
            assert!(
                !text.contains(account),
                "{format} leaks a masked account: {text}"
            );
        }
        assert!(
            !text.contains("trader"),
            "{format} leaks a hidden column: {text}"
        );
        assert!(
            text.contains("AAPL") && text.contains("IBM"),
            "{format}: {text}"
        );
    }
    // Dictionaries change the encoding, never a value: the same rows and hashes.
    assert_eq!(texts["arrow&dictionary=true"], texts["arrow"]);
    assert_eq!(texts["parquet&dictionary=true"], texts["parquet"]);
    let (_, body) = client
        .get(
            "/v1/datasets/l2.trades/rows?format=arrow&dictionary=true",
            Some(&quant),
        )
        .await?;
    let batches = marketlake_lake::extract::decode(marketlake_lake::extract::Format::Arrow, body)?;
    // Every dictionary value sent is the value of a row sent (compacting changes nothing): no
    // other desk's symbols, and no hashes of accounts outside the grant.
    for batch in &batches {
        let compacted = marketlake_lake::extract::compact_dictionaries(batch)?;
        for (sent, kept) in batch.columns().iter().zip(compacted.columns()) {
            use marketlake_lake::read::Array;
            assert!(
                sent.to_data().ptr_eq(&kept.to_data()),
                "unused dictionary values: {sent:?}"
            );
        }
    }
    let schema = batches.first().context("a batch")?.schema();
    for (column, dictionary) in [("symbol", true), ("account", true), ("trade_id", false)] {
        let data_type = format!("{:?}", schema.field_with_name(column)?.data_type());
        assert_eq!(
            data_type.starts_with("Dictionary"),
            dictionary,
            "{column}: {data_type}"
        );
    }
    let (status, body) = client
        .get(
            "/v1/datasets/l2.trades/rows?format=ndjson&dictionary=true",
            Some(&quant),
        )
        .await?;
    assert_eq!((status, code(&body).as_str()), (400, "bad_query"));
    let (_, body) = client
        .get("/v1/datasets/l2.trades/rows", Some(&quant))
        .await?;
    let rows = page_rows(&body)?;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let account = row["account"].as_str().context("account")?;
        assert_eq!(account.len(), 64, "a keyed hash, not the value: {account}");
    }
    // Asking for more than the grant gives no more.
    let (_, body) = client
        .get(
            "/v1/datasets/l2.trades/rows?symbols=MSFT,AAPL",
            Some(&quant),
        )
        .await?;
    let rows = page_rows(&body)?;
    assert!(rows.iter().all(|r| r["symbol"] == "AAPL") && rows.len() == 2);
    let last_quant_body = body.clone();

    // Compliance sees everything in clear; time travel returns version 1 as it was.
    let (_, body) = client
        .get("/v1/datasets/l2.trades/rows", Some(&compliance))
        .await?;
    let rows = page_rows(&body)?;
    assert_eq!(rows.len(), 5);
    assert!(String::from_utf8_lossy(&body).contains("ACC-3"));
    let (_, body) = client
        .get(
            "/v1/datasets/l2.trades/rows?as_of_version=1",
            Some(&compliance),
        )
        .await?;
    let rows = page_rows(&body)?;
    assert_eq!(rows.len(), 3, "as_of_version=1 holds the first commit only");

    // Every data response was audited with the hash of the exact body.
    sigint(&server);
    let exit = wait_output(server, Duration::from_secs(20))?;
    assert!(exit.status.success(), "{}", lake.log("serve.log"));
    let catalog = marketlake_api::catalog::Catalog::connect(catalog_url).await?;
    let refused = catalog.audit_of("-").await?;
    assert_eq!(
        refused.len(),
        16,
        "every refused token is audited: {refused:?}"
    );
    let events = catalog.audit_of("alice").await?;
    assert_eq!(events.len(), 12, "{events:?}");
    let last = events.last().context("an event")?;
    let sha: String = sha2::Sha256::digest(&last_quant_body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(last.3, sha, "audit hash of the last body sent to alice");
    assert_eq!(last.1, 2, "rows returned");
    assert_eq!(last.2, last_quant_body.len() as i64, "bytes returned");
    Ok(())
}
