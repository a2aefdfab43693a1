//! Trades out of raw trade records: [`parse_trade`] reads one L1 record and returns the
//! [`TradeRow`]s it carries, says why it carries none, or says why it cannot be read.
//!
//! One module per payload format ([`PayloadFormat::Fix`], [`PayloadFormat::TradesCsv`],
//! [`PayloadFormat::IexTops`]) turns bytes into feed facts; this module joins the instrument
//! master and adds lineage, so every format ends in the same row shape.

pub(crate) mod csv;
pub(crate) mod fix;
mod iex;

use marketlake_schemas::l2::{TradeAction, TradeRow};
use marketlake_schemas::{KafkaPosition, PayloadFormat, RawRecord};

use crate::instruments::InstrumentMaster;
use crate::record::{lineage, Bad, UNSUPPORTED_FORMAT};

/// What one raw trade record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeParse {
    /// One or more trades (a FIX market-data message can carry several), corrections and
    /// cancels included.
    Trades(Vec<TradeRow>),
    /// A well-formed record that is not a trade (logon, order, quote, bar, ...).
    NotATrade { reason: String },
    /// A record that cannot be read. `rule` is a stable code (`missing_field`, `bad_field`,
    /// `bad_layout`, `unsupported_format`); `reason` names the field and the value.
    Malformed { rule: &'static str, reason: String },
}

/// The facts a feed states about one trade, before reference data and lineage are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TradeFacts {
    pub trade_key: String,
    pub action: TradeAction,
    pub supersedes: Option<String>,
    pub symbol: String,
    pub price: i64,
    pub quantity: i64,
    pub event_time_ns: i64,
    pub side: Option<String>,
    pub venue: Option<String>,
    pub currency: Option<String>,
    pub trade_id: Option<String>,
    pub order_id: Option<String>,
    pub account: Option<String>,
    pub trader: Option<String>,
    /// Feed-level markers kept as flags (e.g. LEAN's `suspicious` ticks).
    pub flags: Vec<String>,
}

impl TradeFacts {
    pub fn new(
        trade_key: String,
        symbol: String,
        price: i64,
        quantity: i64,
        event_time_ns: i64,
    ) -> Self {
        TradeFacts {
            trade_key,
            action: TradeAction::New,
            supersedes: None,
            symbol,
            price,
            quantity,
            event_time_ns,
            side: None,
            venue: None,
            currency: None,
            trade_id: None,
            order_id: None,
            account: None,
            trader: None,
            flags: Vec::new(),
        }
    }

    fn into_row(
        self,
        raw: &RawRecord,
        at: &KafkaPosition,
        reference: Option<&InstrumentMaster>,
    ) -> TradeRow {
        let instrument = reference.and_then(|master| master.lookup(&self.symbol));
        let from_master = |pick: fn(&crate::instruments::Instrument) -> &Option<String>| {
            instrument.and_then(|i| pick(i).clone())
        };
        TradeRow {
            trade_key: self.trade_key,
            action: self.action,
            supersedes: self.supersedes,
            isin: from_master(|i| &i.isin),
            figi: from_master(|i| &i.figi),
            instrument_name: from_master(|i| &i.name),
            exchange: from_master(|i| &i.exchange),
            // The feed's currency is what the trade was done in; the master's is the listing's.
            currency: self.currency.or_else(|| from_master(|i| &i.currency)),
            symbol: self.symbol,
            price: self.price,
            quantity: self.quantity,
            side: self.side,
            venue: self.venue,
            trade_id: self.trade_id,
            order_id: self.order_id,
            account: self.account,
            trader: self.trader,
            event_time_ns: self.event_time_ns,
            received_at_ns: raw.received_at_ns,
            reference_version: reference.map(|master| master.version),
            extra: Default::default(),
            flags: self.flags,
            lineage: lineage(raw, at),
        }
    }
}

/// What a format parser found.
#[derive(Debug)]
pub(crate) enum Found {
    Trades(Vec<TradeFacts>),
    NotATrade(String),
}

/// Read one raw trade record. `at` is where it was consumed (lineage); `reference` is joined on
/// the symbol (ISIN, FIGI, name, listing exchange, currency) and its version recorded.
/// Never panics: any unreadable field makes the whole record [`TradeParse::Malformed`].
pub fn parse_trade(
    raw: &RawRecord,
    at: &KafkaPosition,
    reference: Option<&InstrumentMaster>,
) -> TradeParse {
    let found = match raw.format {
        PayloadFormat::Fix => fix::parse(raw),
        PayloadFormat::TradesCsv => csv::parse(raw),
        PayloadFormat::IexTops => iex::parse(raw),
        other => Err(Bad {
            rule: UNSUPPORTED_FORMAT,
            reason: format!("payload format `{}` does not carry trades", other.as_str()),
        }),
    };
    match found {
        Ok(Found::Trades(facts)) => TradeParse::Trades(
            facts
                .into_iter()
                .map(|f| f.into_row(raw, at, reference))
                .collect(),
        ),
        Ok(Found::NotATrade(reason)) => TradeParse::NotATrade { reason },
        Err(bad) => TradeParse::Malformed {
            rule: bad.rule,
            reason: bad.reason,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::samples::*;

    /// The trades of every record, panicking on malformed ones (the samples are clean).
    pub fn trades_of(records: &[RawRecord], reference: Option<&InstrumentMaster>) -> Vec<TradeRow> {
        let mut rows = Vec::new();
        for raw in records {
            match parse_trade(raw, &at(), reference) {
                TradeParse::Trades(trades) => rows.extend(trades),
                TradeParse::NotATrade { .. } => {}
                TradeParse::Malformed { rule, reason } => {
                    panic!(
                        "{rule}: {reason} in {:?}",
                        String::from_utf8_lossy(&raw.payload)
                    )
                }
            }
        }
        rows
    }

    #[test]
    fn reference_data_is_joined_and_versioned() {
        let master = bundled_master(12).unwrap();
        let records = fix_records("fix/fix41_banzai_exec_session.fix").unwrap();
        let rows = trades_of(&records, Some(&master));
        let msft = rows.iter().find(|r| r.symbol == "MSFT").unwrap();
        assert_eq!(msft.instrument_name.as_deref(), Some("MICROSOFT CORP"));
        assert_eq!(msft.exchange.as_deref(), Some("NASDAQ"));
        assert_eq!(msft.currency.as_deref(), Some("USD"));
        assert_eq!(msft.isin.as_deref(), Some("US5949181045"));
        assert_eq!(msft.reference_version, Some(12));
        assert_eq!(msft.lineage.raw_offset, 17);
        assert_eq!(msft.lineage.source_id, "fix-sample");
        assert_eq!(msft.received_at_ns, RECEIVED_AT_NS);
        let unjoined = trades_of(&records, None);
        assert!(unjoined
            .iter()
            .all(|r| r.reference_version.is_none() && r.isin.is_none()));
    }

    #[test]
    fn news_formats_are_not_trades() {
        let mut raw = fix_records("fix/fix41_banzai_exec_session.fix")
            .unwrap()
            .remove(0);
        raw.format = PayloadFormat::Json;
        assert!(matches!(
            parse_trade(&raw, &at(), None),
            TradeParse::Malformed {
                rule: "unsupported_format",
                ..
            }
        ));
    }
}
