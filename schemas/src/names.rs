//! Topic and table names. Services talk to each other only through these.

/// Raw trade-like records (FIX messages, CSV ticks, exchange binary messages), as received.
pub const TOPIC_RAW_TRADES: &str = "raw.trades";
/// Raw news-like records (RSS/Atom items, JSON-lines posts), as received.
pub const TOPIC_RAW_NEWS: &str = "raw.news";
/// Prefix of the per-source dead-letter topics (`dlq.<source id>`).
pub const TOPIC_DEAD_LETTER_PREFIX: &str = "dlq.";

/// Enriched (L2) trades as JSON, for real-time consumers; partition = the raw partition.
pub const TOPIC_ENRICHED_TRADES: &str = "enriched.trades";
/// Enriched (L2) news as JSON, for real-time consumers; partition = the raw partition.
pub const TOPIC_ENRICHED_NEWS: &str = "enriched.news";

/// The dead-letter topic of one source.
pub fn dead_letter_topic(source_id: &str) -> String {
    format!("{TOPIC_DEAD_LETTER_PREFIX}{source_id}")
}

/// A Delta table of the lake: its logical name (`l1.trades_raw`) and its directory under the
/// lake root (`l1/trades_raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub layer: &'static str,
    pub name: &'static str,
}

impl TableName {
    /// Path relative to the lake root.
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.layer, self.name)
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.layer, self.name)
    }
}

pub const L1_TRADES_RAW: TableName = TableName {
    layer: "l1",
    name: "trades_raw",
};
pub const L1_NEWS_RAW: TableName = TableName {
    layer: "l1",
    name: "news_raw",
};
/// Records a connector could not frame, with their bytes and the reason (fed from `dlq.*`).
pub const L1_DEAD_LETTERS: TableName = TableName {
    layer: "l1",
    name: "dead_letters",
};

/// Every version of the instrument master enrichment used (see [`crate::reference`]).
pub const REF_INSTRUMENTS: TableName = TableName {
    layer: "ref",
    name: "instruments",
};

pub const L2_TRADES: TableName = TableName {
    layer: "l2",
    name: "trades",
};
pub const L2_NEWS: TableName = TableName {
    layer: "l2",
    name: "news",
};
/// Records enrichment kept aside (broken rule or unreadable), with the raw bytes and the reason.
pub const L2_QUARANTINE: TableName = TableName {
    layer: "l2",
    name: "quarantine",
};
/// Trades that arrived after their bar window was final.
pub const L3_LATE_RECORDS: TableName = TableName {
    layer: "l3",
    name: "late_records",
};
pub const L3_NEWS_TRADE_WINDOWS: TableName = TableName {
    layer: "l3",
    name: "news_trade_windows",
};

/// The bars table of one interval: `l3.bars_1m`, `l3.bars_5m`, `l3.bars_1h`, `l3.bars_90s`.
pub fn l3_bars(interval_secs: u64) -> TableName {
    let label = if interval_secs.is_multiple_of(3_600) {
        format!("bars_{}h", interval_secs / 3_600)
    } else if interval_secs.is_multiple_of(60) {
        format!("bars_{}m", interval_secs / 60)
    } else {
        format!("bars_{interval_secs}s")
    };
    // Table names are `&'static str`: each interval's name is made once per process and kept
    // (a handful, from the configuration), however often it is asked for.
    static NAMES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::BTreeMap<u64, &'static str>>,
    > = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut names = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = *names
        .entry(interval_secs)
        .or_insert_with(|| Box::leak(label.into_boxed_str()));
    TableName { layer: "l3", name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_render_as_layer_dot_name_and_layer_slash_name() {
        assert_eq!(L1_TRADES_RAW.to_string(), "l1.trades_raw");
        assert_eq!(L1_NEWS_RAW.relative_path(), "l1/news_raw");
        assert_eq!(dead_letter_topic("fix-a"), "dlq.fix-a");
    }
}
