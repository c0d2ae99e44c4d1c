//! What the service and a finance worker say to each other over the worker's stdin and stdout:
//! frames of a little-endian u32 length and that many bytes of JSON. Byte payloads (media
//! chunks) travel as base64 strings, except the answer to each DecryptData, the one frame per
//! record: `D`, the return code (i32, little-endian) and the plaintext bytes as they are.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A frame larger than this is a broken peer: a media chunk is 512 KB and a page of 1,000 records
/// about 3 MB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the pipe failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("a frame is not the protocol's JSON: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The service's requests. Secrets appear only in `Init`; `Debug` never prints them.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `NewSdk` + `Init` for a corp (again after every respawn).
    Init {
        corp_id: String,
        secret: String,
    },
    GetChatData {
        corp_id: String,
        seq: u64,
        limit: u32,
        proxy: String,
        passwd: String,
        timeout_s: i32,
    },
    /// `DecryptData` for each item in order; answered item by item, then `Done`.
    Decrypt {
        items: Vec<DecryptItem>,
    },
    GetMediaData {
        corp_id: String,
        sdkfileid: String,
        indexbuf: String,
        proxy: String,
        passwd: String,
        timeout_s: i32,
    },
    /// The stand-in SDK's count of slices and media objects not yet freed.
    LiveAllocations,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self {
            Request::Init { .. } => "init",
            Request::GetChatData { .. } => "get_chat_data",
            Request::Decrypt { .. } => "decrypt",
            Request::GetMediaData { .. } => "get_media_data",
            Request::LiveAllocations => "live_allocations",
        };
        write!(f, "Request::{op}")
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct DecryptItem {
    /// The RSA-decrypted `encrypt_random_key`.
    pub key: String,
    pub encrypt_chat_msg: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    /// The library loaded; the worker takes requests.
    Ready,
    /// The worker cannot do what was asked (the library did not load, an unknown corp, a NUL in
    /// an argument). Says nothing of secrets or content.
    Refused {
        reason: String,
    },
    /// `rc` of Init (0 = ok).
    Inited {
        rc: i32,
    },
    ChatData {
        rc: i32,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// One item of a `Decrypt`, in order.
    Decrypted {
        rc: i32,
        #[serde(with = "base64_bytes")]
        plaintext: Vec<u8>,
    },
    /// Every item of a `Decrypt` was answered.
    Done,
    Media {
        rc: i32,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        outindexbuf: String,
        finished: bool,
    },
    LiveAllocations {
        live: Option<i64>,
    },
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Ready => f.write_str("Ready"),
            Response::Refused { reason } => write!(f, "Refused({reason})"),
            Response::Inited { rc } => write!(f, "Inited({rc})"),
            Response::ChatData { rc, data } => write!(f, "ChatData(rc {rc}, {} bytes)", data.len()),
            Response::Decrypted { rc, plaintext } => write!(f, "Decrypted(rc {rc}, {} bytes)", plaintext.len()),
            Response::Done => f.write_str("Done"),
            Response::Media { rc, data, finished, .. } => {
                write!(f, "Media(rc {rc}, {} bytes, finished {finished})", data.len())
            }
            Response::LiveAllocations { live } => write!(f, "LiveAllocations({live:?})"),
        }
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

fn checked_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok(len)
}

/// The first byte of a raw `Decrypted` frame (a JSON frame starts with `{`).
const DECRYPTED_TAG: u8 = b'D';

/// Writes one DecryptData answer as a raw frame and flushes it (the worker's side).
pub fn write_decrypted<W: Write>(writer: &mut W, rc: i32, plaintext: &[u8]) -> Result<(), ProtocolError> {
    let len = 5 + plaintext.len();
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(len));
    }
    writer.write_all(&(len as u32).to_le_bytes())?;
    writer.write_all(&[DECRYPTED_TAG])?;
    writer.write_all(&rc.to_le_bytes())?;
    writer.write_all(plaintext)?;
    writer.flush()?;
    Ok(())
}

/// Writes one frame and flushes it (the worker's side).
pub fn write_frame<W: Write, T: Serialize>(writer: &mut W, message: &T) -> Result<(), ProtocolError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of the stream (the worker's side).
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(reader: &mut R) -> Result<Option<T>, ProtocolError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let mut body = vec![0u8; checked_len(header)?];
    reader.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Writes one frame (the service's side).
pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(writer: &mut W, message: &T) -> Result<(), ProtocolError> {
    writer.write_all(&encode(message)?).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one answer (the service's side); the end of the stream is an error here: the worker
/// died.
pub async fn receive<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Response, ProtocolError> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await?;
    let mut body = vec![0u8; checked_len(header)?];
    reader.read_exact(&mut body).await?;
    if body.first() == Some(&DECRYPTED_TAG) {
        let Some(rc) = body.get(1..5).and_then(|rc| <[u8; 4]>::try_from(rc).ok()) else {
            return Err(ProtocolError::TooLarge(body.len())); // too short to be one
        };
        body.drain(..5);
        return Ok(Response::Decrypted { rc: i32::from_le_bytes(rc), plaintext: body });
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bytes_survive() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &Response::Decrypted { rc: 0, plaintext: vec![0, 1, 255, b'{'] }).unwrap();
        write_frame(&mut pipe, &Response::Done).unwrap();
        let mut reader = pipe.as_slice();
        match read_frame::<_, Response>(&mut reader).unwrap() {
            Some(Response::Decrypted { rc: 0, plaintext }) => assert_eq!(plaintext, vec![0, 1, 255, b'{']),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(read_frame::<_, Response>(&mut reader).unwrap(), Some(Response::Done)));
        assert!(read_frame::<_, Response>(&mut reader).unwrap().is_none(), "a clean end of the stream");
    }

    #[tokio::test]
    async fn raw_decrypted_frames_and_json_frames_read_back_alike() {
        let mut pipe = Vec::new();
        write_decrypted(&mut pipe, 0, b"{\"msgid\":\"m\"}\x00\xff").unwrap();
        write_decrypted(&mut pipe, 10006, b"").unwrap();
        write_frame(&mut pipe, &Response::Done).unwrap();
        let mut reader = pipe.as_slice();
        match receive(&mut reader).await.unwrap() {
            Response::Decrypted { rc: 0, plaintext } => assert_eq!(plaintext, b"{\"msgid\":\"m\"}\x00\xff"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(receive(&mut reader).await.unwrap(), Response::Decrypted { rc: 10006, .. }));
        assert!(matches!(receive(&mut reader).await.unwrap(), Response::Done));
        assert!(receive(&mut reader).await.is_err(), "the end of the stream: the worker died");
    }

    #[test]
    fn an_oversized_or_broken_frame_is_an_error() {
        let mut reader: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame::<_, Response>(&mut reader), Err(ProtocolError::TooLarge(_))));
        let mut pipe = 3u32.to_le_bytes().to_vec();
        pipe.extend_from_slice(b"{x}");
        assert!(matches!(read_frame::<_, Response>(&mut pipe.as_slice()), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let request = Request::Init { corp_id: "ww1".into(), secret: "s3cr3t-value".into() };
        assert!(!format!("{request:?}").contains("s3cr3t"));
    }
}
