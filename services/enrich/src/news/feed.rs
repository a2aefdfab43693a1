//! One RSS `<item>` (2.0 or 1.0/RDF) or Atom `<entry>` element → a news draft.
//!
//! The payload is the element exactly as it appeared in the feed, in the document's encoding
//! (the connector's `encoding` attribute). Children are matched by local name, so namespace
//! prefixes (`dc:creator`, `content:encoded`) need no declarations:
//!
//! | field | RSS | Atom |
//! |---|---|---|
//! | headline | `title` | `title` |
//! | body | `description`, else `content:encoded` | `summary`, else `content` |
//! | link | `link` text | `link href` (rel `alternate` preferred) |
//! | id | `guid`, else `rdf:about` | `id` |
//! | published | `pubDate` (RFC 2822), `dc:date` | `published`, else `updated` (RFC 3339) |
//! | publisher | `source`, else `author` / `dc:creator` | `author/name` |
//! | language | `dc:language` / `language` | `xml:lang` |

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::NewsDraft;
use crate::record::Bad;
use crate::text::decode_bytes;
use crate::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Title,
    Description,
    Summary,
    Content,
    Link,
    Guid,
    Id,
    PubDate,
    Published,
    Updated,
    Date,
    Source,
    Author,
    Language,
}

fn child_of(local: &[u8]) -> Option<Child> {
    Some(match local {
        b"title" => Child::Title,
        b"description" => Child::Description,
        b"summary" => Child::Summary,
        b"content" | b"encoded" => Child::Content,
        b"link" => Child::Link,
        b"guid" => Child::Guid,
        b"id" | b"identifier" => Child::Id,
        b"pubDate" => Child::PubDate,
        b"published" | b"issued" => Child::Published,
        b"updated" | b"modified" => Child::Updated,
        b"date" => Child::Date,
        b"source" => Child::Source,
        b"author" | b"creator" => Child::Author,
        b"language" => Child::Language,
        _ => return None,
    })
}

/// Text collected per child; the first occurrence of a child wins.
#[derive(Default)]
struct Collected {
    values: Vec<(Child, String)>,
    atom_link: Option<String>,
    atom_link_alternate: Option<String>,
    about: Option<String>,
    lang: Option<String>,
}

impl Collected {
    fn get(&self, child: Child) -> Option<String> {
        self.values
            .iter()
            .find(|(c, text)| *c == child && !text.trim().is_empty())
            .map(|(_, text)| text.trim().to_owned())
    }
}

fn attribute(start: &BytesStart, name: &[u8]) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name || a.key.local_name().as_ref() == name)
        .map(|a| match a.unescape_value() {
            Ok(value) => value.into_owned(),
            Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
        })
}

/// An Atom `<link href>`: the `alternate` one (or one without `rel`) is the item's page.
fn atom_link(collected: &mut Collected, start: &BytesStart) {
    let Some(href) = attribute(start, b"href") else {
        return;
    };
    let rel = attribute(start, b"rel");
    if rel.as_deref().is_none_or(|r| r == "alternate") {
        collected.atom_link_alternate.get_or_insert(href);
    } else {
        collected.atom_link.get_or_insert(href);
    }
}

/// The item's child elements in order: local name (namespace prefix ignored) and trimmed text
/// (nested markup flattened), for configured extra columns. Reading stops at the first XML
/// error; the children completed before it are kept.
pub(crate) fn children(raw: &marketlake_schemas::RawRecord) -> Vec<(String, String)> {
    let text = decode_bytes(
        &raw.payload,
        raw.attributes.get("encoding").map(String::as_str),
    );
    let mut reader = Reader::from_str(&text);
    let mut out = Vec::new();
    let mut depth = 0usize;
    // The child being read (depth 2) and its text so far.
    let mut current: Option<(String, String)> = None;
    while let Ok(event) = reader.read_event() {
        match event {
            Event::Start(start) => {
                depth += 1;
                if depth == 2 {
                    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, value)) = current.take() {
                        out.push((name, value.trim().to_owned()));
                    }
                }
                match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => break,
                }
            }
            Event::Text(text) => {
                if let Some((_, value)) = current.as_mut() {
                    match text.unescape() {
                        Ok(unescaped) => value.push_str(&unescaped),
                        Err(_) => value.push_str(&String::from_utf8_lossy(&text)),
                    }
                }
            }
            Event::CData(data) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

