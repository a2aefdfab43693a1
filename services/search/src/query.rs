//! The user's search text: parsed with tantivy's query language, confined to `headline` and
//! `body`, and refused (never panicking) when it cannot be served.
//!
//! The text only ever narrows: entitlement and filters are separate required clauses (see
//! [`crate::search`]). Confining it to the two text fields is about clear answers, not safety:
//! `tickers:MSFT` is refused with a pointer to the symbols filter instead of quietly acting as
//! one, and `published_at_ns:[..]` instead of a half-working time filter.

use tantivy::query::{Query, QueryParser, QueryParserError};
use tantivy::query_grammar::{self, Occur, UserInputAst, UserInputLeaf};
use tantivy::Index;

use crate::schema::{NewsFields, BODY, HEADLINE};
use crate::{Result, SearchError};

/// Longer texts are not searches a person typed.
pub const MAX_QUERY_BYTES: usize = 2048;
/// The grammar and the query builder recurse on groups and on `NOT` chains; bounding both
/// keeps a hostile query far from a worker's stack limit (a 2 MiB test thread overflows near
/// 500 chained `NOT`s in a debug build).
const MAX_NESTING: usize = 32;
/// Words (whitespace-separated) in one query: far more than a person types.
pub const MAX_QUERY_WORDS: usize = 64;
/// Boosts beyond this overflow `f32` scores (`^1e300` would rank by infinity).
const MAX_BOOST: f64 = 1000.0;
/// Headline matches weigh twice body matches.
const HEADLINE_BOOST: f32 = 2.0;

/// A parsed search text.
pub(crate) struct TextQuery {
    /// What matches and ranks (fuzzy when asked).
    pub scored: Box<dyn Query>,
    /// The same text without fuzziness: snippets take their terms from it.
    pub exact: Box<dyn Query>,
}

/// Query parsers for the news fields, built once per index.
#[derive(Clone)]
pub(crate) struct TextParser {
    exact: QueryParser,
    fuzzy: QueryParser,
}

impl TextParser {
    pub(crate) fn new(index: &Index, fields: &NewsFields) -> Self {
        let mut exact = QueryParser::for_index(index, vec![fields.headline, fields.body]);
        // `rate cut` means both words, as in every news search box.
        exact.set_conjunction_by_default();
        exact.set_field_boost(fields.headline, HEADLINE_BOOST);
        let mut fuzzy = exact.clone();
        for field in [fields.headline, fields.body] {
            // One edit (a transposition counts as one), whole words only: `aple` finds
            // `apple`, but `app` does not find `apple`.
            fuzzy.set_field_fuzzy(field, false, 1, true);
        }
        TextParser { exact, fuzzy }
    }

    /// Parse `text`; `None` when it is blank (the caller then matches everything).
    pub(crate) fn parse(&self, text: &str, fuzzy: bool) -> Result<Option<TextQuery>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(bad(format!(
                "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
                text.len()
            )));
        }
        let words = text.split_whitespace().count();
        if words > MAX_QUERY_WORDS {
            return Err(bad(format!(
                "the query has {words} words; at most {MAX_QUERY_WORDS} are accepted"
            )));
        }
        if nesting(text) > MAX_NESTING {
            return Err(bad(format!(
                "the query nests parentheses more than {MAX_NESTING} deep"
            )));
        }
        let ast = query_grammar::parse_query(text).map_err(|_| syntax_error(text))?;
        check(&ast)?;
        let ast = with_negations_anchored(ast);
        let exact = self
            .exact
            .build_query_from_user_input_ast(ast.clone())
            .map_err(parser_error)?;
        let scored = if fuzzy {
            self.fuzzy
                .build_query_from_user_input_ast(ast)
                .map_err(parser_error)?
        } else {
            exact.box_clone()
        };
        Ok(Some(TextQuery { scored, exact }))
    }
}

fn bad(message: String) -> SearchError {
    SearchError::BadQuery(message)
}

/// Deepest parenthesis nesting, counted on raw characters (a `(` inside quotes counts too:
/// erring on the strict side is harmless at this depth).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The strict grammar says only "no"; the lenient one says where and why.
fn syntax_error(text: &str) -> SearchError {
    let (_, errors) = query_grammar::parse_query_lenient(text);
    match errors.first() {
        Some(e) => bad(format!("syntax error at position {}: {}", e.pos, e.message)),
        None => bad("syntax error (unbalanced quotes or parentheses?)".to_string()),
    }
}

