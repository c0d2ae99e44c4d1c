//! The finance worker process (`wecom-zone finance-worker --library PATH`): loads the SDK and
//! answers the service's requests on stdin/stdout, one at a time, until stdin closes.
//!
//! Whatever the SDK does to this process (abort, segfault, hang) the service sees as a dead or
//! silent pipe, and replaces the worker. Nothing here logs content or secrets.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use super::ffi::{CorpSdk, SdkLibrary};
use super::protocol::{Request, Response, read_frame, write_decrypted, write_frame};

/// Runs the worker; returns the process's exit code.
pub fn run(library_path: &Path) -> i32 {
    die_with_parent();
    let Some(output) = take_stdout() else {
        eprintln!("finance-worker: cannot set up the protocol pipe");
        return 1;
    };
    let mut output = BufWriter::new(output);
    let mut input = BufReader::new(std::io::stdin().lock());
    let library = match SdkLibrary::load(library_path) {
        Ok(library) => library,
        Err(error) => {
            let _ = write_frame(&mut output, &Response::Refused { reason: error.to_string() });
            return 1;
        }
    };
    if write_frame(&mut output, &Response::Ready).is_err() {
        return 1;
    }
    let mut corps: HashMap<String, CorpSdk<'_>> = HashMap::new();
    loop {
        let request: Request = match read_frame(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return 0, // the service closed the pipe: done
            Err(error) => {
                eprintln!("finance-worker: unreadable request: {error}");
                return 1;
            }
        };
        if answer(&library, &mut corps, request, &mut output).is_err() {
            return 1; // the service went away mid-answer
        }
    }
}

fn answer<'a, W: Write>(
    library: &'a SdkLibrary,
    corps: &mut HashMap<String, CorpSdk<'a>>,
    request: Request,
    output: &mut W,
) -> Result<(), super::protocol::ProtocolError> {
    let refused = |reason: &str| Response::Refused { reason: reason.to_owned() };
    match request {
        Request::Init { corp_id, secret } => {
            corps.remove(&corp_id); // DestroySdk of an earlier handle
            let response = match library.open(&corp_id, &secret) {
                Ok(Ok(sdk)) => {
                    corps.insert(corp_id, sdk);
                    Response::Inited { rc: 0 }
                }
                Ok(Err(rc)) => Response::Inited { rc },
                Err(error) => refused(&error.to_string()),
            };
            write_frame(output, &response)
        }
        Request::GetChatData { corp_id, seq, limit, proxy, passwd, timeout_s } => {
            let response = match corps.get(&corp_id) {
                None => refused("corp not initialised"),
                Some(sdk) => match sdk.get_chat_data(seq, limit, &proxy, &passwd, timeout_s) {
                    Ok(Ok(data)) => Response::ChatData { rc: 0, data },
                    Ok(Err(rc)) => Response::ChatData { rc, data: Vec::new() },
                    Err(error) => refused(&error.to_string()),
                },
            };
            write_frame(output, &response)
        }
        Request::Decrypt { items } => {
            // One answer per item, each flushed before the next call: if the SDK kills this
            // process, the service knows exactly which item it died on.
            for item in items {
                match library.decrypt_data(&item.key, &item.encrypt_chat_msg) {
                    Ok(Ok(plaintext)) => write_decrypted(output, 0, &plaintext)?,
                    Ok(Err(rc)) => write_decrypted(output, rc, &[])?,
                    // A NUL inside the key or ciphertext: the SDK cannot even be asked.
                    Err(_) => write_decrypted(output, NUL_IN_INPUT, &[])?,
                }
            }
            write_frame(output, &Response::Done)
        }
        Request::GetMediaData { corp_id, sdkfileid, indexbuf, proxy, passwd, timeout_s } => {
            let response = match corps.get(&corp_id) {
                None => refused("corp not initialised"),
                Some(sdk) => match sdk.get_media_data(&indexbuf, &sdkfileid, &proxy, &passwd, timeout_s) {
                    Ok(Ok(chunk)) => Response::Media {
                        rc: 0,
                        data: chunk.data,
                        outindexbuf: chunk.outindexbuf,
                        finished: chunk.finished,
                    },
                    Ok(Err(rc)) => {
                        Response::Media { rc, data: Vec::new(), outindexbuf: String::new(), finished: false }
                    }
                    Err(error) => refused(&error.to_string()),
                },
            };
            write_frame(output, &response)
        }
        Request::LiveAllocations => {
            write_frame(output, &Response::LiveAllocations { live: library.live_allocations() })
        }
    }
}

/// The return code given for an item the SDK cannot be asked about (a NUL byte inside it). It is
/// the SDK's own "bad parameters".
pub const NUL_IN_INPUT: i32 = 10000;

/// The protocol gets the original stdout; fd 1 becomes stderr, so anything the SDK prints goes to
/// the log stream instead of corrupting the frames.
fn take_stdout() -> Option<File> {
    // SAFETY: plain descriptor calls on this process's own fds 1 and 2; the duplicate is owned by
    // the returned File alone.
    unsafe {
        let protocol = libc::dup(1);
        if protocol < 0 || libc::dup2(2, 1) < 0 {
            return None;
        }
        Some(File::from_raw_fd(protocol))
    }
}

/// Asks the kernel to kill this process when the service dies, so a hung SDK call never outlives
/// it (Linux only; elsewhere stdin's end still stops an idle worker).
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and nothing else.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}
