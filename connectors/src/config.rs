//! Source declarations: `{id, kind, settings}` entries of the `sources` list.
//!
//! The settings are kept as an untyped value until [`SourceConfig::validate`] turns them into
//! the kind's own settings struct, so an error can name the source and the exact key
//! (`sources[2].settings.file`) instead of a bare serde message.

use serde::{Deserialize, Serialize};

use crate::fix::FixSettings;
use crate::iex_tops::IexTopsSettings;
use crate::news_jsonl::NewsJsonlSettings;
use crate::rss::RssSettings;
use crate::trades_csv::TradesCsvSettings;
use crate::{ConnectorError, Result};
use marketlake_schemas::FeedClass;

/// The connector kinds, one per feed format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorKind {
    Fix,
    TradesCsv,
    IexTops,
    Rss,
    NewsJsonl,
}

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 5] = [
        ConnectorKind::Fix,
        ConnectorKind::TradesCsv,
        ConnectorKind::IexTops,
        ConnectorKind::Rss,
        ConnectorKind::NewsJsonl,
    ];

    /// The name used in configuration and on the command line (`trades-csv`).
    pub fn name(self) -> &'static str {
        match self {
            ConnectorKind::Fix => "fix",
            ConnectorKind::TradesCsv => "trades-csv",
            ConnectorKind::IexTops => "iex-tops",
            ConnectorKind::Rss => "rss",
            ConnectorKind::NewsJsonl => "news-jsonl",
        }
    }

    /// Which raw topic its records go to.
    pub fn class(self) -> FeedClass {
        match self {
            ConnectorKind::Fix | ConnectorKind::TradesCsv | ConnectorKind::IexTops => {
                FeedClass::Trades
            }
            ConnectorKind::Rss | ConnectorKind::NewsJsonl => FeedClass::News,
        }
    }
}

/// One declared source as written in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique, stable id: it names the dead-letter topic and keys the resume state.
    pub id: String,
    pub kind: ConnectorKind,
    #[serde(default = "empty_settings")]
    pub settings: serde_json::Value,
}

fn empty_settings() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A source whose settings were parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    pub id: String,
    pub settings: ConnectorSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorSettings {
    Fix(FixSettings),
    TradesCsv(TradesCsvSettings),
    IexTops(IexTopsSettings),
    Rss(RssSettings),
    NewsJsonl(NewsJsonlSettings),
}

impl ConnectorSettings {
    pub fn kind(&self) -> ConnectorKind {
        match self {
            ConnectorSettings::Fix(_) => ConnectorKind::Fix,
            ConnectorSettings::TradesCsv(_) => ConnectorKind::TradesCsv,
            ConnectorSettings::IexTops(_) => ConnectorKind::IexTops,
            ConnectorSettings::Rss(_) => ConnectorKind::Rss,
            ConnectorSettings::NewsJsonl(_) => ConnectorKind::NewsJsonl,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: &serde_json::Value, prefix: &str) -> Result<T> {
    serde_json::from_value(value.clone()).map_err(|e| ConnectorError::config(prefix, e.to_string()))
}

/// Source ids become topic names (`dlq.<id>`) and file names: keep them to a safe alphabet.
pub fn validate_source_id(id: &str, setting: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::config(
            setting,
            format!("`{id}` is not a valid source id: use 1-200 characters from [A-Za-z0-9._-]"),
        ))
    }
}

impl SourceConfig {
    /// Parse the settings for this kind and check them. `prefix` is where this entry sits in
    /// the configuration, e.g. `sources[2]`.
    pub fn validate(&self, prefix: &str) -> Result<SourceSpec> {
        validate_source_id(&self.id, &format!("{prefix}.id"))?;
        let at = format!("{prefix}.settings");
        let settings = match self.kind {
            ConnectorKind::Fix => {
                let s: FixSettings = parse(&self.settings, &at)?;
                s.validate(&at)?;
                ConnectorSettings::Fix(s)
            }
            ConnectorKind::TradesCsv => {
                let s: TradesCsvSettings = parse(&self.settings, &at)?;
                s.validate(&at)?;
                ConnectorSettings::TradesCsv(s)
            }
            ConnectorKind::IexTops => {
                let s: IexTopsSettings = parse(&self.settings, &at)?;
                s.validate(&at)?;
                ConnectorSettings::IexTops(s)
            }
            ConnectorKind::Rss => {
                let s: RssSettings = parse(&self.settings, &at)?;
                s.validate(&at)?;
                ConnectorSettings::Rss(s)
            }
            ConnectorKind::NewsJsonl => {
                let s: NewsJsonlSettings = parse(&self.settings, &at)?;
                s.validate(&at)?;
                ConnectorSettings::NewsJsonl(s)
            }
        };
        Ok(SourceSpec {
            id: self.id.clone(),
            settings,
        })
    }
}

/// Validate a whole `sources` list: each entry, and ids unique.
pub fn validate_sources(sources: &[SourceConfig]) -> Result<Vec<SourceSpec>> {
    let mut specs = Vec::with_capacity(sources.len());
    let mut seen = std::collections::HashSet::new();
    for (index, source) in sources.iter().enumerate() {
        let prefix = format!("sources[{index}]");
        if !seen.insert(source.id.as_str()) {
            return Err(ConnectorError::config(
                format!("{prefix}.id"),
                format!(
                    "source id `{}` is declared twice; ids must be unique",
                    source.id
                ),
            ));
        }
        specs.push(source.validate(&prefix)?);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_setting_is_named_with_its_source() {
        let source = SourceConfig {
            id: "ticks".into(),
            kind: ConnectorKind::TradesCsv,
            settings: serde_json::json!({"file": "x.csv", "fiel": 1}),
        };
        let err = source.validate("sources[0]").unwrap_err().to_string();
        assert!(err.contains("sources[0].settings"), "{err}");
        assert!(err.contains("fiel"), "{err}");
    }

    #[test]
    fn duplicate_and_unsafe_ids_are_rejected() {
        let a = SourceConfig {
            id: "a".into(),
            kind: ConnectorKind::Fix,
            settings: serde_json::json!({"file": "x.fix"}),
        };
        let err = validate_sources(&[a.clone(), a.clone()]).unwrap_err();
        assert!(err.to_string().contains("declared twice"));
        let bad = SourceConfig {
            id: "a/b".into(),
            ..a
        };
        assert!(bad.validate("sources[0]").is_err());
    }
}
