//! News out of raw news records: [`parse_news`] reads one RSS item, Atom entry or JSON post and
//! returns a [`NewsRow`] tagged with the tickers it mentions, or why it cannot be read.
//!
//! Each format module extracts a [`NewsDraft`] (title, text, link, id, time, publisher,
//! language, explicit tickers); this module cleans the text (HTML stripped, entities decoded,
//! whitespace collapsed), picks the key (`<source_id>:<guid | id | link>`, else the rss
//! connector's item id, else `<source_id>:<uri>#<position>`), and tags tickers.

pub(crate) mod feed;
pub(crate) mod json;

use marketlake_schemas::l2::NewsRow;
use marketlake_schemas::{KafkaPosition, PayloadFormat, RawRecord};

use crate::record::{lineage, Bad, UNSUPPORTED_FORMAT};
use crate::tagger::TickerTagger;
use crate::text::{html_to_text, truncate_chars};

/// What one raw news record holds.
// Returned once per record and taken apart at once: boxing the row would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewsParse {
    Item(NewsRow),
    /// A record that cannot be read. `rule` is a stable code (`missing_field`, `bad_field`,
    /// `bad_layout`, `unsupported_format`); `reason` names the field and the value.
    Malformed {
        rule: &'static str,
        reason: String,
    },
}

/// The facts of one item as its format states them (text still raw).
#[derive(Debug, Default)]
pub(crate) struct NewsDraft {
    pub id: Option<String>,
    pub title: Option<String>,
    /// HTML or plain text.
    pub body: Option<String>,
    pub link: Option<String>,
    pub publisher: Option<String>,
    pub published_at_ns: Option<i64>,
    pub language: Option<String>,
    /// Tickers the record names explicitly (IEX `related`, tweet symbols).
    pub tickers: Vec<String>,
}

/// Longest headline made from a body when an item has no title.
const HEADLINE_FROM_BODY_CHARS: usize = 200;

/// Read one raw news record; `tagger` finds the tickers (and says which master version
/// checked them). Never panics: an unreadable record is [`NewsParse::Malformed`].
pub fn parse_news(raw: &RawRecord, at: &KafkaPosition, tagger: &TickerTagger) -> NewsParse {
    let draft = match raw.format {
        PayloadFormat::RssItem | PayloadFormat::AtomEntry => feed::parse(raw),
        PayloadFormat::Json => json::parse(raw),
        other => Err(Bad {
            rule: UNSUPPORTED_FORMAT,
            reason: format!("payload format `{}` does not carry news", other.as_str()),
        }),
    };
    match draft.and_then(|draft| finish(raw, at, tagger, draft)) {
        Ok(row) => NewsParse::Item(row),
        Err(bad) => NewsParse::Malformed {
            rule: bad.rule,
            reason: bad.reason,
        },
    }
}

fn clean(text: Option<String>) -> Option<String> {
    text.map(|t| html_to_text(&t)).filter(|t| !t.is_empty())
}

fn finish(
    raw: &RawRecord,
    at: &KafkaPosition,
    tagger: &TickerTagger,
    draft: NewsDraft,
) -> Result<NewsRow, Bad> {
    let title = clean(draft.title);
    let body = clean(draft.body);
    let headline = match (&title, &body) {
        (Some(title), _) => title.clone(),
        (None, Some(body)) => truncate_chars(body, HEADLINE_FROM_BODY_CHARS),
        (None, None) => return Err(Bad::missing("news title and text")),
    };
    let link = draft
        .link
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    let identity = draft
        .id
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| link.clone())
        // The rss connector's de-duplication id (`title|published` when an item has no guid).
        .or_else(|| raw.attributes.get("item_id").cloned());
    let news_key = match identity {
        Some(id) => format!("{}:{id}", raw.source_id),
        None => format!(
            "{}:{}#{}",
            raw.source_id, raw.source_uri, raw.source_position
        ),
    };
    let mut explicit = draft.tickers;
    explicit.extend(raw.symbol.clone());
    let texts: Vec<&str> = [Some(headline.as_str()), body.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let tickers = tagger.tag(&texts, &explicit);
    Ok(NewsRow {
        news_key,
        headline,
        body,
        link,
        publisher: clean(draft.publisher),
        published_at_ns: draft.published_at_ns,
        received_at_ns: raw.received_at_ns,
        language: draft
            .language
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty() && l != "und"),
        tickers,
        reference_version: tagger.reference_version(),
        extra: Default::default(),
        flags: Vec::new(),
        lineage: lineage(raw, at),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::samples::*;

    pub fn items(records: &[RawRecord], tagger: &TickerTagger) -> Vec<NewsRow> {
        records
            .iter()
            .map(|raw| match parse_news(raw, &at(), tagger) {
                NewsParse::Item(row) => row,
                NewsParse::Malformed { rule, reason } => {
                    panic!(
                        "{rule}: {reason} in {}",
                        String::from_utf8_lossy(&raw.payload)
                    )
                }
            })
            .collect()
    }

    #[test]
    fn items_without_any_text_are_malformed() {
        let mut raw = feed_records("news/sec_press_releases.rss.xml")
            .unwrap()
            .remove(0);
        raw.payload = b"<item><link>https://x</link></item>".to_vec();
        assert!(matches!(
            parse_news(&raw, &at(), &TickerTagger::new(None)),
            NewsParse::Malformed {
                rule: "missing_field",
                ..
            }
        ));
        raw.format = PayloadFormat::Fix;
        assert!(matches!(
            parse_news(&raw, &at(), &TickerTagger::new(None)),
            NewsParse::Malformed {
                rule: "unsupported_format",
                ..
            }
        ));
    }

    #[test]
    fn headline_falls_back_to_the_body_and_key_to_the_position() {
        let mut raw = feed_records("news/sec_press_releases.rss.xml")
            .unwrap()
            .remove(0);
        let long = "word ".repeat(100);
        raw.payload = format!("<item><description>&lt;p&gt;{long}&lt;/p&gt;</description></item>")
            .into_bytes();
        let NewsParse::Item(row) = parse_news(&raw, &at(), &TickerTagger::new(None)) else {
            panic!()
        };
        assert!(row.headline.ends_with('…'));
        assert!(row.headline.chars().count() <= HEADLINE_FROM_BODY_CHARS + 1);
        assert_eq!(
            row.news_key,
            format!("rss-sample:{}", raw.attributes["item_id"])
        );
        raw.attributes.remove("item_id");
        let NewsParse::Item(row) = parse_news(&raw, &at(), &TickerTagger::new(None)) else {
            panic!()
        };
        assert_eq!(row.news_key, format!("rss-sample:{}#0", raw.source_uri));
    }
}
