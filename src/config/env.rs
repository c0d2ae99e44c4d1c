//! `WECOM_ZONE__SECTION__KEY=value` overrides, applied to the parsed TOML before it is typed.
//!
//! Segments are lower-cased and walk the document: `WECOM_ZONE__SERVER__LISTEN` sets
//! `server.listen`. Inside an array of tables (`corp`) a segment is either an index (`0`; the
//! next free index appends a new entry) or the `corp_id` of an entry, so
//! `WECOM_ZONE__CORP__ww0123__TOKEN` sets that corp's token. Values are stored as strings; the
//! typed layer parses numbers and booleans from strings, so `"8080"` and `8080` mean the same.

use toml::{Table, Value};

use super::ConfigError;

pub const PREFIX: &str = "WECOM_ZONE__";

/// Keys that hold arrays of tables, created as arrays when an override names them first.
const ARRAY_KEYS: [&str; 2] = ["corp", "private_keys"];

/// Applies every variable that starts with [`PREFIX`] to `document`.
pub fn apply_overrides(
    document: &mut Table,
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String)> =
        variables.into_iter().filter(|(name, _)| name.starts_with(PREFIX)).collect();
    // Sorted so that `CORP__0__…` creates the entry before `CORP__1__…` needs index 1.
    overrides.sort();
    for (name, value) in overrides {
        let path: Vec<String> = name[PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env { variable: name, problem: "has an empty path segment".into() });
        }
        set_path(document, &path, value).map_err(|problem| ConfigError::Env { variable: name, problem })?;
    }
    Ok(())
}

fn set_path(table: &mut Table, path: &[String], value: String) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("names no key")?;
    if rest.is_empty() {
        table.insert(head.clone(), Value::String(value));
        return Ok(());
    }
    let child = table.entry(head.clone()).or_insert_with(|| {
        if ARRAY_KEYS.contains(&head.as_str()) { Value::Array(Vec::new()) } else { Value::Table(Table::new()) }
    });
    match child {
        Value::Table(inner) => set_path(inner, rest, value),
        Value::Array(items) => set_in_array(items, rest, value),
        _ => Err(format!("`{head}` is a value, not a section")),
    }
}

fn set_in_array(items: &mut Vec<Value>, path: &[String], value: String) -> Result<(), String> {
    let (selector, rest) = path.split_first().ok_or("names no key")?;
    if rest.is_empty() {
        return Err(format!("`{selector}` selects an array entry but names no key in it"));
    }
    let index = match selector.parse::<usize>() {
        Ok(index) if index < items.len() => index,
        Ok(index) if index == items.len() => {
            items.push(Value::Table(Table::new()));
            index
        }
        Ok(index) => return Err(format!("index {index} skips entries (there are {})", items.len())),
        Err(_) => items
            .iter()
            .position(|item| {
                item.get("corp_id").and_then(Value::as_str).is_some_and(|id| id.eq_ignore_ascii_case(selector))
            })
            .ok_or_else(|| format!("no entry with corp_id `{selector}`"))?,
    };
    match &mut items[index] {
        Value::Table(inner) => set_path(inner, rest, value),
        _ => Err(format!("entry {index} is not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(toml_text: &str, vars: &[(&str, &str)]) -> Result<Table, ConfigError> {
        let mut table: Table = toml_text.parse().unwrap();
        apply_overrides(&mut table, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Ok(table)
    }

    #[test]
    fn double_underscore_nests_into_sections() {
        let table =
            apply("[server]\nlisten = \"0.0.0.0:8080\"", &[("WECOM_ZONE__SERVER__LISTEN", "127.0.0.1:9")]).unwrap();
        assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:9"));
    }

    #[test]
    fn corp_entries_are_selected_by_index_or_corp_id_and_appended() {
        let table = apply(
            "[[corp]]\ncorp_id = \"wwA\"\n[[corp]]\ncorp_id = \"wwB\"",
            &[
                ("WECOM_ZONE__CORP__WWB__TOKEN", "tb"),
                ("WECOM_ZONE__CORP__0__TOKEN", "ta"),
                ("WECOM_ZONE__CORP__2__CORP_ID", "wwC"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        let corps = table["corp"].as_array().unwrap();
        assert_eq!(corps[0]["token"].as_str(), Some("ta"));
        assert_eq!(corps[1]["token"].as_str(), Some("tb"));
        assert_eq!(corps[2]["corp_id"].as_str(), Some("wwC"));
    }

    #[test]
    fn bad_paths_name_the_variable() {
        let error = apply("[[corp]]\ncorp_id = \"wwA\"", &[("WECOM_ZONE__CORP__5__TOKEN", "x")]).unwrap_err();
        assert!(error.to_string().contains("WECOM_ZONE__CORP__5__TOKEN"), "{error}");
        assert!(apply("", &[("WECOM_ZONE__CORP__wwZ__TOKEN", "x")]).is_err());
        assert!(apply("[server]\nlisten = \"x\"", &[("WECOM_ZONE__SERVER__LISTEN__X", "1")]).is_err());
    }
}
