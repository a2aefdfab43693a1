//! The SQL catalog: numbered migrations (the same files on SQLite and PostgreSQL), grants and
//! audit events. Every query binds its values; nothing from a request is pasted into SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use marketlake_lake::extract::{GrantRows, Mask, RowFilter};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::auth::Principal;

/// The migrations, in order: `(version, name, sql)`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../../../migrations/0001_catalog.sql"),
    ),
    (
        2,
        "catalog_events",
        include_str!("../../../migrations/0002_catalog_events.sql"),
    ),
    (
        3,
        "audit_outcome_and_grant_changes",
        include_str!("../../../migrations/0003_audit_outcome_and_grant_changes.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("grants file {path}: {message}")]
    Seed { path: String, message: String },
}

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// A grant of one dataset to a user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub grant_id: String,
    pub dataset: String,
    /// `user` (matched against the token's `sub`) or `group`.
    pub principal_kind: String,
    pub principal: String,
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    #[serde(default)]
    pub venues: Option<Vec<String>>,
    /// Column → `hide` or `hash`.
    #[serde(default)]
    pub column_masks: BTreeMap<String, String>,
}

/// What a principal may see of one dataset, all its grants combined: a row passes when any
/// one grant's restrictions all hold (never one grant's symbols with another's venues); a column
/// is masked as strictly as any grant masks it (hidden if any hides it, else hashed if any
/// hashes it). Strictest masks can show a principal with several grants less than one grant
/// alone would; they never show more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub grant_ids: Vec<String>,
    pub filter: RowFilter,
    pub masks: BTreeMap<String, Mask>,
}

fn combine(grants: &[Grant]) -> Option<Entitlement> {
    if grants.is_empty() {
        return None;
    }
    let set = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| v.iter().cloned().collect::<BTreeSet<_>>())
    };
    let mut masks: BTreeMap<String, Mask> = BTreeMap::new();
    for grant in grants {
        for (column, mask) in &grant.column_masks {
            let mask = if mask == "hash" {
                Mask::Hash
            } else {
                Mask::Hide
            };
            let entry = masks.entry(column.clone()).or_insert(mask);
            if mask == Mask::Hide {
                *entry = Mask::Hide;
            }
        }
    }
    Some(Entitlement {
        grant_ids: grants.iter().map(|g| g.grant_id.clone()).collect(),
        filter: RowFilter {
            any_of: grants
                .iter()
                .map(|g| GrantRows {
                    symbols: set(&g.symbols),
                    venues: set(&g.venues),
                })
                .collect(),
            ..Default::default()
        },
        masks,
    })
}

/// One audit event (see `audit_events` in the migrations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub event_id: String,
    pub at_ns: i64,
    pub request_id: String,
    pub principal: String,
    pub groups: Vec<String>,
    pub endpoint: String,
    pub query: String,
    pub entitlements: Vec<String>,
    pub as_of: Option<String>,
    pub status: u16,
    pub rows_returned: i64,
    pub bytes_returned: i64,
    pub body_sha256: String,
    /// `complete` for a response sent in one piece; `streaming` until a streamed response ends.
    pub outcome: String,
}

/// How a streamed response ended, recorded into its audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub rows_returned: i64,
    pub bytes_returned: i64,
    pub body_sha256: String,
    /// `complete`, `aborted: <why>` or `failed: <why>`.
    pub outcome: String,
}

/// One change to the grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantChange {
    pub change_id: String,
    pub at_ns: i64,
    pub actor: String,
    pub action: String,
    pub grant_id: String,
    pub grant: serde_json::Value,
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    url: String,
}

pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    crate::http::hex(&bytes)
}

