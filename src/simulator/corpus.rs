//! A synthetic but realistic chat corpus, derived from a seed: members, external contacts and
//! groups; one-to-one and group conversations; every msgtype 0..=28; ascending send times within
//! WeCom's five-day window; one secret key per message, RSA-encrypted with the public key of the
//! version in force when it was sent (keys rotate over the corpus).
//!
//! Metadata is recomputed from `(seed, index)` on every request; only the RSA ciphertexts (256
//! bytes each) are computed ahead, into a temporary file, so a corpus of millions of messages costs
//! almost no memory.

use std::fs::File;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;
use serde::Serialize;

use crate::crypto::{KeyError, PublicKeyEncryptor};

const CIPHERTEXT_LEN: usize = 256;
const MEMBERS: usize = 40;
const EXTERNALS: usize = 160;
const GROUPS: usize = 24;
/// Encrypted in chunks of this many messages (one rayon task each).
const ENCRYPT_CHUNK: usize = 512;

/// SplitMix64: tiny, fast, and good enough to make synthetic data look varied.
#[derive(Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SimParty {
    #[serde(rename = "type")]
    pub kind: i64,
    pub id: String,
}

/// What the service should end up storing for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    pub index: usize,
    pub msgid: String,
    pub sender: SimParty,
    pub receivers: Vec<SimParty>,
    pub chatid: Option<String>,
    pub send_time: i64,
    pub msgtype: i64,
    pub key_version: u32,
    pub secret_key: String,
    pub call_duration: Option<i64>,
}

#[derive(Serialize)]
struct ItemJson<'a> {
    msgid: &'a str,
    sender: &'a SimParty,
    receiver_list: &'a [SimParty],
    #[serde(skip_serializing_if = "Option::is_none")]
    chatid: Option<&'a str>,
    send_time: i64,
    msgtype: i64,
    service_encrypt_info: EncryptInfoJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_info: Option<ExtraInfoJson>,
}

#[derive(Serialize)]
struct EncryptInfoJson<'a> {
    encrypted_secret_key: &'a str,
    public_key_ver: u32,
}

#[derive(Serialize)]
struct ExtraInfoJson {
    call_duration: i64,
}

struct Group {
    chatid: String,
    participants: Vec<SimParty>,
}

pub struct Corpus {
    seed: u64,
    len: usize,
    start_time: i64,
    gap_seconds: f64,
    versions: Vec<u32>,
    members: Vec<SimParty>,
    externals: Vec<SimParty>,
    groups: Vec<Group>,
    ciphertexts: File,
}