fn parser_error(error: QueryParserError) -> SearchError {
    let message = match error {
        QueryParserError::SyntaxError(_) => "syntax error".to_string(),
        QueryParserError::AllButQueryForbidden => {
            "the query only excludes words; add a word to search for".to_string()
        }
        other => other.to_string(),
    };
    bad(message)
}

fn check_field(field: Option<&str>) -> Result<()> {
    match field {
        None | Some(HEADLINE) | Some(BODY) => Ok(()),
        Some("tickers") | Some("ticker") | Some("symbol") | Some("symbols") => Err(bad(format!(
            "`{}:` cannot be searched as text; use the symbols filter",
            field.unwrap_or_default()
        ))),
        Some(other) => Err(bad(format!(
            "`{other}:` reads as a field name, and only `headline:` and `body:` can be named; \
             put the words in quotes to search for them as written"
        ))),
    }
}

/// Refuse what the parser would accept but this index does not serve.
fn check(ast: &UserInputAst) -> Result<()> {
    match ast {
        UserInputAst::Clause(children) => children.iter().try_for_each(|(_, child)| check(child)),
        UserInputAst::Boost(inner, boost) => {
            let boost = boost.into_inner();
            if !(boost.is_finite() && boost <= MAX_BOOST) {
                return Err(bad(format!(
                    "boost ^{boost} is out of range (at most {MAX_BOOST})"
                )));
            }
            check(inner)
        }
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Literal(literal) => check_field(literal.field_name.as_deref()),
            UserInputLeaf::All => Ok(()),
            UserInputLeaf::Range { field, .. } | UserInputLeaf::Set { field, .. } => {
                check_field(field.as_deref())
            }
            UserInputLeaf::Exists { field } => {
                check_field(Some(field))?;
                Err(bad(format!(
                    "`{field}:*` (has a value) cannot be searched; every item has a headline"
                )))
            }
            UserInputLeaf::Regex { .. } => {
                Err(bad("regular expressions are not supported".to_string()))
            }
        },
    }
}

/// Give every group that only excludes something to exclude it from.
///
/// The grammar reads `apple AND NOT iphone` as `+apple +(-iphone)`, and a group of exclusions
/// alone matches nothing, so the query would find nothing; likewise `-iphone` on its own, which
/// the parser refuses. Anchoring such a group on "everything" gives the reading people mean.
fn with_negations_anchored(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(children) => {
            let mut children: Vec<(Option<Occur>, UserInputAst)> = children
                .into_iter()
                .map(|(occur, child)| (occur, with_negations_anchored(child)))
                .collect();
            if !children.is_empty()
                && children
                    .iter()
                    .all(|(occur, _)| *occur == Some(Occur::MustNot))
            {
                children.push((
                    Some(Occur::Should),
                    UserInputAst::Leaf(Box::new(UserInputLeaf::All)),
                ));
            }
            UserInputAst::Clause(children)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(with_negations_anchored(*inner)), boost)
        }
        leaf @ UserInputAst::Leaf(_) => leaf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_the_deepest_group() {
        assert_eq!(nesting("a (b (c) d) (e)"), 2);
        assert_eq!(nesting(")))((("), 3);
        assert_eq!(nesting("plain"), 0);
    }

    #[test]
    fn only_text_fields_may_be_named() {
        for ok in ["apple", "headline:apple", "body:\"rate cut\"", "*", "a -b"] {
            let ast = query_grammar::parse_query(ok).unwrap();
            assert!(check(&ast).is_ok(), "{ok}");
        }
        for refused in [
            "tickers:MSFT",
            "apple OR tickers:MSFT",
            "(news_key:x)",
            "published_at_ns:[0 TO 10]",
            "link:*",
            "tickers: IN [MSFT AAPL]",
            "apple^1000000",
        ] {
            let ast = query_grammar::parse_query(refused).unwrap();
            assert!(
                matches!(check(&ast), Err(SearchError::BadQuery(_))),
                "{refused}"
            );
        }
    }
}
