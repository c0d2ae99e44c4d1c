//! A query's terms, and what a hit shows of its message: the exact test ([`Terms::matches`]) that
//! decides a hit, and the snippet with every matched term in `<em>`..`</em>`.

use super::normalize::{normalize, normalize_mapped};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most terms in one query.
pub const MAX_TERMS: usize = 16;
/// Characters of context kept before the first match.
const CONTEXT_BEFORE: usize = 16;
/// Characters a snippet shows, unless the first match alone is longer.
const SNIPPET_CHARS: usize = 80;

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query has no terms")]
    Empty,
    #[error("query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    #[error("query has more than {MAX_TERMS} terms")]
    TooManyTerms,
}

/// The whitespace-separated terms of a query, normalised, each at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms(Vec<String>);

impl Terms {
    pub fn parse(query: &str) -> Result<Terms, QueryError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let mut terms: Vec<String> = Vec::new();
        for term in query.split_whitespace().map(normalize).filter(|term| !term.is_empty()) {
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        match terms.len() {
            0 => Err(QueryError::Empty),
            n if n > MAX_TERMS => Err(QueryError::TooManyTerms),
            _ => Ok(Terms(terms)),
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The definition of a hit: the normalised `text` contains every term.
    pub fn matches(&self, text: &str) -> bool {
        let text = normalize(text);
        self.0.iter().all(|term| text.contains(term.as_str()))
    }

    /// A short excerpt of `text` around the first match, every match inside it wrapped in
    /// `<em>`..`</em>`, newlines shown as spaces. Plain text, not HTML-escaped (as a search
    /// engine's default highlighter): escape it before putting it in a page.
    pub fn snippet(&self, text: &str) -> String {
        let normalized = normalize_mapped(text);
        let mut matches: Vec<(usize, usize)> = Vec::new();
        for term in &self.0 {
            for (at, found) in normalized.text.match_indices(term.as_str()) {
                matches.push(normalized.original_range(at, at + found.len()));
            }
        }
        matches.sort_unstable();
        let Some(&(first_start, first_end)) = matches.first() else { return excerpt(text, 0, SNIPPET_CHARS) };
        let start = back_chars(text, first_start, CONTEXT_BEFORE);
        let end = forward_chars(text, start, SNIPPET_CHARS).max(first_end);
        let mut out = String::with_capacity(end - start + 16);
        let mut at = start;
        for (match_start, match_end) in merge(matches).into_iter().filter(|&(s, e)| s >= start && e <= end) {
            out.push_str(&text[at..match_start]);
            out.push_str("<em>");
            out.push_str(&text[match_start..match_end]);
            out.push_str("</em>");
            at = match_end;
        }
        out.push_str(&text[at..end]);
        out.replace(['\n', '\r'], " ")
    }
}

/// Sorted ranges with overlapping ones joined (touching ones stay apart: each term keeps its own
/// `<em>`).
fn merge(sorted: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn excerpt(text: &str, start: usize, chars: usize) -> String {
    text[start..forward_chars(text, start, chars)].replace(['\n', '\r'], " ")
}

/// The byte offset `chars` characters before `offset` (or 0).
fn back_chars(text: &str, offset: usize, chars: usize) -> usize {
    text[..offset].char_indices().rev().take(chars).last().map_or(offset, |(at, _)| at)
}

/// The byte offset `chars` characters after `offset` (or the end).
fn forward_chars(text: &str, offset: usize, chars: usize) -> usize {
    text[offset..].char_indices().nth(chars).map_or(text.len(), |(at, _)| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(query: &str) -> Terms {
        Terms::parse(query).unwrap()
    }

    #[test]
    fn terms_are_normalised_deduplicated_and_bounded() {
        assert_eq!(terms("  退款 ＲＥＦＵＮＤ refund ").as_slice(), ["退款", "refund"]);
        assert_eq!(Terms::parse(" \u{3000} "), Err(QueryError::Empty));
        assert_eq!(Terms::parse(&"a".repeat(MAX_QUERY_BYTES + 1)), Err(QueryError::TooLong));
        let many: Vec<String> = (0..=MAX_TERMS).map(|n| format!("t{n}")).collect();
        assert_eq!(Terms::parse(&many.join(" ")), Err(QueryError::TooManyTerms));
    }

    #[test]
    fn a_hit_contains_every_term_as_a_substring() {
        assert!(terms("退 款").matches("请尽快退款"));
        assert!(terms("13800").matches("电话 138001234"));
        assert!(terms("invoice 发票").matches("INVOICE与发票"));
        assert!(!terms("invoice 合同").matches("INVOICE与发票"));
        assert!(terms("ｉｎｖ").matches("Invoice"));
    }

    #[test]
    fn the_snippet_marks_every_match_in_the_original_characters() {
        let text = "客户说：请在周五前退款，订单号ＡＢ1234，谢谢。Refund please.";
        assert_eq!(
            terms("退款 ab12 refund").snippet(text),
            "客户说：请在周五前<em>退款</em>，订单号<em>ＡＢ12</em>34，谢谢。<em>Refund</em> please."
        );
    }

    #[test]
    fn a_long_text_is_cut_around_the_first_match_on_character_boundaries() {
        let text = format!("{}命中{}", "前".repeat(100), "后".repeat(100));
        let snippet = terms("命中").snippet(&text);
        assert!(snippet.starts_with(&"前".repeat(CONTEXT_BEFORE)), "{snippet}");
        assert!(snippet.contains("<em>命中</em>"));
        assert_eq!(snippet.replace("<em>", "").replace("</em>", "").chars().count(), SNIPPET_CHARS);
    }

    #[test]
    fn overlapping_matches_are_marked_once() {
        assert_eq!(terms("abc bcd").snippet("xabcdx"), "x<em>abcd</em>x");
        assert_eq!(terms("E\u{301}").snippet("cafe\u{301}!"), "caf<em>e\u{301}</em>!");
    }
}
