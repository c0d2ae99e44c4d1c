//! `wecom-zone search` and `wecom-zone reindex`: the search index from the command line, beside
//! or instead of a running service.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{CliError, runtime_error};
use crate::config::{Archive, Config};
use crate::search::{Search, SearchError, SearchHit, SearchRequest, Terms};
use crate::store::SqliteStore;

/// Beijing time, the zone's time zone: dates on the command line and in the output are in it.
const UTC_OFFSET_S: i64 = 8 * 3600;

pub struct Filters {
    pub userid: Option<String>,
    pub roomid: Option<String>,
    pub msgtype: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: u32,
}

pub fn search(config: Option<PathBuf>, corp: Option<String>, query: &str, filters: Filters) -> Result<(), CliError> {
    let config = Config::load(config.as_deref())?;
    let corp_id = content_corp(&config, corp.as_deref())?;
    let terms = Terms::parse(query).map_err(|error| CliError::Usage(format!("search: {error}")))?;
    let begin_time = filters.since.as_deref().map(|text| parse_time(text, false)).transpose()?;
    let end_time = filters.until.as_deref().map(|text| parse_time(text, true)).transpose()?;
    let store = open_store(&config.storage.path)?;
    let search = Search::open_shared(&config.search.path, store).map_err(|error| runtime_error("search", error))?;
    if search.writes() {
        // No service holds the index: bring it up to date with the store first.
        let added = search.catch_up().map_err(|error| runtime_error("search", error))?;
        if added > 0 {
            eprintln!("indexed {added} stored changes first");
        }
    } else {
        let behind = search.backlog().map_err(|error| runtime_error("search", error))?;
        if behind > 0 {
            eprintln!("note: the running service has {behind} stored changes still to index");
        }
    }
    let request = SearchRequest {
        corp_id: corp_id.clone(),
        terms,
        userid: filters.userid,
        roomid: filters.roomid,
        msgtype: filters.msgtype,
        begin_time,
        end_time,
        cursor: None,
        limit: filters.limit as usize,
    };
    let started = Instant::now();
    let page = search.search(&request).map_err(|error| runtime_error("search", error))?;
    let elapsed = started.elapsed();
    let color = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for hit in &page.hits {
        print_hit(&mut out, hit, color).map_err(|error| runtime_error("search", error))?;
    }
    let more = if page.has_more { format!(" (more: raise --limit above {})", filters.limit) } else { String::new() };
    writeln!(
        out,
        "search: {} hits for {query:?} in {corp_id} in {:.1} ms{more}",
        page.hits.len(),
        elapsed.as_secs_f64() * 1000.0
    )
    .map_err(|error| runtime_error("search", error))?;
    Ok(())
}

