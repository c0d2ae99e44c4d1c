//! The one definition of "the same text" for search: NFKC, then lowercase. Full-width letters and
//! digits become ASCII, compatibility forms fold (`①` is `1`), and Latin letters match whatever
//! their case. Text and query terms go through the same function, so "contains" means the same on
//! both sides.
//!
//! Normalisation works segment by segment (a starter and the combining marks after it), so every
//! normalised character can be traced back to the original characters it came from: the snippet
//! highlights the message as it was written, never a folded copy, and never cuts a character.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

/// Normalised text, with where each of its segments came from in the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    /// `(normalised start, original start, original end)` per segment, in order; byte offsets.
    segments: Vec<(usize, usize, usize)>,
}

impl Normalized {
    /// The original byte range that produced the normalised bytes `start..end` (widened to whole
    /// segments, so always on character boundaries).
    pub fn original_range(&self, start: usize, end: usize) -> (usize, usize) {
        let segment_of = |offset: usize| self.segments.partition_point(|&(at, _, _)| at <= offset).saturating_sub(1);
        let first = self.segments[segment_of(start)];
        let last = self.segments[segment_of(end.saturating_sub(1).max(start))];
        (first.1, last.2)
    }
}

/// `text` normalised, with the map back to the original.
pub fn normalize_mapped(text: &str) -> Normalized {
    let mut normalized = String::with_capacity(text.len());
    let mut segments = Vec::new();
    for (start, segment) in segments_of(text) {
        segments.push((normalized.len(), start, start + segment.len()));
        push_normalized(&mut normalized, segment);
    }
    Normalized { text: normalized, segments }
}

/// `text` normalised (no map; what the index and the verification use).
pub fn normalize(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut normalized = String::with_capacity(text.len());
    for (_, segment) in segments_of(text) {
        push_normalized(&mut normalized, segment);
    }
    normalized
}

fn push_normalized(out: &mut String, segment: &str) {
    if segment.is_ascii() {
        out.extend(segment.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        out.extend(segment.nfkc().flat_map(char::to_lowercase));
    }
}

/// Splits `text` into segments: each starts at a character of combining class 0 and takes the
/// combining marks after it. Yields `(byte offset, segment)`.
fn segments_of(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, first) = rest.next()?;
        let mut end = start + first.len_utf8();
        while let Some(&(at, next)) = rest.peek() {
            if next.is_ascii() || canonical_combining_class(next) == 0 {
                break;
            }
            end = at + next.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_and_case_fold_to_the_same_text() {
        assert_eq!(normalize("ＡＢＣ１２３ Hello"), "abc123 hello");
        assert_eq!(normalize("退款ＲＥＦＵＮＤ"), "退款refund");
        assert_eq!(normalize("①"), "1");
        assert_eq!(normalize("e\u{301}"), "é", "a base and its combining mark compose");
    }

    #[test]
    fn every_normalised_range_maps_back_to_whole_original_characters() {
        let original = "订单ＡＢ12号";
        let normalized = normalize_mapped(original);
        assert_eq!(normalized.text, "订单ab12号");
        let start = normalized.text.find("ab").unwrap();
        assert_eq!(normalized.original_range(start, start + 2), (6, 12));
        assert_eq!(&original[6..12], "ＡＢ");
        let end = normalized.text.len();
        assert_eq!(normalized.original_range(end - 3, end), (original.len() - 3, original.len()));
    }
}
