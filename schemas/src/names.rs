//! Topic and table names. Services talk to each other only through these.

/// Raw trade-like records (FIX messages, CSV ticks, exchange binary messages), as received.
pub const TOPIC_RAW_TRADES: &str = "raw.trades";
/// Raw news-like records (RSS/Atom items, JSON-lines posts), as received.
pub const TOPIC_RAW_NEWS: &str = "raw.news";
/// Prefix of the per-source dead-letter topics (`dlq.<source id>`).
pub const TOPIC_DEAD_LETTER_PREFIX: &str = "dlq.";

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