impl Catalog {
    /// Connect (creating a SQLite file and its directory when missing) and migrate.
    pub async fn connect(url: &str) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let mut connect_url = url.to_string();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = Path::new(path).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if !url.contains('?') {
                connect_url = format!("{url}?mode=rwc");
            }
        }
        let err = |source| CatalogError::Database {
            url: url.to_string(),
            source,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&connect_url)
            .await
            .map_err(err)?;
        let catalog = Catalog {
            pool,
            url: url.to_string(),
        };
        catalog.migrate().await?;
        Ok(catalog)
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> CatalogError + '_ {
        move |source| CatalogError::Database {
            url: self.url.clone(),
            source,
        }
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ns BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        for (version, name, sql) in MIGRATIONS {
            let applied: Option<AnyRow> =
                sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.err())?;
            if applied.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(self.err())?;
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at_ns) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*name)
            .bind(marketlake_schemas::now_utc_ns())
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
            tx.commit().await.map_err(self.err())?;
            tracing::info!(version, name, "catalog migration applied");
        }
        Ok(())
    }

    pub async fn ready(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }

    async fn insert_grant(
        &self,
        conn: &mut sqlx::AnyConnection,
        grant: &Grant,
        by: &str,
    ) -> Result<String> {
        validate_grant(grant).map_err(|message| CatalogError::Seed {
            path: format!(
                "grant of {} to {} {}",
                grant.dataset, grant.principal_kind, grant.principal
            ),
            message,
        })?;
        let id = if grant.grant_id.is_empty() {
            new_id()
        } else {
            grant.grant_id.clone()
        };
        let json = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| serde_json::to_string(v).unwrap_or_default())
        };
        sqlx::query(
            "INSERT INTO grants (grant_id, dataset, principal_kind, principal, symbols, venues, column_masks, created_by, created_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&grant.dataset)
        .bind(&grant.principal_kind)
        .bind(&grant.principal)
        .bind(json(&grant.symbols))
        .bind(json(&grant.venues))
        .bind(serde_json::to_string(&grant.column_masks).unwrap_or_else(|_| "{}".into()))
        .bind(by)
        .bind(marketlake_schemas::now_utc_ns())
        .execute(&mut *conn)
        .await
        .map_err(self.err())?;
        Ok(id)
    }

    /// Load grants from a TOML file (`[[grants]]` entries) once in the catalog's life: a
    /// catalog whose grants were all revoked stays empty.
    pub async fn seed(&self, path: &Path) -> Result<usize> {
        let seeded: Option<AnyRow> = sqlx::query("SELECT name FROM catalog_events WHERE name = $1")
            .bind("grants_seeded")
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        if seeded.is_some() {
            return Ok(0);
        }
        let seed_err = |message: String| CatalogError::Seed {
            path: path.display().to_string(),
            message,
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SeedFile {
            grants: Vec<Grant>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| seed_err(e.to_string()))?;
        let file: SeedFile = toml_from_str(&text).map_err(seed_err)?;
        for grant in &file.grants {
            validate_grant(grant).map_err(seed_err)?;
            self.grant(grant, "seed", None).await?;
        }
        sqlx::query("INSERT INTO catalog_events (name, at_ns) VALUES ($1, $2)")
            .bind("grants_seeded")
            .bind(marketlake_schemas::now_utc_ns())
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(file.grants.len())
    }

    /// A grant row; a malformed filter or mask fails the request rather than widening access.
    fn grant_of(row: &AnyRow) -> std::result::Result<Grant, sqlx::Error> {
        let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
        let list = |text: Option<String>| -> std::result::Result<Option<Vec<String>>, sqlx::Error> {
            text.map(|t| serde_json::from_str::<Vec<String>>(&t).map_err(decode))
                .transpose()
        };
        let grant = Grant {
            grant_id: row.try_get("grant_id")?,
            dataset: row.try_get("dataset")?,
            principal_kind: row.try_get("principal_kind")?,
            principal: row.try_get("principal")?,
            symbols: list(row.try_get("symbols")?)?,
            venues: list(row.try_get("venues")?)?,
            column_masks: serde_json::from_str(&row.try_get::<String, _>("column_masks")?)
                .map_err(decode)?,
        };
        validate_grant(&grant).map_err(|m| sqlx::Error::Decode(m.into()))?;
        Ok(grant)
    }

    /// Every grant that applies to `principal` (its own and its groups').
    pub async fn grants_for(&self, principal: &Principal) -> Result<Vec<Grant>> {
        let mut grants = Vec::new();
        let mut asks = vec![("user", principal.sub.as_str())];
        asks.extend(principal.groups.iter().map(|g| ("group", g.as_str())));
        for (kind, name) in asks {
            let rows = sqlx::query(
                "SELECT grant_id, dataset, principal_kind, principal, symbols, venues, column_masks FROM grants WHERE principal_kind = $1 AND principal = $2",
            )
            .bind(kind)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())?;
            for row in &rows {
                grants.push(Self::grant_of(row).map_err(self.err())?);
            }
        }
        Ok(grants)
    }

    /// The datasets `principal` may read, with the combined entitlement of each.
    pub async fn entitlements(
        &self,
        principal: &Principal,
    ) -> Result<BTreeMap<String, Entitlement>> {
        let mut by_dataset: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        for grant in self.grants_for(principal).await? {
            by_dataset
                .entry(grant.dataset.clone())
                .or_default()
                .push(grant);
        }
        Ok(by_dataset
            .into_iter()
            .filter_map(|(dataset, grants)| combine(&grants).map(|e| (dataset, e)))
            .collect())
    }

    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(self.err())?;
        self.record_on(&mut conn, event).await
    }

    /// Record the event a transaction's caller built, if any, and hand back what came with it.
    async fn record_audit<T: Default>(
        &self,
        conn: &mut sqlx::AnyConnection,
        audit: Option<(AuditEvent, T)>,
    ) -> Result<T> {
        match audit {
            Some((event, extra)) => {
                self.record_on(conn, &event).await?;
                Ok(extra)
            }
            None => Ok(T::default()),
        }
    }

    async fn record_on(&self, conn: &mut sqlx::AnyConnection, event: &AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_events (event_id, at_ns, request_id, principal, groups_json, endpoint, query, entitlements, as_of, status, rows_returned, bytes_returned, body_sha256, outcome, completed_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&event.event_id)
        .bind(event.at_ns)
        .bind(&event.request_id)
        .bind(&event.principal)
        .bind(serde_json::to_string(&event.groups).unwrap_or_default())
        .bind(&event.endpoint)
        .bind(&event.query)
        .bind(serde_json::to_string(&event.entitlements).unwrap_or_default())
        .bind(event.as_of.clone())
        .bind(i32::from(event.status))
        .bind(event.rows_returned)
        .bind(event.bytes_returned)
        .bind(&event.body_sha256)
        .bind(&event.outcome)
        .bind((event.outcome != "streaming").then_some(event.at_ns))
        .execute(&mut *conn)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Complete the audit event of a streamed response.
    pub async fn complete(&self, event_id: &str, completion: &Completion) -> Result<()> {
        sqlx::query(
            "UPDATE audit_events SET rows_returned = $1, bytes_returned = $2, body_sha256 = $3, outcome = $4, completed_at_ns = $5 WHERE event_id = $6",
        )
        .bind(completion.rows_returned)
        .bind(completion.bytes_returned)
        .bind(&completion.body_sha256)
        .bind(&completion.outcome)
        .bind(marketlake_schemas::now_utc_ns())
        .bind(event_id)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Every grant, by dataset and principal.
    pub async fn list_grants(&self) -> Result<Vec<Grant>> {
        let rows = sqlx::query(
            "SELECT grant_id, dataset, principal_kind, principal, symbols, venues, column_masks FROM grants ORDER BY dataset, principal_kind, principal, grant_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(Self::grant_of)
            .collect::<std::result::Result<_, _>>()
            .map_err(self.err())
    }

    /// Create a grant and record the change, in one transaction.
    pub async fn grant(
        &self,
        grant: &Grant,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Grant> {
        let (grant, ()) = self
            .grant_audited(grant, actor, request_id, |_| None)
            .await?;
        Ok(grant)
    }

    /// Store a grant and, in the same transaction, its change record and the audit event
    /// `audit` builds from the stored grant (with whatever the caller derives beside it, e.g.
    /// the response body the event hashes): no grant takes effect without its audit event.
    pub async fn grant_audited<T>(
        &self,
        grant: &Grant,
        actor: &str,
        request_id: Option<&str>,
        audit: impl FnOnce(&Grant) -> Option<(AuditEvent, T)>,
    ) -> Result<(Grant, T)>
    where
        T: Default,
    {
        let mut grant = grant.clone();
        if grant.grant_id.is_empty() {
            grant.grant_id = new_id();
        }
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        grant.grant_id = self.insert_grant(&mut tx, &grant, actor).await?;
        self.record_change(&mut tx, actor, "grant", &grant, request_id)
            .await?;
        let extra = self.record_audit(&mut tx, audit(&grant)).await?;
        tx.commit().await.map_err(self.err())?;
        Ok((grant, extra))
    }

    /// Revoke a grant (delete it; its history stays in `grant_changes`). `None` when no such
    /// grant exists.
    pub async fn revoke(
        &self,
        grant_id: &str,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Option<Grant>> {
        Ok(self
            .revoke_audited(grant_id, actor, request_id, |_| None::<(AuditEvent, ())>)
            .await?
            .map(|(grant, ())| grant))
    }

    /// [`Catalog::revoke`] with the audit event recorded in the same transaction (see
    /// [`Catalog::grant_audited`]).
    pub async fn revoke_audited<T>(
        &self,
        grant_id: &str,
        actor: &str,
        request_id: Option<&str>,
        audit: impl FnOnce(&Grant) -> Option<(AuditEvent, T)>,
    ) -> Result<Option<(Grant, T)>>
    where
        T: Default,
    {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        let row = sqlx::query(
            "SELECT grant_id, dataset, principal_kind, principal, symbols, venues, column_masks FROM grants WHERE grant_id = $1",
        )
        .bind(grant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.err())?;
        let Some(row) = row else {
            return Ok(None);
        };
        let grant = Self::grant_of(&row).map_err(self.err())?;
        let deleted = sqlx::query("DELETE FROM grants WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        // Two revokes racing: only the one that deleted the row records a change.
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        self.record_change(&mut tx, actor, "revoke", &grant, request_id)
            .await?;
        let extra = self.record_audit(&mut tx, audit(&grant)).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(Some((grant, extra)))
    }

    async fn record_change(
        &self,
        conn: &mut sqlx::AnyConnection,
        actor: &str,
        action: &str,
        grant: &Grant,
        request_id: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO grant_changes (change_id, at_ns, actor, action, grant_id, grant_json, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(marketlake_schemas::now_utc_ns())
        .bind(actor)
        .bind(action)
        .bind(&grant.grant_id)
        .bind(serde_json::to_string(grant).unwrap_or_default())
        .bind(request_id.map(str::to_owned))
        .execute(&mut *conn)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// The history of the grants, oldest first.
    pub async fn grant_changes(&self) -> Result<Vec<GrantChange>> {
        let rows = sqlx::query(
            "SELECT change_id, at_ns, actor, action, grant_id, grant_json, request_id FROM grant_changes ORDER BY at_ns, change_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get("grant_json")?;
                Ok(GrantChange {
                    change_id: r.try_get("change_id")?,
                    at_ns: r.try_get("at_ns")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    grant_id: r.try_get("grant_id")?,
                    grant: serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
                    request_id: r.try_get("request_id")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(self.err())
    }

    /// Audit events of a principal, oldest first: `(endpoint, rows, bytes, body_sha256)`.
    pub async fn audit_of(&self, principal: &str) -> Result<Vec<(String, i64, i64, String)>> {
        let rows = sqlx::query(
            "SELECT endpoint, rows_returned, bytes_returned, body_sha256 FROM audit_events WHERE principal = $1 ORDER BY at_ns",
        )
        .bind(principal)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("endpoint")?,
                    r.try_get("rows_returned")?,
                    r.try_get("bytes_returned")?,
                    r.try_get("body_sha256")?,
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(self.err())
    }
}

/// A grant must name a user or a group and use known masks.
pub fn validate_grant(grant: &Grant) -> std::result::Result<(), String> {
    if !matches!(grant.principal_kind.as_str(), "user" | "group") {
        return Err(format!(
            "principal_kind `{}`: use user or group",
            grant.principal_kind
        ));
    }
    for (column, mask) in &grant.column_masks {
        if !matches!(mask.as_str(), "hide" | "hash") {
            return Err(format!(
                "mask `{mask}` of column `{column}`: use hide or hash"
            ));
        }
    }
    Ok(())
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    // Grants files are small TOML documents; JSON is accepted too.
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    toml::from_str(text).map_err(|e| e.to_string())
}
