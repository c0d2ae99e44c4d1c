//! The Tantivy index (the only module that knows Tantivy). One document per searchable archive
//! message: its normalised text as character n-grams, its corp, parties, room and type as exact
//! terms for filters, and its time and record id as fast fields for newest-first order.
//!
//! N-grams: at each character position the unigram and the bigram starting there (none that
//! holds whitespace). A one-character term is its unigram; a longer term is a phrase of bigrams
//! at their offsets (every other one, plus the last), which matches exactly where the term occurs
//! in the normalised text. The caller still verifies each candidate against the stored text, so a
//! term whose normalised form holds whitespace (a rare compatibility character) is also exact.
//!
//! The commit payload carries the change-feed position the index has applied, so the documents
//! and their watermark are committed together: after a crash the index resumes from its own last
//! commit, never from a position it did not reach.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentId;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{FAST, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, SegmentReader, TantivyDocument, Term};

use super::SearchError;
use crate::store::SearchMark;

/// Changes whenever the schema or the n-gram rules change: an index of another version is
/// rebuilt from the store.
const INDEX_VERSION: u32 = 1;
const GRAMS: &str = "zone_grams";
/// The writer's memory, split between its threads: bounded, and enough for large segments.
const WRITER_MEMORY: usize = 64 << 20;
const WRITER_THREADS: usize = 2;

/// What the index has applied, kept in each commit's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub version: u32,
    /// The store the documents came from (`SearchStore::store_identity`).
    #[serde(default)]
    pub store: String,
    /// Every feed row up to here is in the index.
    pub mark: SearchMark,
    /// The largest record id ever applied: a row past it cannot have a document to replace.
    pub max_record_id: i64,
}

/// One message as the index takes it.
pub struct IndexDoc<'a> {
    pub record_id: i64,
    pub corp_id: &'a str,
    pub msgtime: i64,
    pub msgtype: &'a str,
    pub parties: Vec<&'a str>,
    pub roomid: &'a str,
    /// Normalised searchable text.
    pub text: String,
}

/// What to look for: normalised terms and exact filters.
pub struct CandidateQuery<'a> {
    pub corp_id: &'a str,
    pub terms: &'a [String],
    pub userid: Option<&'a str>,
    pub roomid: Option<&'a str>,
    pub msgtype: Option<&'a str>,
    /// Inclusive, milliseconds.
    pub msgtime_range: (i64, i64),
    /// Keyset: only documents strictly older than this `(msgtime, record_id)`.
    pub before: Option<(i64, i64)>,
    pub limit: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    record_id: tantivy::schema::Field,
    corp: tantivy::schema::Field,
    msgtime: tantivy::schema::Field,
    msgtype: tantivy::schema::Field,
    party: tantivy::schema::Field,
    roomid: tantivy::schema::Field,
    grams: tantivy::schema::Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let grams = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(GRAMS).set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        record_id: builder.add_i64_field("record_id", INDEXED | FAST),
        corp: builder.add_text_field("corp", STRING),
        msgtime: builder.add_i64_field("msgtime", FAST),
        msgtype: builder.add_text_field("msgtype", STRING),
        party: builder.add_text_field("party", STRING),
        roomid: builder.add_text_field("roomid", STRING),
        grams: builder.add_text_field("grams", grams),
    };
    (builder.build(), fields)
}

pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Per segment (segments never change once written).
    block_times: Mutex<HashMap<SegmentId, Arc<BlockTimes>>>,
}

