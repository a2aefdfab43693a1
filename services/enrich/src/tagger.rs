//! Which tickers a news item is about: cashtags, company names and explicit tickers.
//!
//! - **Cashtags** (`$AAPL`, `$goog`): 1–5 letters after a `$` that does not follow a letter or
//!   digit, optionally with a share class (`$BRK.B`); upper-cased. With a master only tickers it
//!   knows are kept (and spelled as it spells them); without one any cashtag is.
//! - **Company names** from the master, normalised ([`normalise_name`]: legal suffixes such as
//!   Inc, Corp, Co, Ltd, plc, Holdings, Group, Class A dropped; all-caps SEC names title-cased),
//!   matched case-sensitively at word boundaries ("Apple" and "Apple's" tag AAPL, "pineapple"
//!   and "Applebee" do not). Names shorter than 4 characters and names that are ordinary English
//!   words ([`COMMON_WORD_NAMES`]) are not used: they would tag half of all news.
//! - **Explicit tickers** carried by the record (IEX `related`, tweet `entities.symbols`, the
//!   connector's symbol): kept when the master knows them, or, without a master, when they look
//!   like a ticker.
//!
//! The name automaton (Aho–Corasick, leftmost-longest so "Apple Hospitality" wins over
//! "Apple") is built once per master; tagging is one pass over the text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::instruments::InstrumentMaster;

/// Normalised company names that are also ordinary English words (compared lower-case). A news
/// item saying "Target", "Block" or "Match" is far more often using the word than naming the
/// company, so these names never tag; cashtags and explicit tickers still do.
pub const COMMON_WORD_NAMES: &[&str] = &[
    "affirm",
    "allied",
    "ammo",
    "appreciate",
    "arena",
    "arrival",
    "aspen",
    "assure",
    "atlas",
    "authentic",
    "avalon",
    "ball",
    "banner",
    "bark",
    "best",
    "beyond",
    "bill",
    "block",
    "born",
    "buckle",
    "cactus",
    "cadre",
    "canon",
    "cheer",
    "citizens",
    "city",
    "click",
    "coffee",
    "compass",
    "cool",
    "crane",
    "crown",
    "crypto",
    "decent",
    "deluxe",
    "eastern",
    "elastic",
    "emerald",
    "employers",
    "enact",
    "endeavor",
    "energizer",
    "equitable",
    "everest",
    "evergreen",
    "exponent",
    "fathom",
    "flex",
    "fluent",
    "forge",
    "fossil",
    "founder",
    "franchise",
    "freedom",
    "frontier",
    "frontline",
    "fuse",
    "gates",
    "genius",
    "glimpse",
    "grab",
    "gravity",
    "guess",
    "guild",
    "hello",
    "highway",
    "hippo",
    "honest",
    "icon",
    "integer",
    "intelligent",
    "inter",
    "interface",
    "intrusion",
    "joint",
    "kinetic",
    "lakeside",
    "lineage",
    "lion",
    "lithium",
    "match",
    "meridian",
    "mint",
    "mosaic",
    "navigator",
    "news",
    "nice",
    "noble",
    "nova",
    "opera",
    "orange",
    "orion",
    "paid",
    "perfect",
    "pool",
    "popular",
    "post",
    "premier",
    "quantum",
    "reliability",
    "reliance",
    "reliant",
    "remark",
    "root",
    "seek",
    "shell",
    "slam",
    "snap",
    "sound",
    "southern",
    "spire",
    "star",
    "stem",
    "stride",
    "target",
    "team",
    "track",
    "triumph",
    "ultimate",
    "unit",
    "viking",
    "visionary",
    "waters",
    "worlds",
    "yellow",
    "general",
    "national",
    "american",
    "first",
    "global",
    "united",
    "capital",
    "energy",
    "trust",
    "digital",
    "public",
    "life",
    "value",
    "realty",
    "western",
    "northern",
];