pub fn reindex(config: Option<PathBuf>) -> Result<(), CliError> {
    let config = Config::load(config.as_deref())?;
    let store = open_store(&config.storage.path)?;
    let search = match Search::open(&config.search.path, store, true) {
        Err(SearchError::InUse) => {
            return Err(CliError::Runtime(format!(
                "reindex: the search index at {} is held by a running service; stop it first (the service catches up \
                 by itself on start)",
                config.search.path.display()
            )));
        }
        other => other.map_err(|error| runtime_error("reindex", error))?,
    };
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("reindex {bar:40} {pos}/{len} records")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let documents = search
        .rebuild(|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .map_err(|error| runtime_error("reindex", error))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let size = search.size_on_disk().map_err(|error| runtime_error("reindex", error))?;
    println!(
        "reindex: {documents} searchable messages indexed from {} in {elapsed:.1} s; index {:.1} MiB at {}",
        config.storage.path.display(),
        size as f64 / (1 << 20) as f64,
        config.search.path.display()
    );
    Ok(())
}

/// The corp to search: the one named (it must be on the classic archive), or the only classic one.
fn content_corp(config: &Config, named: Option<&str>) -> Result<String, CliError> {
    let classic = |corp: &&crate::config::CorpConfig| matches!(corp.archive, Archive::FinanceSdk { .. });
    match named {
        Some(corp_id) => match config.corp(corp_id) {
            None => Err(CliError::Usage(format!("search: no corp {corp_id} in the config"))),
            Some(corp) if !classic(&corp) => Err(CliError::Usage(format!(
                "search: corp {corp_id} is a zone corp: {}",
                crate::abilities::NEEDS_FINANCE_SDK_MSG
            ))),
            Some(corp) => Ok(corp.corp_id.to_string()),
        },
        None => {
            let corps: Vec<_> = config.corps.iter().filter(classic).collect();
            match corps.as_slice() {
                [corp] => Ok(corp.corp_id.to_string()),
                [] => Err(CliError::Usage(format!(
                    "search: no corp here has content: {}",
                    crate::abilities::NEEDS_FINANCE_SDK_MSG
                ))),
                _ => Err(CliError::Usage("search: several corps have content; name one with --corp".into())),
            }
        }
    }
}

/// The store at `path`, which must exist (the service creates it).
fn open_store(path: &Path) -> Result<Arc<SqliteStore>, CliError> {
    if !path.exists() {
        return Err(CliError::Runtime(format!(
            "no store at {}: has the service run with this config?",
            path.display()
        )));
    }
    SqliteStore::open(path).map(Arc::new).map_err(|error| runtime_error("storage", error))
}

fn print_hit(out: &mut impl Write, hit: &SearchHit, color: bool) -> std::io::Result<()> {
    let place =
        if hit.roomid.is_empty() { format!("to {}", hit.tolist.join(",")) } else { format!("in {}", hit.roomid) };
    let recalled = if hit.recalled { " [recalled]" } else { "" };
    writeln!(out, "{}  {} {place}  {}  {}{recalled}", format_time(hit.msgtime), hit.from, hit.msgtype, hit.msgid)?;
    let snippet =
        if color { hit.snippet.replace("<em>", "\x1b[1;31m").replace("</em>", "\x1b[0m") } else { hit.snippet.clone() };
    writeln!(out, "    {snippet}")
}

/// Unix seconds, or `YYYY-MM-DD[ HH:MM[:SS]]` (also with `T`) in Beijing time. A bare date at the
/// end of a range means the end of that day.
fn parse_time(text: &str, end_of_range: bool) -> Result<i64, CliError> {
    let invalid = || CliError::Usage(format!("not a time: {text:?} (Unix seconds or YYYY-MM-DD[ HH:MM[:SS]])"));
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let numbers = |part: &str, sep: char| -> Option<Vec<i64>> { part.split(sep).map(|n| n.parse().ok()).collect() };
    let [year, month, day] = numbers(date, '-').and_then(|n| <[i64; 3]>::try_from(n).ok()).ok_or_else(invalid)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(invalid());
    }
    let clock = match time {
        None if end_of_range => 86_399,
        None => 0,
        Some(time) => match numbers(time, ':').ok_or_else(invalid)?.as_slice() {
            [h, m] if (0..24).contains(h) && (0..60).contains(m) => h * 3600 + m * 60,
            [h, m, s] if (0..24).contains(h) && (0..60).contains(m) && (0..61).contains(s) => h * 3600 + m * 60 + s,
            _ => return Err(invalid()),
        },
    };
    Ok(days_from_civil(year, month, day) * 86_400 + clock - UTC_OFFSET_S)
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time for a time in milliseconds.
fn format_time(msgtime_ms: i64) -> String {
    let seconds = msgtime_ms.div_euclid(1000) + UTC_OFFSET_S;
    let (days, clock) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", clock / 3600, clock % 3600 / 60, clock % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_and_written_in_beijing_time() {
        assert_eq!(parse_time("1700000000", false).unwrap(), 1_700_000_000);
        // 2023-11-14 22:13:20 UTC is 2023-11-15 06:13:20 in Beijing.
        assert_eq!(parse_time("2023-11-15 06:13:20", false).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("2023-11-15T06:13:20", false).unwrap(), 1_700_000_000);
        assert_eq!(format_time(1_700_000_000_000), "2023-11-15 06:13:20");
        assert_eq!(parse_time("2024-02-29", true).unwrap() - parse_time("2024-02-29", false).unwrap(), 86_399);
        assert_eq!(format_time(parse_time("2024-02-29", false).unwrap() * 1000), "2024-02-29 00:00:00");
        assert!(parse_time("2024-13-01", false).is_err());
        assert!(parse_time("yesterday", false).is_err());
    }
}