impl TextIndex {
    /// Opens the index in `path`, creating it when there is none. An index of another version
    /// (or one that cannot be opened) is removed and created empty: the store rebuilds it.
    /// To only read (`write` false), the index must exist and be of this version.
    pub fn open(path: &Path, write: bool) -> Result<TextIndex, SearchError> {
        let (schema, fields) = schema();
        let index = match open_existing(path) {
            Some(index) if index.schema() == schema && applied_in(&index).version == INDEX_VERSION => index,
            _ if !write => return Err(SearchError::Missing(path.to_path_buf())),
            existing => {
                std::fs::create_dir_all(path).map_err(|source| SearchError::Io { path: path.to_path_buf(), source })?;
                if existing.is_some() || path.join("meta.json").exists() {
                    tracing::warn!(path = %path.display(), "the search index is of another version; rebuilding it");
                    let io = |source| SearchError::Io { path: path.to_path_buf(), source };
                    std::fs::remove_dir_all(path).map_err(io)?;
                    std::fs::create_dir_all(path).map_err(io)?;
                }
                Index::create_in_dir(path, schema)?
            }
        };
        index.tokenizers().register(GRAMS, TextAnalyzer::from(GramTokenizer::default()));
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(TextIndex { index, reader, fields, block_times: Mutex::new(HashMap::new()) })
    }

    /// What the last commit applied (nothing, for a new index).
    pub fn applied(&self) -> Result<Applied, SearchError> {
        self.index.load_metas()?;
        Ok(applied_in(&self.index))
    }

    /// The writer; only one process holds it at a time.
    pub fn writer(&self) -> Result<TextWriter, SearchError> {
        let writer = match self.index.writer_with_num_threads(WRITER_THREADS, WRITER_MEMORY) {
            Ok(writer) => writer,
            Err(tantivy::TantivyError::LockFailure(..)) => return Err(SearchError::InUse),
            Err(error) => return Err(error.into()),
        };
        Ok(TextWriter {
            writer,
            fields: self.fields,
            applied: self.applied()?,
            pending: 0,
            last_commit: std::time::Instant::now(),
        })
    }

    /// Sees the latest commit (of this process or another).
    pub fn reload(&self) -> Result<(), SearchError> {
        Ok(self.reader.reload()?)
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes the index's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, SearchError> {
        let space = self.reader.searcher().space_usage().map_err(|error| SearchError::Index(error.to_string()))?;
        Ok(space.total().get_bytes())
    }

    /// The newest `limit` documents that may match `query`, as `(msgtime, record_id)`, newest
    /// first. Exact for ordinary terms; the caller verifies.
    pub fn candidates(&self, query: &CandidateQuery<'_>) -> Result<Vec<(i64, i64)>, SearchError> {
        let fields = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, exact(fields.corp, query.corp_id))];
        for term in query.terms {
            for piece in term.split_whitespace() {
                clauses.push((Occur::Must, gram_query(fields.grams, piece)));
            }
        }
        if let Some(userid) = query.userid {
            clauses.push((Occur::Must, exact(fields.party, userid)));
        }
        if let Some(roomid) = query.roomid {
            clauses.push((Occur::Must, exact(fields.roomid, roomid)));
        }
        if let Some(msgtype) = query.msgtype {
            clauses.push((Occur::Must, exact(fields.msgtype, msgtype)));
        }
        self.newest(&BooleanQuery::new(clauses), query.msgtime_range, query.before, query.limit)
    }
}

/// The payload of the index's last commit; a new index has applied nothing. A payload that does
/// not parse reads as version 0, so the index is rebuilt.
fn applied_in(index: &Index) -> Applied {
    let payload = index.load_metas().ok().and_then(|metas| metas.payload);
    match payload.as_deref().map(serde_json::from_str::<Applied>) {
        None => Applied { version: INDEX_VERSION, ..Applied::default() },
        Some(Ok(applied)) => applied,
        Some(Err(_)) => Applied::default(),
    }
}

fn open_existing(path: &Path) -> Option<Index> {
    let directory = MmapDirectory::open(path).ok()?;
    if !Index::exists(&directory).ok()? {
        return None;
    }
    Index::open(directory).ok()
}

fn exact(field: tantivy::schema::Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
}