/// Trailing words of a registered name that are legal form, not name (compared lower-case,
/// without trailing `.`/`,`).
const LEGAL_SUFFIXES: &[&str] = &[
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "cos",
    "company",
    "companies",
    "ltd",
    "limited",
    "plc",
    "holdings",
    "holding",
    "hldgs",
    "group",
    "grp",
    "llc",
    "l.l.c",
    "lp",
    "l.p",
    "sa",
    "s.a",
    "ag",
    "nv",
    "n.v",
    "se",
    "spa",
    "s.p.a",
    "bv",
    "oyj",
    "asa",
    "ab",
    "kk",
    "com",
    "new",
    "adr",
    "ads",
    "&",
    "and",
    "the",
];

/// Shortest normalised name used for tagging.
const MIN_NAME_CHARS: usize = 4;

/// Company name as it appears in running text: legal suffixes (`Inc.`, `Corp`, `& Co`,
/// `Class A`, `/DE/`, parenthesised notes) dropped, all-caps registrations title-cased word by
/// word (words with digits or symbols such as `AT&T` keep their case).
pub fn normalise_name(registered: &str) -> String {
    let before_paren = registered.split('(').next().unwrap_or(registered);
    let mut words: Vec<&str> = before_paren
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .filter(|w| !w.starts_with('/') && !w.starts_with('\\'))
        .collect();
    while let Some(last) = words.last() {
        let bare = last.trim_end_matches(['.', ',']).to_ascii_lowercase();
        let class_letter = words.len() >= 2
            && bare.len() == 1
            && words
                .get(words.len() - 2)
                .is_some_and(|w| w.eq_ignore_ascii_case("class") || w.eq_ignore_ascii_case("cl"));
        if class_letter {
            words.truncate(words.len() - 2);
        } else if LEGAL_SUFFIXES.contains(&bare.as_str()) {
            words.pop();
        } else {
            break;
        }
    }
    if words.first().is_some_and(|w| w.eq_ignore_ascii_case("the")) {
        words.remove(0);
    }
    let all_caps = !words.iter().any(|w| w.chars().any(char::is_lowercase));
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            if all_caps && w.chars().all(char::is_alphabetic) {
                title_case(w)
            } else {
                (*w).to_owned()
            }
        })
        .collect();
    words
        .join(" ")
        .trim_matches(|c: char| matches!(c, '.' | ',' | '-' | '&') || c.is_whitespace())
        .to_owned()
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// Tags news text with tickers; see the module documentation.
#[derive(Debug, Clone)]
pub struct TickerTagger {
    master: Option<Arc<InstrumentMaster>>,
    names: Option<AhoCorasick>,
    /// Tickers of each automaton pattern, by pattern index.
    name_tickers: Vec<Vec<String>>,
}

impl TickerTagger {
    /// Build the tagger (and its name automaton) for a master; `None` tags cashtags and
    /// ticker-shaped explicit symbols only.
    pub fn new(master: Option<Arc<InstrumentMaster>>) -> Self {
        let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for instrument in master.iter().flat_map(|m| m.iter()) {
            let Some(registered) = &instrument.name else {
                continue;
            };
            let name = normalise_name(registered);
            if name.chars().count() < MIN_NAME_CHARS
                || COMMON_WORD_NAMES.contains(&name.to_lowercase().as_str())
            {
                continue;
            }
            by_name
                .entry(name)
                .or_default()
                .insert(instrument.symbol.clone());
        }
        let mut patterns = Vec::with_capacity(by_name.len());
        let mut name_tickers = Vec::with_capacity(by_name.len());
        for (name, tickers) in by_name {
            // Preferred shares, warrants and units (`BAC-PB`, `XYZ-WT`) share the issuer's
            // name; the common stock is what a mention of the name means.
            let common: Vec<String> = tickers
                .iter()
                .filter(|t| !t.contains('-'))
                .cloned()
                .collect();
            patterns.push(name);
            name_tickers.push(if common.is_empty() {
                tickers.into_iter().collect()
            } else {
                common
            });
        }
        let names = if patterns.is_empty() {
            None
        } else {
            match AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
            {
                Ok(automaton) => Some(automaton),
                Err(e) => {
                    tracing::warn!(error = %e, "company-name automaton not built; tagging cashtags and explicit tickers only");
                    None
                }
            }
        };
        TickerTagger {
            master,
            names,
            name_tickers,
        }
    }