pub(super) fn parse(raw: &marketlake_schemas::RawRecord) -> Result<NewsDraft, Bad> {
    let text = decode_bytes(
        &raw.payload,
        raw.attributes.get("encoding").map(String::as_str),
    );
    let mut reader = Reader::from_str(&text);
    let mut collected = Collected::default();
    // Local names of the open elements; [0] is the item itself.
    let mut stack: Vec<Vec<u8>> = Vec::new();
    // The child of the item whose text is being collected, and whether text at the current
    // depth belongs to it (an Atom author's text is its `name`, not its `email`).
    let mut current: Option<Child> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            Bad::layout(format!(
                "xml error at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(start) => {
                let local = start.local_name().as_ref().to_vec();
                if stack.is_empty() {
                    root(&mut collected, &start, &local)?;
                } else if stack.len() == 1 {
                    current = child_of(&local);
                    if let Some(child) = current {
                        if child == Child::Link {
                            atom_link(&mut collected, &start);
                        }
                        collected.values.push((child, String::new()));
                    }
                }
                stack.push(local);
            }
            Event::Empty(start) => {
                let local = start.local_name().as_ref().to_vec();
                if stack.is_empty() {
                    root(&mut collected, &start, &local)?;
                    break;
                }
                if stack.len() == 1 && local == b"link" {
                    atom_link(&mut collected, &start);
                }
            }
            Event::End(_) => {
                stack.pop();
                if stack.len() <= 1 {
                    current = None;
                }
                if stack.is_empty() {
                    break;
                }
            }
            Event::Text(text) => {
                let accept = match current {
                    Some(Child::Author) => {
                        stack.len() == 2 || stack.last().is_some_and(|l| l == b"name")
                    }
                    Some(_) => true,
                    None => false,
                };
                if accept {
                    let value = match text.unescape() {
                        Ok(value) => value.into_owned(),
                        // Undeclared (HTML) entities such as `&nbsp;`: keep the text as written;
                        // the HTML clean-up decodes them.
                        Err(_) => String::from_utf8_lossy(&text).into_owned(),
                    };
                    append(&mut collected, &value);
                }
            }
            Event::CData(data) if current.is_some() => {
                append(&mut collected, &String::from_utf8_lossy(&data));
            }
            Event::Eof => {
                if stack.is_empty() {
                    return Err(Bad::layout("xml without an item or entry element"));
                }
                return Err(Bad::layout(format!(
                    "xml ends inside <{}>",
                    String::from_utf8_lossy(stack.last().map(Vec::as_slice).unwrap_or_default())
                )));
            }
            _ => {}
        }
    }
    draft(collected)
}

fn root(collected: &mut Collected, start: &BytesStart, local: &[u8]) -> Result<(), Bad> {
    if local != b"item" && local != b"entry" {
        return Err(Bad::layout(format!(
            "xml element <{}> is not an rss item or atom entry",
            String::from_utf8_lossy(local)
        )));
    }
    collected.about = attribute(start, b"about");
    collected.lang = attribute(start, b"xml:lang");
    Ok(())
}

fn append(collected: &mut Collected, value: &str) {
    if let Some((_, text)) = collected.values.last_mut() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(value);
    }
}

fn published(collected: &Collected) -> Result<Option<i64>, Bad> {
    for (child, name) in [
        (Child::PubDate, "pubDate"),
        (Child::Published, "published"),
        (Child::Date, "dc:date"),
        (Child::Updated, "updated"),
    ] {
        if let Some(text) = collected.get(child) {
            return time::rfc2822(&text)
                .or_else(|| time::rfc3339(&text))
                .map(Some)
                .ok_or_else(|| {
                    Bad::field(
                        format!("feed item {name}"),
                        &text,
                        "not an RFC 2822 or RFC 3339 date",
                    )
                });
        }
    }
    Ok(None)
}