impl Corpus {
    /// Generates the population and encrypts every message's secret key (in parallel, with the
    /// current rayon pool). `keys` are `(version, public key PEM)`, in rotation order.
    pub fn generate(seed: u64, len: usize, start_time: i64, keys: &[(u32, String)]) -> Result<Corpus, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NotAKey);
        }
        let encryptors =
            keys.iter().map(|(_, pem)| PublicKeyEncryptor::from_pem(pem)).collect::<Result<Vec<_>, _>>()?;
        let mut population = SplitMix::new(seed ^ 0x5eed);
        let members: Vec<SimParty> = (0..MEMBERS)
            .map(|n| SimParty { kind: 1, id: format!("{}{n:03}", ["zhang", "li", "wang", "chen", "liu"][n % 5]) })
            .collect();
        let externals: Vec<SimParty> = (0..EXTERNALS)
            .map(|_| SimParty {
                kind: 2,
                id: format!("wm{:016x}{:012x}", population.next_u64(), population.next_u64() >> 16),
            })
            .collect();
        let groups = (0..GROUPS)
            .map(|_| {
                let size = 3 + population.below(10);
                let mut participants: Vec<SimParty> =
                    (0..size).map(|_| members[population.below(MEMBERS)].clone()).collect();
                if population.chance(0.5) {
                    participants.push(externals[population.below(EXTERNALS)].clone());
                }
                participants.dedup();
                Group {
                    chatid: format!("wr{:016x}{:06x}", population.next_u64(), population.next_u64() >> 40),
                    participants,
                }
            })
            .collect();
        let ciphertexts = tempfile::tempfile().map_err(|_| KeyError::Generation)?;
        let corpus = Corpus {
            seed,
            len,
            start_time,
            // Spread over four days at most, one second apart at least.
            gap_seconds: (4.0 * 86_400.0 / len.max(1) as f64).clamp(0.001, 1.0),
            versions: keys.iter().map(|(version, _)| *version).collect(),
            members,
            externals,
            groups,
            ciphertexts,
        };
        corpus.encrypt_all(&encryptors)?;
        Ok(corpus)
    }

    fn encrypt_all(&self, encryptors: &[PublicKeyEncryptor]) -> Result<(), KeyError> {
        (0..self.len.div_ceil(ENCRYPT_CHUNK)).into_par_iter().try_for_each(|chunk| {
            let first = chunk * ENCRYPT_CHUNK;
            let last = (first + ENCRYPT_CHUNK).min(self.len);
            let mut buffer = Vec::with_capacity((last - first) * CIPHERTEXT_LEN);
            for index in first..last {
                let message = self.message(index);
                let encryptor = &encryptors[self.version_slot(index)];
                buffer.extend(encryptor.encrypt_raw(message.secret_key.as_bytes())?);
            }
            self.ciphertexts.write_all_at(&buffer, (first * CIPHERTEXT_LEN) as u64).map_err(|_| KeyError::Generation)
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn version_slot(&self, index: usize) -> usize {
        index * self.versions.len() / self.len.max(1)
    }

    /// Message `index`, recomputed from the seed.
    pub fn message(&self, index: usize) -> SimMessage {
        let mut rng = SplitMix::new(self.seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let send_time = self.start_time + (index as f64 * self.gap_seconds) as i64;
        let (sender, receivers, chatid) = if rng.chance(0.4) {
            let group = &self.groups[rng.below(self.groups.len())];
            let sender = group.participants[rng.below(group.participants.len())].clone();
            let receivers = group.participants.iter().filter(|party| **party != sender).cloned().collect();
            (sender, receivers, Some(group.chatid.clone()))
        } else {
            let member = self.members[rng.below(self.members.len())].clone();
            let other = if rng.chance(0.6) {
                self.externals[rng.below(self.externals.len())].clone()
            } else {
                self.members[rng.below(self.members.len())].clone()
            };
            if rng.chance(0.5) { (member, vec![other], None) } else { (other, vec![member], None) }
        };
        let msgtype = if rng.chance(0.5) { 1 } else { rng.below(29) as i64 };
        let call_duration = matches!(msgtype, 21 | 22).then(|| 5 + rng.below(1800) as i64);
        let secret_key: String = (0..32)
            .map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[rng.below(62)]))
            .collect();
        SimMessage {
            index,
            msgid: format!("{:x}{:06x}_{send_time}", rng.next_u64() >> 8, index),
            sender,
            receivers,
            chatid,
            send_time,
            msgtype,
            key_version: self.versions[self.version_slot(index)],
            secret_key,
            call_duration,
        }
    }

    /// Appends message `index` as a `sync_msg` item to `out`.
    pub fn write_item(&self, index: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let message = self.message(index);
        let mut ciphertext = [0u8; CIPHERTEXT_LEN];
        self.ciphertexts.read_exact_at(&mut ciphertext, (index * CIPHERTEXT_LEN) as u64)?;
        use base64::Engine;
        let encrypted = base64::engine::general_purpose::STANDARD.encode(ciphertext);
        let item = ItemJson {
            msgid: &message.msgid,
            sender: &message.sender,
            receiver_list: &message.receivers,
            chatid: message.chatid.as_deref(),
            send_time: message.send_time,
            msgtype: message.msgtype,
            service_encrypt_info: EncryptInfoJson {
                encrypted_secret_key: &encrypted,
                public_key_ver: message.key_version,
            },
            extra_info: message.call_duration.map(|call_duration| ExtraInfoJson { call_duration }),
        };
        serde_json::to_writer(out, &item).map_err(std::io::Error::other)
    }

    /// The members of a group chat, as `get_group_chat` reports them.
    pub fn group_members(&self, chatid: &str) -> Option<Vec<SimParty>> {
        self.groups.iter().find(|group| group.chatid == chatid).map(|group| group.participants.clone())
    }
}