    /// Version of the master the tags were checked against.
    pub fn reference_version(&self) -> Option<i64> {
        self.master.as_ref().map(|m| m.version)
    }

    /// How many company names are matched.
    pub fn name_count(&self) -> usize {
        self.name_tickers.len()
    }

    /// Upper-case tickers mentioned in `texts` or given in `explicit`, sorted and unique.
    pub fn tag(&self, texts: &[&str], explicit: &[String]) -> Vec<String> {
        let mut found = BTreeSet::new();
        for text in texts {
            self.cashtags(text, &mut found);
            self.company_names(text, &mut found);
        }
        for symbol in explicit {
            if let Some(ticker) = self.accept(symbol.trim()) {
                found.insert(ticker);
            }
        }
        found.into_iter().collect()
    }

    /// A candidate ticker as the master spells it, or upper-cased when there is no master.
    fn accept(&self, candidate: &str) -> Option<String> {
        match &self.master {
            Some(master) => master.lookup(candidate).map(|i| i.symbol.clone()),
            None => looks_like_ticker(candidate).then(|| candidate.to_ascii_uppercase()),
        }
    }

    fn cashtags(&self, text: &str, found: &mut BTreeSet<String>) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(offset) = bytes
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b == b'$'))
        {
            let dollar = i + offset;
            i = dollar + 1;
            if text
                .get(..dollar)
                .and_then(|before| before.chars().next_back())
                .is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            let rest = bytes.get(dollar + 1..).unwrap_or_default();
            let letters = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
            if !(1..=5).contains(&letters) {
                continue;
            }
            let mut end = letters;
            // Share class: `$BRK.B`, `$BF-B`.
            if matches!(rest.get(end), Some(b'.' | b'-')) {
                let class = rest
                    .get(end + 1..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|b| b.is_ascii_alphabetic())
                    .count();
                let after = rest.get(end + 1 + class).copied();
                if (1..=2).contains(&class) && !after.is_some_and(|b| b.is_ascii_alphanumeric()) {
                    end += 1 + class;
                }
            }
            // `$AAPL2` or `$AAPLX9` is no cashtag.
            if rest
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                continue;
            }
            let candidate =
                String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned();
            let base =
                String::from_utf8_lossy(rest.get(..letters).unwrap_or_default()).into_owned();
            if let Some(ticker) = self.accept(&candidate).or_else(|| self.accept(&base)) {
                found.insert(ticker);
            }
            i = dollar + 1 + end;
        }
    }

    fn company_names(&self, text: &str, found: &mut BTreeSet<String>) {
        let Some(names) = &self.names else { return };
        for hit in names.find_iter(text) {
            let before = text.get(..hit.start()).and_then(|t| t.chars().next_back());
            let after = text.get(hit.end()..).and_then(|t| t.chars().next());
            if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            if let Some(tickers) = self.name_tickers.get(hit.pattern().as_usize()) {
                found.extend(tickers.iter().cloned());
            }
        }
    }
}