fn draft(collected: Collected) -> Result<NewsDraft, Bad> {
    let published_at_ns = published(&collected)?;
    let link = collected
        .get(Child::Link)
        .or_else(|| collected.atom_link_alternate.clone())
        .or_else(|| collected.atom_link.clone());
    Ok(NewsDraft {
        id: collected
            .get(Child::Guid)
            .or_else(|| collected.get(Child::Id))
            .or_else(|| collected.about.clone()),
        title: collected.get(Child::Title),
        body: collected
            .get(Child::Description)
            .or_else(|| collected.get(Child::Summary))
            .or_else(|| collected.get(Child::Content)),
        link,
        publisher: collected
            .get(Child::Source)
            .or_else(|| collected.get(Child::Author)),
        published_at_ns,
        language: collected
            .get(Child::Language)
            .or_else(|| collected.lang.clone()),
        tickers: Vec::new(),
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
    fn sec_press_releases_rss() {
        let records = feed_records("news/sec_press_releases.rss.xml").unwrap();
        let rows = items(&records, &TickerTagger::new(None));
        assert_eq!(rows.len(), 25);
        let keys: std::collections::BTreeSet<_> = rows.iter().map(|r| r.news_key.clone()).collect();
        assert_eq!(keys.len(), 25);
        // Items are published oldest first; the feed's first item is the newest.
        let newest = rows
            .iter()
            .find(|r| r.news_key.ends_with("ec1b9af9-5a0f-44b3-83c6-adc75a33096d"))
            .unwrap();
        assert_eq!(
            newest.headline,
            "Acting Chairman Mark T. Uyeda Names Acting Senior Staff"
        );
        assert_eq!(
            newest.published_at_ns,
            time::rfc3339("2025-01-24T16:00:00Z")
        );
        assert_eq!(
            newest.link.as_deref(),
            Some("https://www.sec.gov/newsroom/press-releases/2025-31")
        );
        let body = newest.body.as_deref().unwrap();
        assert!(
            body.starts_with("The Securities and Exchange Commission today announced"),
            "{body}"
        );
        assert!(body.contains("departures. “These talented"), "{body}");
        assert!(!body.contains("&nbsp;"));
        // An empty dc:creator is no publisher.
        assert_eq!(newest.publisher, None);
        assert!(rows.iter().all(|r| r.published_at_ns.is_some()));
    }

    #[test]
    fn sec_xbrl_rss_in_windows_1252() {
        let records = feed_records("news/sec_usgaap_xbrl_filings.rss.xml").unwrap();
        assert_eq!(records[0].attributes["encoding"], "windows-1252");
        let rows = items(&records, &TickerTagger::new(None));
        assert_eq!(rows.len(), 200);
        // pubDate uses the obsolete zone name EST.
        let earliest = rows.iter().filter_map(|r| r.published_at_ns).min().unwrap();
        let latest = rows.iter().filter_map(|r| r.published_at_ns).max().unwrap();
        assert_eq!(earliest, time::rfc3339("2025-01-24T12:00:39Z").unwrap());
        assert_eq!(latest, time::rfc3339("2025-01-24T22:08:44Z").unwrap());
        assert!(rows.iter().all(|r| !r.headline.contains('\u{fffd}')));
    }

    #[test]
    fn sec_edgar_atom() {
        let records = feed_records("news/sec_edgar_company_filings_0001844419.atom.xml").unwrap();
        let rows = items(&records, &TickerTagger::new(None));
        assert_eq!(rows.len(), 5);
        let first = rows
            .iter()
            .find(|r| {
                r.news_key
                    == "rss-sample:urn:tag:sec.gov,2008:accession-number=0001104659-21-057704"
            })
            .unwrap();
        assert_eq!(
            first.headline,
            "S-1/A [Amend] - General form for registration of securities under the Securities Act of 1933"
        );
        assert_eq!(
            first.body.as_deref(),
            Some("Filed: 2021-04-29 AccNo: 0001104659-21-057704 Size: 1 MB")
        );
        assert_eq!(
            first.link.as_deref(),
            Some("https://www.sec.gov/Archives/edgar/data/1844419/000110465921057704/0001104659-21-057704-index.htm")
        );
        // updated 2021-04-29T16:45:49-04:00
        assert_eq!(first.published_at_ns, time::rfc3339("2021-04-29T20:45:49Z"));
    }

    #[test]
    fn rss_variants_and_errors() {
        let mut raw = feed_records("news/sec_press_releases.rss.xml")
            .unwrap()
            .remove(0);
        let tagger = TickerTagger::new(None);
        raw.payload = br#"<item rdf:about="urn:x:1"><title><![CDATA[Tesla & $TSLA]]></title><dc:date>2024-01-02T03:04:05Z</dc:date><dc:creator>Jane</dc:creator><dc:language>en</dc:language></item>"#.to_vec();
        let NewsParse::Item(row) = parse_news(&raw, &at(), &tagger) else {
            panic!()
        };
        assert_eq!(row.news_key, "rss-sample:urn:x:1");
        assert_eq!(row.headline, "Tesla & $TSLA");
        assert_eq!(row.tickers, ["TSLA"]);
        assert_eq!(row.publisher.as_deref(), Some("Jane"));
        assert_eq!(row.language.as_deref(), Some("en"));
        assert_eq!(row.published_at_ns, time::rfc3339("2024-01-02T03:04:05Z"));

        raw.payload = b"<entry xml:lang=\"fr\"><title>t</title><author><name>AFP</name><email>x@y</email></author><link rel=\"enclosure\" href=\"https://e\"/><link href=\"https://a\"/></entry>".to_vec();
        let NewsParse::Item(row) = parse_news(&raw, &at(), &tagger) else {
            panic!()
        };
        assert_eq!(row.publisher.as_deref(), Some("AFP"));
        assert_eq!(row.link.as_deref(), Some("https://a"));
        assert_eq!(row.language.as_deref(), Some("fr"));
        assert_eq!(row.news_key, "rss-sample:https://a");

        for (payload, needle) in [
            (
                &b"<item><title>t</title><pubDate>someday</pubDate></item>"[..],
                "pubDate `someday`",
            ),
            (b"<item><title>t</title>", "ends inside <item>"),
            (b"<channel><title>t</title></channel>", "not an rss item"),
            (b"<item><title>t</titel></item>", "xml error"),
            (b"", "without an item"),
        ] {
            raw.payload = payload.to_vec();
            match parse_news(&raw, &at(), &tagger) {
                NewsParse::Malformed { reason, .. } => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
