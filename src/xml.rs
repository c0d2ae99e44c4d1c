//! The one XML shape WeCom uses: a root element whose children are named text fields.
//!
//! `<xml><ToUserName><![CDATA[ww..]]></ToUserName><CreateTime>1409659813</CreateTime></xml>`
//! Fields are read by name, in any order, with CDATA and entity references resolved. Children
//! nested deeper (rare in classic events) contribute nothing to the top-level fields. quick-xml
//! expands no external entities and reads no DTD, so a hostile document cannot reach the disk or
//! the network.

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

/// Why a document is not a flat WeCom XML document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed XML")]
    Malformed,
    #[error("no root element")]
    NoRoot,
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

const MAX_DEPTH: usize = 32;

/// The root's direct children as `(name, text)` pairs, in document order.
pub fn top_level_fields(document: &str) -> Result<Vec<(String, String)>, XmlError> {
    let mut reader = Reader::from_str(document);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize;
    let mut saw_root = false;
    loop {
        let event = reader.read_event().map_err(|_| XmlError::Malformed)?;
        match event {
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if depth == 1 {
                    saw_root = true;
                } else if depth == 2 {
                    fields.push((start.name().as_ref().to_owned(), String::new()));
                }
            }
            Event::Empty(empty) => {
                if depth == 0 {
                    saw_root = true;
                } else if depth == 1 {
                    fields.push((empty.name().as_ref().to_owned(), String::new()));
                }
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or(XmlError::Malformed)?;
            }
            Event::Text(text) if depth == 2 => push_text(&mut fields, &text.xml10_content()),
            Event::CData(cdata) if depth == 2 => {
                push_text(&mut fields, &cdata.into_inner());
            }
            Event::GeneralRef(reference) if depth == 2 => {
                let resolved = match reference.resolve_char_ref().map_err(|_| XmlError::Malformed)? {
                    Some(ch) => ch.to_string(),
                    None => resolve_predefined_entity(&reference.into_inner()).ok_or(XmlError::Malformed)?.to_owned(),
                };
                push_text(&mut fields, &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(XmlError::Malformed);
    }
    if !saw_root {
        return Err(XmlError::NoRoot);
    }
    Ok(fields)
}

/// The text of the first field called `name`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

fn push_text(fields: &mut [(String, String)], text: &str) {
    if let Some((_, value)) = fields.last_mut() {
        value.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cdata_plain_text_and_entities_by_name() {
        let fields = top_level_fields(
            "<xml>\n<ToUserName><![CDATA[ww1]]></ToUserName>\n<CreateTime>17</CreateTime><A>x &amp; &#x4e2d;</A><E/></xml>",
        )
        .unwrap();
        assert_eq!(field(&fields, "ToUserName"), Some("ww1"));
        assert_eq!(field(&fields, "CreateTime"), Some("17"));
        assert_eq!(field(&fields, "A"), Some("x & 中"));
        assert_eq!(field(&fields, "E"), Some(""));
        assert_eq!(field(&fields, "Missing"), None);
    }

    #[test]
    fn nested_children_do_not_leak_into_fields() {
        let fields = top_level_fields("<xml><Outer><Inner>no</Inner></Outer><B>yes</B></xml>").unwrap();
        assert_eq!(field(&fields, "Outer"), Some(""));
        assert_eq!(field(&fields, "B"), Some("yes"));
    }

    #[test]
    fn rejects_broken_documents() {
        for broken in ["", "plain text", "<xml><A>1</B></xml>", "<xml><A>1</A>", "<xml><A>&bogus;</A></xml>"] {
            assert!(top_level_fields(broken).is_err(), "{broken:?} should be rejected");
        }
    }
}