/// A piece of a term (no whitespace) as the n-grams that find it.
fn gram_query(field: tantivy::schema::Field, piece: &str) -> Box<dyn Query> {
    let chars: Vec<char> = piece.chars().collect();
    let bigram = |at: usize| Term::from_field_text(field, &chars[at..at + 2].iter().collect::<String>());
    match chars.len() {
        1 => Box::new(TermQuery::new(Term::from_field_text(field, piece), IndexRecordOption::Basic)),
        2 => Box::new(TermQuery::new(bigram(0), IndexRecordOption::Basic)),
        n => {
            let mut offsets: Vec<usize> = (0..n - 1).step_by(2).collect();
            if offsets.last() != Some(&(n - 2)) {
                offsets.push(n - 2);
            }
            Box::new(PhraseQuery::new_with_offset(offsets.into_iter().map(|at| (at, bigram(at))).collect()))
        }
    }
}

/// The index's writer, with what it has applied.
pub struct TextWriter {
    writer: IndexWriter,
    fields: Fields,
    applied: Applied,
    /// Rows applied since the last commit.
    pending: usize,
    last_commit: std::time::Instant,
}

impl TextWriter {
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// Makes this index `store`'s: an index built from another store is emptied first.
    /// Takes effect at the next commit.
    pub fn adopt(&mut self, store: &str) -> Result<bool, SearchError> {
        if self.applied.store == store {
            return Ok(false);
        }
        let foreign = self.applied.mark != SearchMark::default();
        if foreign {
            self.clear()?;
        }
        self.applied.store = store.to_owned();
        self.pending += 1;
        Ok(foreign)
    }

    /// Rows applied and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn since_commit(&self) -> std::time::Duration {
        self.last_commit.elapsed()
    }

    /// Applies one feed row: the record's old document (if it can have one) goes, `doc` (if any)
    /// comes. Takes effect at the next [`TextWriter::commit`].
    pub fn apply(&mut self, mark: SearchMark, doc: Option<IndexDoc<'_>>) -> Result<(), SearchError> {
        if mark.record_id <= self.applied.max_record_id {
            self.writer.delete_term(Term::from_field_i64(self.fields.record_id, mark.record_id));
        }
        if let Some(doc) = doc {
            let fields = self.fields;
            let mut document = TantivyDocument::new();
            document.add_i64(fields.record_id, doc.record_id);
            document.add_text(fields.corp, doc.corp_id);
            document.add_i64(fields.msgtime, doc.msgtime);
            document.add_text(fields.msgtype, doc.msgtype);
            for party in doc.parties {
                document.add_text(fields.party, party);
            }
            document.add_text(fields.roomid, doc.roomid);
            document.add_text(fields.grams, &doc.text);
            self.writer.add_document(document)?;
        }
        self.applied.mark = mark;
        self.pending += 1;
        self.applied.max_record_id = self.applied.max_record_id.max(mark.record_id);
        Ok(())
    }

    /// Forgets every document (a rebuild); takes effect at the next commit.
    pub fn clear(&mut self) -> Result<(), SearchError> {
        self.writer.delete_all_documents()?;
        self.applied =
            Applied { version: INDEX_VERSION, store: std::mem::take(&mut self.applied.store), ..Applied::default() };
        self.pending += 1;
        Ok(())
    }

    /// Makes every applied row durable and visible, with the feed position in the same commit.
    pub fn commit(&mut self) -> Result<SearchMark, SearchError> {
        let payload = serde_json::to_string(&self.applied).expect("a plain struct serialises");
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.pending = 0;
        self.last_commit = std::time::Instant::now();
        Ok(self.applied.mark)
    }

    /// Waits for background merges, so the index is compact (after a rebuild).
    pub fn finish_merges(self) -> Result<(), SearchError> {
        Ok(self.writer.wait_merging_threads()?)
    }
}