/// 1–5 ASCII letters, optionally followed by a `.`/`-`/`/` share class of 1–2 letters.
pub(crate) fn looks_like_ticker(candidate: &str) -> bool {
    let (base, class) = match candidate.split_once(['.', '-', '/']) {
        Some((base, class)) => (base, Some(class)),
        None => (candidate, None),
    };
    let letters = |s: &str, max: usize| {
        (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
    };
    letters(base, 5) && class.is_none_or(|c| letters(c, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruments::Instrument;
    use crate::samples::bundled_master;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_lose_their_legal_form() {
        assert_eq!(normalise_name("Apple Inc."), "Apple");
        assert_eq!(normalise_name("MICROSOFT CORP"), "Microsoft");
        assert_eq!(normalise_name("ELI LILLY & Co"), "Eli Lilly");
        assert_eq!(normalise_name("Meta Platforms, Inc."), "Meta Platforms");
        assert_eq!(normalise_name("AMAZON COM INC"), "Amazon");
        assert_eq!(
            normalise_name("INTERNATIONAL BUSINESS MACHINES CORP"),
            "International Business Machines"
        );
        assert_eq!(normalise_name("AT&T INC."), "AT&T");
        assert_eq!(normalise_name("Alphabet Inc. (Class C)"), "Alphabet");
        assert_eq!(normalise_name("NEWS CORP /DE/ Class A"), "News");
        assert_eq!(normalise_name("The Walt Disney Company"), "Walt Disney");
        assert_eq!(
            normalise_name("Bank of America Holdings Group plc"),
            "Bank of America"
        );
        assert_eq!(normalise_name(""), "");
    }

    #[test]
    fn bundled_master_tags_names_cashtags_and_explicit_tickers() {
        let tagger = TickerTagger::new(Some(Arc::new(bundled_master(4).unwrap())));
        assert!(tagger.name_count() > 5_000, "{}", tagger.name_count());
        assert_eq!(tagger.reference_version(), Some(4));
        assert_eq!(tagger.tag(&["Apple unveils a new iPhone"], &[]), ["AAPL"]);
        assert_eq!(
            tagger.tag(&["Analysts like Apple's margins."], &[]),
            ["AAPL"]
        );
        assert!(tagger.tag(&["pineapple prices jump"], &[]).is_empty());
        assert!(tagger.tag(&["PineApple and Applesauce"], &[]).is_empty());
        assert_eq!(tagger.tag(&["watch $goog today"], &[]), ["GOOG"]);
        assert_eq!(
            tagger.tag(&["Microsoft and Alphabet", "$brk.b"], &[]),
            ["BRK-B", "GOOG", "GOOGL", "MSFT"]
        );
        // Common words and unknown cashtags do not tag; US$ amounts are not cashtags.
        assert!(tagger
            .tag(&["Target hit; Block party; $ZZZZQ; US$AAPL"], &[])
            .is_empty());
        assert_eq!(
            tagger.tag(
                &[],
                &strings(&["AAPL", "Computer Hardware", "CON31167138", "lrcx"])
            ),
            ["AAPL", "LRCX"]
        );
    }

    #[test]
    fn without_a_master_any_ticker_shaped_cashtag_counts() {
        let tagger = TickerTagger::new(None);
        assert_eq!(tagger.reference_version(), None);
        assert_eq!(
            tagger.tag(&["$aapl $BRK.B $TOOLONG $X1 $ $5 $fb."], &[]),
            ["AAPL", "BRK.B", "FB"]
        );
        assert_eq!(
            tagger.tag(
                &["Apple"],
                &strings(&["GOOG", "NASDAQ01", "Computer Hardware"])
            ),
            ["GOOG"]
        );
    }

    #[test]
    fn longest_name_wins_and_boundaries_hold() {
        let master = InstrumentMaster::from_instruments(
            1,
            [
                Instrument {
                    symbol: "AAPL".into(),
                    name: Some("Apple Inc.".into()),
                    ..Instrument::default()
                },
                Instrument {
                    symbol: "APLE".into(),
                    name: Some("Apple Hospitality REIT, Inc.".into()),
                    ..Instrument::default()
                },
                Instrument {
                    symbol: "TGT".into(),
                    name: Some("TARGET CORP".into()),
                    ..Instrument::default()
                },
            ],
        );
        let tagger = TickerTagger::new(Some(Arc::new(master)));
        assert_eq!(
            tagger.tag(&["Apple Hospitality REIT raises"], &[]),
            ["APLE"]
        );
        assert_eq!(tagger.tag(&["(Apple)"], &[]), ["AAPL"]);
        assert!(tagger.tag(&["Target"], &[]).is_empty());
        assert_eq!(tagger.tag(&["$tgt"], &[]), ["TGT"]);
    }

    #[test]
    fn ticker_shapes() {
        assert!(looks_like_ticker("AAPL"));
        assert!(looks_like_ticker("BRK.B"));
        assert!(!looks_like_ticker("NASDAQ01"));
        assert!(!looks_like_ticker("Computer Hardware"));
        assert!(!looks_like_ticker(""));
        assert!(!looks_like_ticker("ABCDEF"));
    }
}
