//! RSS 2.0, RSS 1.0 (RDF) and Atom 1.0 feed documents.
//!
//! Owns [`RssSettings`] and [`parse_feed`], which cuts a whole fetched document into one
//! [`FeedItem`] per `<item>` / `<entry>`. The item's payload is sliced out of the document by
//! byte position, never re-serialised, so entities, CDATA sections and the document's own
//! encoding (the SEC XBRL feed is windows-1252) reach the lake exactly as published. Only the
//! small facts used for de-duplication and the Kafka headers (id, title, link, published) are
//! decoded, leniently.

use std::borrow::Cow;
use std::path::PathBuf;

use marketlake_schemas::PayloadFormat;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Deserialize;

use crate::{ConnectorError, Result};

fn default_poll() -> u64 {
    60
}

/// Settings of an `rss` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RssSettings {
    /// Poll this http(s) URL (conditional GET is the runtime's job) ...
    #[serde(default)]
    pub url: Option<String>,
    /// ... or read this file (re-read every poll when `poll_interval_secs` is set with `follow`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    #[serde(default)]
    pub follow: bool,
}

impl RssSettings {
    /// Exactly one of `url` / `file`; an http(s) URL; a poll interval of at least one second.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        match (&self.url, &self.file) {
            (Some(_), Some(_)) => {
                return Err(ConnectorError::config(
                    format!("{prefix}.url"),
                    "set either `url` or `file`, not both",
                ))
            }
            (None, None) => {
                return Err(ConnectorError::config(
                    format!("{prefix}.url"),
                    "one of `url` or `file` is required",
                ))
            }
            (Some(url), None) => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    Some(host) if !host.is_empty() && !host.starts_with('/') => {}
                    _ => {
                        return Err(ConnectorError::config(
                            format!("{prefix}.url"),
                            format!("`{url}` is not an http:// or https:// url"),
                        ))
                    }
                }
            }
            (None, Some(file)) => {
                if file.as_os_str().is_empty() {
                    return Err(ConnectorError::config(
                        format!("{prefix}.file"),
                        "must name a feed document",
                    ));
                }
            }
        }
        if self.poll_interval_secs < 1 {
            return Err(ConnectorError::config(
                format!("{prefix}.poll_interval_secs"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One `<item>` or `<entry>` of a feed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// The guid, else the Atom id, else the RDF `rdf:about`, else the link, else
    /// `title|published` (either alone when only one exists), else `offset:<n>`.
    pub id: String,
    /// [`PayloadFormat::RssItem`] or [`PayloadFormat::AtomEntry`].
    pub format: PayloadFormat,
    /// The element exactly as it appears in the document, from `<item` to `</item>`.
    pub bytes: Vec<u8>,
    /// Byte offset of the element in the document.
    pub offset: u64,
    pub published: Option<String>,
    pub title: Option<String>,
    pub link: Option<String>,
}

/// The items of a document plus, when it ended early or broke off, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFeed {
    pub items: Vec<FeedItem>,
    /// Set when the document is cut short or stops being well-formed after the feed's root
    /// element began: `items` then holds the items completed before that point.
    pub incomplete: Option<String>,
}

/// Parse a whole feed document.
///
/// A document that is not RSS/Atom XML is [`ConnectorError::Unreadable`]. A document that
/// breaks off after the feed began (truncated transfer, a syntax error half-way) yields the items
/// completed before the break; the break is logged as a warning. Use [`parse_feed_detailed`] to
/// see it.
pub fn parse_feed(document: &[u8]) -> Result<Vec<FeedItem>> {
    let parsed = parse_feed_detailed(document)?;
    if let Some(reason) = &parsed.incomplete {
        tracing::warn!(
            reason = reason.as_str(),
            items = parsed.items.len(),
            "feed document is incomplete; keeping the items completed before the break"
        );
    }
    Ok(parsed.items)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedKind {
    Rss,
    Rdf,
    Atom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextEncoding {
    Utf8,
    /// windows-1252, also used for documents declaring ISO-8859-1 (as browsers do).
    Windows1252,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Guid,
    Id,
    Link,
    Title,
    PubDate,
    Published,
    Updated,
    Date,
}

#[derive(Debug, Default)]
struct ItemBuilder {
    start: u64,
    depth: usize,
    prefix: Option<Vec<u8>>,
    about: Option<String>,
    guid: Option<String>,
    atom_id: Option<String>,
    link_text: Option<String>,
    link_alternate: Option<String>,
    link_any: Option<String>,
    title: Option<String>,
    pub_date: Option<String>,
    published: Option<String>,
    updated: Option<String>,
    date: Option<String>,
    /// The child whose text is being collected.
    collecting: Option<(Field, String)>,
}

fn unreadable(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Unreadable {
        what: "feed document".to_string(),
        reason: reason.into(),
    }
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// [`parse_feed`], also reporting whether the document broke off.
pub fn parse_feed_detailed(document: &[u8]) -> Result<ParsedFeed> {
    // quick-xml drops a BOM without counting it in its positions: strip it here and add it back.
    let (shift, body) = match document.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len() as u64, rest),
        None => (0, document),
    };
    let mut reader = Reader::from_reader(body);
    let mut kind: Option<FeedKind> = None;
    let mut encoding = TextEncoding::Utf8;
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<ItemBuilder> = None;
    let mut items = Vec::new();
    let mut incomplete = None;
    loop {
        let before = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let reason = format!(
                    "xml error at byte {}: {e}",
                    reader.error_position().saturating_add(shift)
                );
                if kind.is_none() {
                    return Err(unreadable(format!("not an rss or atom document: {reason}")));
                }
                incomplete = Some(reason);
                break;
            }
        };
        match event {
            Event::Decl(decl) => {
                if let Some(Ok(label)) = decl.encoding() {
                    encoding = encoding_of(&label);
                }
            }
            Event::Start(start) => {
                let local = start.local_name().as_ref().to_vec();
                if kind.is_none() {
                    kind = Some(root_kind(&start)?);
                    stack.push(local);
                    continue;
                }
                let depth = stack.len();
                if let Some(item) = current.as_mut() {
                    if depth == item.depth.saturating_add(1) {
                        child_start(item, &start, encoding, true);
                    }
                } else if is_item(kind, &stack, &local) {
                    current = Some(item_start(&start, before, depth, encoding));
                }
                stack.push(local);
            }
            Event::Empty(start) => {
                if kind.is_none() {
                    // An empty root (`<rss/>`) is a feed without items.
                    root_kind(&start)?;
                    break;
                }
                let local = start.local_name().as_ref().to_vec();
                let depth = stack.len();
                let end = reader.buffer_position();
                if let Some(item) = current.as_mut() {
                    if depth == item.depth.saturating_add(1) {
                        child_start(item, &start, encoding, false);
                    }
                } else if is_item(kind, &stack, &local) {
                    let item = item_start(&start, before, depth, encoding);
                    items.push(finish(item, kind, body, end, shift));
                }
            }
            Event::End(_) => {
                stack.pop();
                let depth = stack.len();
                let end = reader.buffer_position();
                if let Some(item) = current.as_mut() {
                    if depth == item.depth {
                        if let Some(item) = current.take() {
                            items.push(finish(item, kind, body, end, shift));
                        }
                    } else if depth == item.depth.saturating_add(1) {
                        child_end(item);
                    }
                }
                if stack.is_empty() {
                    // The root is closed: whatever trails it is not part of the feed.
                    break;
                }
            }
            Event::Text(text) => {
                if let Some((_, collected)) = current.as_mut().and_then(|i| i.collecting.as_mut()) {
                    let raw = decode(text.as_ref(), encoding);
                    match quick_xml::escape::unescape(&raw) {
                        Ok(unescaped) => collected.push_str(&unescaped),
                        // Unknown (HTML) entities: keep the text as written.
                        Err(_) => collected.push_str(&raw),
                    }
                }
            }
            Event::CData(data) => {
                if let Some((_, collected)) = current.as_mut().and_then(|i| i.collecting.as_mut()) {
                    collected.push_str(&decode(data.as_ref(), encoding));
                }
            }
            Event::Eof => {
                if kind.is_none() {
                    return Err(unreadable(
                        "not an rss or atom document: no root element found",
                    ));
                }
                if let Some(open) = stack.last() {
                    incomplete = Some(format!(
                        "document ends inside <{}> ({} elements open)",
                        String::from_utf8_lossy(open),
                        stack.len()
                    ));
                }
                break;
            }
            _ => {}
        }
    }
    Ok(ParsedFeed { items, incomplete })
}

fn root_kind(start: &BytesStart) -> Result<FeedKind> {
    match start.local_name().as_ref() {
        b"rss" => Ok(FeedKind::Rss),
        b"RDF" => Ok(FeedKind::Rdf),
        b"feed" => Ok(FeedKind::Atom),
        other => Err(unreadable(format!(
            "not an rss or atom document: root element is <{}>",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// RSS 2.0 items sit in `rss/channel`, RSS 1.0 items and Atom entries directly under the root.
fn is_item(kind: Option<FeedKind>, stack: &[Vec<u8>], local: &[u8]) -> bool {
    match kind {
        Some(FeedKind::Rss) => {
            local == b"item"
                && stack.len() == 2
                && stack.last().map(Vec::as_slice) == Some(b"channel")
        }
        Some(FeedKind::Rdf) => local == b"item" && stack.len() == 1,
        Some(FeedKind::Atom) => local == b"entry" && stack.len() == 1,
        None => false,
    }
}

fn item_start(
    start: &BytesStart,
    before: u64,
    depth: usize,
    encoding: TextEncoding,
) -> ItemBuilder {
    let about = start
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == b"about")
        .map(|a| attribute_text(&a.value, encoding))
        .filter(|v| !v.is_empty());
    ItemBuilder {
        start: before,
        depth,
        prefix: start.name().prefix().map(|p| p.as_ref().to_vec()),
        about,
        ..ItemBuilder::default()
    }
}

fn child_start(
    item: &mut ItemBuilder,
    start: &BytesStart,
    encoding: TextEncoding,
    has_content: bool,
) {
    let name = start.name();
    let local = start.local_name();
    let prefix = name.prefix().map(|p| p.as_ref().to_vec());
    // Extension elements (media:title, atom:link inside RSS, ...) must not shadow the item's
    // own children; Dublin Core's date is the one extension read.
    let field = match local.as_ref() {
        b"date" => Some(Field::Date),
        _ if prefix != item.prefix => None,
        b"guid" => Some(Field::Guid),
        b"id" => Some(Field::Id),
        b"link" => Some(Field::Link),
        b"title" => Some(Field::Title),
        b"pubDate" => Some(Field::PubDate),
        b"published" => Some(Field::Published),
        b"updated" => Some(Field::Updated),
        _ => None,
    };
    let Some(field) = field else {
        return;
    };
    if field == Field::Link {
        let mut href = None;
        let mut rel = None;
        for attribute in start.attributes().flatten() {
            match attribute.key.local_name().as_ref() {
                b"href" => href = Some(attribute_text(&attribute.value, encoding)),
                b"rel" => rel = Some(attribute_text(&attribute.value, encoding)),
                _ => {}
            }
        }
        if let Some(href) = href.filter(|h| !h.is_empty()) {
            if matches!(rel.as_deref(), None | Some("alternate")) && item.link_alternate.is_none() {
                item.link_alternate = Some(href.clone());
            }
            if item.link_any.is_none() {
                item.link_any = Some(href);
            }
        }
    }
    if has_content {
        item.collecting = Some((field, String::new()));
    }
}

fn child_end(item: &mut ItemBuilder) {
    let Some((field, text)) = item.collecting.take() else {
        return;
    };
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let slot = match field {
        Field::Guid => &mut item.guid,
        Field::Id => &mut item.atom_id,
        Field::Link => &mut item.link_text,
        Field::Title => &mut item.title,
        Field::PubDate => &mut item.pub_date,
        Field::Published => &mut item.published,
        Field::Updated => &mut item.updated,
        Field::Date => &mut item.date,
    };
    if slot.is_none() {
        *slot = Some(text.to_string());
    }
}

fn finish(
    item: ItemBuilder,
    kind: Option<FeedKind>,
    body: &[u8],
    end: u64,
    shift: u64,
) -> FeedItem {
    let bytes = usize::try_from(item.start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(start, end)| body.get(start..end))
        .unwrap_or_default()
        .to_vec();
    let offset = item.start.saturating_add(shift);
    let link = item.link_text.or(item.link_alternate).or(item.link_any);
    let published = item
        .pub_date
        .or(item.published)
        .or(item.updated)
        .or(item.date);
    let title = item.title;
    let id = item
        .guid
        .or(item.atom_id)
        .or(item.about)
        .or_else(|| link.clone())
        .or_else(|| match (&title, &published) {
            (Some(title), Some(published)) => Some(format!("{title}|{published}")),
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (None, None) => None,
        })
        .unwrap_or_else(|| format!("offset:{offset}"));
    let format = if kind == Some(FeedKind::Atom) {
        PayloadFormat::AtomEntry
    } else {
        PayloadFormat::RssItem
    };
    FeedItem {
        id,
        format,
        bytes,
        offset,
        published,
        title,
        link,
    }
}

fn encoding_of(label: &[u8]) -> TextEncoding {
    let label = String::from_utf8_lossy(label).trim().to_ascii_lowercase();
    match label.as_str() {
        "windows-1252" | "cp1252" | "x-cp1252" | "iso-8859-1" | "iso8859-1" | "latin1"
        | "latin-1" | "l1" | "iso-8859-15" | "us-ascii" | "ascii" => TextEncoding::Windows1252,
        _ => TextEncoding::Utf8,
    }
}

fn attribute_text(raw: &[u8], encoding: TextEncoding) -> String {
    let text = decode(raw, encoding);
    match quick_xml::escape::unescape(&text) {
        Ok(unescaped) => unescaped.trim().to_string(),
        Err(_) => text.trim().to_string(),
    }
}

fn decode(raw: &[u8], encoding: TextEncoding) -> Cow<'_, str> {
    match encoding {
        TextEncoding::Utf8 => String::from_utf8_lossy(raw),
        TextEncoding::Windows1252 => {
            if raw.is_ascii() {
                String::from_utf8_lossy(raw)
            } else {
                Cow::Owned(raw.iter().map(|&b| windows_1252(b)).collect())
            }
        }
    }
}

/// 0x80..=0x9F of windows-1252; the five unassigned bytes map to the C1 controls, as WHATWG does.
const CP1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

fn windows_1252(byte: u8) -> char {
    match byte {
        0x80..=0x9f => CP1252_HIGH
            .get(usize::from(byte - 0x80))
            .copied()
            .unwrap_or(char::REPLACEMENT_CHARACTER),
        _ => char::from(byte),
    }
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test should do.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn read(name: &str) -> Vec<u8> {
        let path = format!("{}/../data/news/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    fn check_slices(document: &[u8], items: &[FeedItem], open: &str, close: &str) {
        for item in items {
            assert!(item.bytes.starts_with(open.as_bytes()), "{:?}", item.id);
            assert!(item.bytes.ends_with(close.as_bytes()), "{:?}", item.id);
            let at = item.offset as usize;
            assert_eq!(&document[at..at + item.bytes.len()], item.bytes.as_slice());
        }
    }

    #[test]
    fn sec_press_releases_rss() {
        let document = read("sec_press_releases.rss.xml");
        let items = parse_feed(&document).unwrap();
        assert_eq!(items.len(), 25);
        let ids: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 25);
        assert!(items.iter().all(|i| i.format == PayloadFormat::RssItem));
        check_slices(&document, &items, "<item", "</item>");
        let first = &items[0];
        assert_eq!(
            first.title.as_deref(),
            Some("Acting Chairman Mark T. Uyeda Names Acting Senior Staff")
        );
        assert_eq!(
            first.link.as_deref(),
            Some("https://www.sec.gov/newsroom/press-releases/2025-31")
        );
        assert_eq!(
            first.published.as_deref(),
            Some("Fri, 24 Jan 2025 11:00:00 -0500")
        );
        assert_eq!(
            items.last().unwrap().published.as_deref(),
            Some("Tue, 14 Jan 2025 09:06:46 -0500")
        );
    }

    #[test]
    fn sec_xbrl_rss_in_windows_1252() {
        let document = read("sec_usgaap_xbrl_filings.rss.xml");
        let items = parse_feed(&document).unwrap();
        assert_eq!(items.len(), 200);
        let ids: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 200);
        check_slices(&document, &items, "<item", "</item>");
        assert_eq!(
            items[0].id,
            "https://www.sec.gov/Archives/edgar/data/1915657/000119312525012309/0001193125-25-012309-xbrl.zip"
        );
        assert_eq!(
            items[0].title.as_deref(),
            Some("HF Sinclair Corp (0001915657) (Filer)")
        );
        assert_eq!(
            items[0].published.as_deref(),
            Some("Fri, 24 Jan 2025 17:08:44 EST")
        );
        assert_eq!(
            items.last().unwrap().published.as_deref(),
            Some("Fri, 24 Jan 2025 07:00:39 EST")
        );
        // Titles with bytes above 0x7f decode as windows-1252, never as replacement characters.
        assert!(items
            .iter()
            .filter_map(|i| i.title.as_deref())
            .all(|t| !t.contains(char::REPLACEMENT_CHARACTER)));
    }

    #[test]
    fn sec_edgar_atom() {
        let document = read("sec_edgar_company_filings_0001844419.atom.xml");
        let items = parse_feed(&document).unwrap();
        assert_eq!(items.len(), 5);
        assert!(items.iter().all(|i| i.format == PayloadFormat::AtomEntry));
        let ids: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 5);
        check_slices(&document, &items, "<entry", "</entry>");
        assert_eq!(
            items[0].published.as_deref(),
            Some("2021-04-29T16:45:49-04:00")
        );
        assert_eq!(
            items[4].published.as_deref(),
            Some("2021-02-16T17:25:34-05:00")
        );
        assert!(items.iter().all(|i| i.link.is_some() && i.title.is_some()));
    }

    #[test]
    fn truncated_document_keeps_complete_items() {
        let document = read("sec_press_releases.rss.xml");
        let full = parse_feed(&document).unwrap();
        for cut in [
            document.len() / 2,
            document.len() / 3 + 1,
            document.len() - 20,
        ] {
            let part = &document[..cut];
            let parsed = parse_feed_detailed(part).unwrap();
            assert!(parsed.incomplete.is_some());
            let expected: Vec<&FeedItem> = full
                .iter()
                .filter(|i| i.offset as usize + i.bytes.len() <= cut)
                .collect();
            assert!(!expected.is_empty());
            assert_eq!(parsed.items.iter().collect::<Vec<_>>(), expected);
            assert_eq!(parse_feed(part).unwrap(), parsed.items);
        }
        assert_eq!(parse_feed_detailed(&document).unwrap().incomplete, None);
    }

    #[test]
    fn not_a_feed_is_unreadable() {
        for document in [
            &b""[..],
            b"   ",
            b"{\"items\": []}",
            b"<!DOCTYPE html><html><body><item>x</item></body></html>",
            b"\x00\x01\x02\xff\xfe garbage",
        ] {
            let result = parse_feed(document);
            assert!(
                matches!(result, Err(ConnectorError::Unreadable { .. })),
                "{:?} -> {result:?}",
                String::from_utf8_lossy(document)
            );
        }
    }

    #[test]
    fn broken_after_the_root_is_incomplete_not_unreadable() {
        let parsed =
            parse_feed_detailed(b"<rss><channel><item><guid>a</guid></item></wrong></rss>")
                .unwrap();
        assert_eq!(parsed.items.len(), 1);
        assert!(parsed.incomplete.unwrap().contains("xml error"));
    }

    #[test]
    fn ids_fall_back_in_order() {
        let document = "\u{feff}<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel>\
            <item><guid>g1</guid><link>l1</link></item>\
            <item><link>l2</link><title>t2</title></item>\
            <item><title> t3 </title><pubDate>d3</pubDate></item>\
            <item><description>nothing</description></item>\
            <item/>\
            <item><title><![CDATA[a <b> & c]]></title><media:title xmlns:media=\"m\">no</media:title>\
            <guid>&amp;x</guid></item>\
            </channel></rss>";
        let items = parse_feed(document.as_bytes()).unwrap();
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let fourth = format!("offset:{}", items[3].offset);
        let fifth = format!("offset:{}", items[4].offset);
        assert_eq!(
            ids,
            ["g1", "l2", "t3|d3", fourth.as_str(), fifth.as_str(), "&x"]
        );
        assert_eq!(items[4].bytes, b"<item/>");
        assert_eq!(items[5].title.as_deref(), Some("a <b> & c"));
        check_slices(document.as_bytes(), &items[..4], "<item", "</item>");
    }

    #[test]
    fn windows_1252_text_is_decoded_but_bytes_are_kept() {
        // The SEC XBRL sample declares windows-1252 but happens to be pure ASCII.
        let document = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?>\n<rss><channel>\
            <item><title>Caf\xe9 \x93Q\x94 &amp; Co</title></item></channel></rss>";
        let items = parse_feed(document).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].title.as_deref(),
            Some("Caf\u{e9} \u{201c}Q\u{201d} & Co")
        );
        assert_eq!(items[0].id, "Caf\u{e9} \u{201c}Q\u{201d} & Co");
        check_slices(document, &items, "<item", "</item>");
        assert!(items[0].bytes.windows(4).any(|w| w == b"Caf\xe9"));
    }

    #[test]
    fn rdf_items_use_rdf_about() {
        let document = br#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="http://x/"><title>c</title></channel>
  <item rdf:about="http://x/1"><title>one</title><link>http://x/1</link><dc:date>2025-01-01</dc:date></item>
</rdf:RDF>"#;
        let items = parse_feed(document).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, "http://x/1");
        assert_eq!(items[0].published.as_deref(), Some("2025-01-01"));
        assert_eq!(items[0].format, PayloadFormat::RssItem);
    }

    #[test]
    fn garbage_never_panics() {
        let document = read("sec_press_releases.rss.xml");
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut copy = document.clone();
            for k in 0..8 {
                let at = ((rng >> (k * 7)) as usize) % copy.len();
                copy[at] = (rng >> (k * 3)) as u8;
            }
            let cut = (rng as usize) % copy.len();
            let _ = parse_feed(&copy);
            let _ = parse_feed(&copy[..cut]);
        }
    }

    #[test]
    fn settings_validation() {
        let base = RssSettings {
            url: Some("https://www.sec.gov/news/pressreleases.rss".into()),
            file: None,
            poll_interval_secs: 60,
            follow: false,
        };
        assert!(base.validate("s").is_ok());
        let both = RssSettings {
            file: Some("a.xml".into()),
            ..base.clone()
        };
        assert!(both.validate("s").is_err());
        let neither = RssSettings {
            url: None,
            ..base.clone()
        };
        assert!(neither.validate("s").is_err());
        let ftp = RssSettings {
            url: Some("ftp://x".into()),
            ..base.clone()
        };
        let err = ftp.validate("s").unwrap_err().to_string();
        assert!(err.contains("s.url"), "{err}");
        let zero = RssSettings {
            poll_interval_secs: 0,
            ..base.clone()
        };
        assert!(zero.validate("s").is_err());
        let file: RssSettings = serde_json::from_str(r#"{"file": "feed.xml"}"#).unwrap();
        assert_eq!(file.poll_interval_secs, 60);
        assert!(file.validate("s").is_ok());
        assert!(serde_json::from_str::<RssSettings>(r#"{"file": "f", "x": 1}"#).is_err());
    }
}