/// Unigrams and bigrams of the characters, positioned by character, none with whitespace.
#[derive(Clone, Default)]
struct GramTokenizer {
    chars: Vec<(usize, char)>,
    token: Token,
}

impl Tokenizer for GramTokenizer {
    type TokenStream<'a> = GramStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> GramStream<'a> {
        self.chars.clear();
        self.chars.extend(text.char_indices());
        self.token.reset();
        GramStream { text, chars: &self.chars, at: 0, bigram: false, token: &mut self.token }
    }
}

struct GramStream<'a> {
    text: &'a str,
    chars: &'a [(usize, char)],
    /// The character position of the next token.
    at: usize,
    /// Whether the next token is the bigram at `at` (else its unigram).
    bigram: bool,
    token: &'a mut Token,
}

impl TokenStream for GramStream<'_> {
    fn advance(&mut self) -> bool {
        while self.at < self.chars.len() {
            let (start, first) = self.chars[self.at];
            let position = self.at;
            let width = if self.bigram {
                self.bigram = false;
                self.at += 1;
                match self.chars.get(position + 1) {
                    Some(&(_, second)) if !first.is_whitespace() && !second.is_whitespace() => 2,
                    _ => continue,
                }
            } else {
                self.bigram = true;
                if first.is_whitespace() {
                    continue;
                }
                1
            };
            let end = self.chars.get(position + width).map_or(self.text.len(), |&(at, _)| at);
            self.token.offset_from = start;
            self.token.offset_to = end;
            self.token.position = position;
            self.token.position_length = 1;
            self.token.text.clear();
            self.token.text.push_str(&self.text[start..end]);
            return true;
        }
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// Documents per block of the newest-first scan.
const BLOCK: u32 = 1024;
/// Blocks scanned by the first batch (later batches double).
const FIRST_BATCH: usize = 4;

/// The msgtime range of each block of a segment's documents: what lets a search read the newest
/// blocks first and stop as soon as no unread block can hold a newer hit.
struct BlockTimes {
    /// `(min, max)` msgtime per block.
    ranges: Vec<(i64, i64)>,
}

impl BlockTimes {
    fn of(segment: &SegmentReader) -> Result<BlockTimes, SearchError> {
        let msgtime = segment.fast_fields().i64("msgtime")?;
        let ranges = (0..segment.max_doc())
            .step_by(BLOCK as usize)
            .map(|start| {
                let end = (start + BLOCK).min(segment.max_doc());
                (start..end)
                    .filter_map(|doc| msgtime.first(doc))
                    .fold((i64::MAX, i64::MIN), |(low, high), time| (low.min(time), high.max(time)))
            })
            .collect();
        Ok(BlockTimes { ranges })
    }
}

/// The best `limit` keys so far, newest first once sorted.
struct TopKeys {
    limit: usize,
    /// Smallest on top.
    best: BinaryHeap<Reverse<(i64, i64)>>,
}

impl TopKeys {
    fn offer(&mut self, key: (i64, i64)) {
        if self.best.len() < self.limit {
            self.best.push(Reverse(key));
        } else if self.best.peek().is_some_and(|Reverse(worst)| key > *worst) {
            self.best.pop();
            self.best.push(Reverse(key));
        }
    }

    /// Whether a block whose newest message is at `max` can still add a key.
    fn wants(&self, max: i64) -> bool {
        self.best.len() < self.limit || self.best.peek().is_some_and(|Reverse(worst)| max >= worst.0)
    }

    fn into_sorted(self) -> Vec<(i64, i64)> {
        let mut keys: Vec<(i64, i64)> = self.best.into_iter().map(|Reverse(key)| key).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys
    }
}

impl TextIndex {
    /// The newest `limit` matches of `query` within `range` and before `before`: blocks of every
    /// segment in order of their newest message, in batches that double, until no unread block
    /// can hold a key newer than the `limit`-th best. Exact, whatever the documents' order.
    fn newest(
        &self,
        query: &dyn Query,
        range: (i64, i64),
        before: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, SearchError> {
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let high = before.map_or(range.1, |before| before.0.min(range.1));
        let mut blocks: Vec<(i64, usize, u32)> = Vec::new();
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let times = self.block_times(segment)?;
            for (block, &(low, max)) in times.ranges.iter().enumerate() {
                if max >= range.0 && low <= high {
                    blocks.push((max, ordinal, block as u32));
                }
            }
        }
        blocks.sort_unstable_by_key(|block| Reverse(block.0));
        let mut top = TopKeys { limit, best: BinaryHeap::with_capacity(limit + 1) };
        let (mut next, mut batch_size) = (0, FIRST_BATCH);
        while next < blocks.len() && limit > 0 && top.wants(blocks[next].0) {
            let end = (next + batch_size).min(blocks.len());
            let mut batch: Vec<(usize, u32)> =
                blocks[next..end].iter().filter(|block| top.wants(block.0)).map(|&(_, s, b)| (s, b)).collect();
            batch.sort_unstable();
            for group in batch.chunk_by(|a, b| a.0 == b.0) {
                let segment = &searcher.segment_readers()[group[0].0];
                let blocks = group.iter().map(|&(_, block)| block);
                scan_blocks(weight.as_ref(), segment, blocks, (range.0, range.1), before, &mut top)?;
            }
            next = end;
            batch_size *= 2;
        }
        Ok(top.into_sorted())
    }

    fn block_times(&self, segment: &SegmentReader) -> Result<Arc<BlockTimes>, SearchError> {
        let id = segment.segment_id();
        let mut cache = self.block_times.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(times) = cache.get(&id) {
            return Ok(Arc::clone(times));
        }
        let times = Arc::new(BlockTimes::of(segment)?);
        if cache.len() > 256 {
            // Segments merged away leave their entries behind: start over now and then.
            cache.clear();
        }
        cache.insert(id, Arc::clone(&times));
        Ok(times)
    }
}

/// Offers every live match in `blocks` (ascending) of `segment` to `top`.
fn scan_blocks(
    weight: &dyn tantivy::query::Weight,
    segment: &SegmentReader,
    blocks: impl Iterator<Item = u32>,
    range: (i64, i64),
    before: Option<(i64, i64)>,
    top: &mut TopKeys,
) -> Result<(), SearchError> {
    let fast = segment.fast_fields();
    let (msgtime, record_id): (Column<i64>, Column<i64>) = (fast.i64("msgtime")?, fast.i64("record_id")?);
    let alive = segment.alive_bitset();
    let mut scorer = weight.scorer(segment, 1.0)?;
    for block in blocks {
        let (start, end) = (block * BLOCK, ((block + 1) * BLOCK).min(segment.max_doc()));
        let mut doc = scorer.doc();
        if doc < start {
            doc = scorer.seek(start);
        }
        while doc < end {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                if let (Some(time), Some(id)) = (msgtime.first(doc), record_id.first(doc)) {
                    let key = (time, id);
                    if time >= range.0 && time <= range.1 && before.is_none_or(|before| key < before) {
                        top.offer(key);
                    }
                }
            }
            doc = scorer.advance();
        }
    }
    Ok(())
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::Index(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(usize, String)> {
        let mut tokenizer = GramTokenizer::default();
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push((stream.token().position, stream.token().text.clone()));
        }
        out
    }

    #[test]
    fn grams_are_unigrams_and_bigrams_by_character_position_without_whitespace() {
        let expected: Vec<(usize, String)> =
            [(0, "退"), (0, "退款"), (1, "款"), (3, "a"), (3, "ab"), (4, "b")].map(|(p, t)| (p, t.to_owned())).to_vec();
        assert_eq!(tokens("退款 ab"), expected);
        assert_eq!(tokens(""), vec![]);
        assert_eq!(tokens("  "), vec![]);
    }
}
