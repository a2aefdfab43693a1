//! One JSON object (a line of a JSON-lines stream or an element of a JSON array) → a news draft.
//!
//! Field names of the common shapes are tried in order, so tweets (Twitter API v1.1), IEX news
//! and generic news objects read without configuration:
//!
//! | field | names tried |
//! |---|---|
//! | headline | `headline`, `title`, `full_text`, `text` |
//! | body | `summary`, `description`, `body`, `content` |
//! | link | `url`, `link`; tweets: `https://twitter.com/<screen_name>/status/<id_str>` |
//! | id | the connector's `id` attribute (its `id_field` setting), else `id_str`, `id`, `guid`, `uuid` |
//! | published | `created_at` (Twitter form or any timestamp), `datetime`, `published_at`, `published`, `date`, `time`, `timestamp`, `timestamp_ms` (text or epoch numbers in s/ms/us/ns) |
//! | publisher | tweets: `user.screen_name`; else `source`, `publisher`, `author` |
//! | language | `lang`, `language` |
//! | tickers | `related` (comma-separated), `symbols`, `tickers`, `entities.symbols[].text`, plus the record's symbol |

use serde_json::{Map, Value};

use super::NewsDraft;
use crate::record::Bad;
use crate::time;

fn string(object: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| match object.get(*name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

pub(crate) fn path<'a>(object: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Tickers in a `related`/`symbols` value: a comma-separated string, or an array of strings or
/// of `{"text": ...}` / `{"symbol": ...}` objects.
fn tickers_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.extend(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        ),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => out.push(s.trim().to_owned()),
                    Value::Object(o) => out.extend(string(o, &["text", "symbol", "ticker"])),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn published(object: &Map<String, Value>) -> Result<Option<i64>, Bad> {
    for name in [
        "created_at",
        "datetime",
        "published_at",
        "published",
        "date",
        "time",
        "timestamp",
        "timestamp_ms",
    ] {
        let parsed = match object.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => n.as_i64().and_then(time::epoch_any_unit),
            Some(Value::String(s)) => time::twitter(s).or_else(|| time::any_text(s)),
            Some(_) => None,
        };
        let Some(value) = object.get(name) else {
            continue;
        };
        return parsed.map(Some).ok_or_else(|| {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Bad::field(format!("json `{name}`"), &shown, "not a timestamp")
        });
    }
    Ok(None)
}

pub(super) fn parse(raw: &marketlake_schemas::RawRecord) -> Result<NewsDraft, Bad> {
    let value: Value = serde_json::from_slice(&raw.payload)
        .map_err(|e| Bad::layout(format!("invalid json: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Bad::layout("json value is not an object"));
    };
    let screen_name = path(&object, "user.screen_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let is_tweet = screen_name.is_some() && object.contains_key("text");
    let id = raw
        .attributes
        .get("id")
        .cloned()
        .or_else(|| string(&object, &["id_str", "id", "guid", "uuid"]));
    let link = string(&object, &["url", "link"]).or_else(|| {
        let (name, id) = (screen_name.as_ref()?, id.as_ref()?);
        is_tweet.then(|| format!("https://twitter.com/{name}/status/{id}"))
    });
    let publisher = if is_tweet {
        screen_name
    } else {
        string(&object, &["source", "publisher", "author"])
    };
    let mut tickers = Vec::new();
    for name in ["related", "symbols", "tickers"] {
        if let Some(value) = object.get(name) {
            tickers_in(value, &mut tickers);
        }
    }
    if let Some(symbols) = path(&object, "entities.symbols") {
        tickers_in(symbols, &mut tickers);
    }
    Ok(NewsDraft {
        id,
        title: string(&object, &["headline", "title", "full_text", "text"]),
        body: string(&object, &["summary", "description", "body", "content"]),
        link,
        publisher,
        published_at_ns: published(&object)?,
        language: string(&object, &["lang", "language"]),
        tickers,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::items;
    use super::super::{parse_news, NewsParse};
    use crate::samples::*;
    use crate::tagger::TickerTagger;
    use crate::time;

    #[test]
    fn stocknet_tweets() {
        let master = shared_master(3).unwrap();
        let tagger = TickerTagger::new(Some(master));
        let aapl = jsonl_records(
            "news/stocknet_tweets_AAPL_2014-06-01_to_2014-06-08.jsonl",
            serde_json::json!({ "symbol": "AAPL" }),
        )
        .unwrap();
        let rows = items(&aapl, &tagger);
        assert_eq!(rows.len(), 334);
        assert!(rows.iter().all(|r| r.tickers.contains(&"AAPL".to_owned())));
        assert!(rows.iter().all(|r| r.reference_version == Some(3)));

        let goog = jsonl_records(
            "news/stocknet_tweets_GOOG_2015-12-14_to_2015-12-27.jsonl",
            serde_json::json!({ "symbol": "GOOG" }),
        )
        .unwrap();
        let rows = items(&goog, &tagger);
        assert_eq!(rows.len(), 43);
        // The first line: created_at "Mon Dec 14 14:41:45 +0000 2015", id_str 676411761269059584.
        let first = &rows[0];
        assert_eq!(first.news_key, "news-jsonl-sample:676411761269059584");
        assert_eq!(first.published_at_ns, Some(1_450_104_105_000_000_000));
        assert_eq!(first.publisher.as_deref(), Some("TradingGuru"));
        assert_eq!(first.language.as_deref(), Some("en"));
        assert_eq!(
            first.link.as_deref(),
            Some("https://twitter.com/TradingGuru/status/676411761269059584")
        );
        assert!(first
            .headline
            .starts_with("RT $TSLA HFT Algos triggered SELL"));
        assert_eq!(first.body, None);
        for ticker in ["AAPL", "AMZN", "GOOG", "MSFT", "NFLX", "TSLA"] {
            assert!(
                first.tickers.contains(&ticker.to_owned()),
                "{ticker}: {:?}",
                first.tickers
            );
        }
        let per_day = |day: &str| {
            rows.iter()
                .filter(|r| {
                    marketlake_schemas::l1::utc_date_of_ns(r.published_at_ns.unwrap()) == day
                })
                .count()
        };
        assert_eq!((per_day("2015-12-13"), per_day("2015-12-23")), (3, 9));
    }

    #[test]
    fn iex_news_array() {
        let records = jsonl_records(
            "news/iex_news_aapl.json",
            serde_json::json!({ "symbol_field": "related" }),
        )
        .unwrap();
        let tagger = TickerTagger::new(Some(shared_master(1).unwrap()));
        let rows = items(&records, &tagger);
        assert_eq!(rows.len(), 10);
        let first = &rows[0];
        assert_eq!(
            first.headline,
            "Weak Smartphone Margins Are Motivating Samsung To Raise Memory Prices"
        );
        assert_eq!(first.publisher.as_deref(), Some("SeekingAlpha"));
        // datetime 2018-10-05T19:33:39-04:00
        assert_eq!(first.published_at_ns, time::rfc3339("2018-10-05T23:33:39Z"));
        assert_eq!(
            first.news_key,
            "news-jsonl-sample:https://api.iextrading.com/1.0/stock/aapl/article/8777179794847974"
        );
        // `related` tickers the master knows; its sector tags are dropped.
        for ticker in ["AAPL", "LRCX", "MU"] {
            assert!(
                first.tickers.contains(&ticker.to_owned()),
                "{:?}",
                first.tickers
            );
        }
        assert!(!first.tickers.iter().any(|t| t.contains(' ')));
        assert!(first
            .body
            .as_deref()
            .unwrap()
            .contains("IT & Mobile Communications"));
        let cnbc = &rows[1];
        assert!(
            cnbc.tickers.contains(&"GOOGL".to_owned()),
            "{:?}",
            cnbc.tickers
        );
        let sources: Vec<_> = rows.iter().filter_map(|r| r.publisher.clone()).collect();
        assert_eq!(sources.iter().filter(|s| *s == "CNBC").count(), 5);
    }

    #[test]
    fn json_shapes_and_errors() {
        let mut raw = jsonl_records("news/iex_news_aapl.json", serde_json::json!({}))
            .unwrap()
            .remove(0);
        raw.attributes.clear();
        raw.symbol = None;
        let tagger = TickerTagger::new(None);
        raw.payload = br#"{"title":"Apple &amp; friends","datetime":1538782419000,"symbols":[{"text":"aapl"}],"id":7}"#.to_vec();
        let NewsParse::Item(row) = parse_news(&raw, &at(), &tagger) else {
            panic!()
        };
        assert_eq!(row.headline, "Apple & friends");
        assert_eq!(row.published_at_ns, Some(1_538_782_419_000_000_000));
        assert_eq!(row.tickers, ["AAPL"]);
        assert_eq!(row.news_key, "news-jsonl-sample:7");
        for (payload, needle) in [
            (
                &br#"{"text":"x","created_at":"yesterday"}"#[..],
                "json `created_at` `yesterday`",
            ),
            (br#"{"text":"x","datetime":true}"#, "json `datetime` `true`"),
            (br#"[1,2]"#, "not an object"),
            (br#"{"text":"#, "invalid json"),
        ] {
            raw.payload = payload.to_vec();
            match parse_news(&raw, &at(), &tagger) {
                NewsParse::Malformed { reason, .. } => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
