//! The official finance SDK's C API (`WeWorkFinanceSdk_C.h`), loaded at run time.
//!
//! Only the worker process (`worker.rs`) uses this: the library aborts its host on bad input, so
//! it never runs inside the service. Every `Slice_t` and `MediaData_t` is owned by a guard that
//! frees it on every path; each corp's `WeWorkFinanceSdk_t` is destroyed when its handle drops.

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_uint, c_ulonglong, c_void};
use std::path::Path;

use libloading::Library;

/// `Slice_t` of the header.
#[repr(C)]
struct Slice {
    buf: *mut c_char,
    len: c_int,
}

/// `MediaData_t` of the header.
#[repr(C)]
struct MediaData {
    outindexbuf: *mut c_char,
    out_len: c_int,
    data: *mut c_char,
    data_len: c_int,
    is_finish: c_int,
}

type NewSdkFn = unsafe extern "C" fn() -> *mut c_void;
type InitFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type DestroySdkFn = unsafe extern "C" fn(*mut c_void);
type GetChatDataFn =
    unsafe extern "C" fn(*mut c_void, c_ulonglong, c_uint, *const c_char, *const c_char, c_int, *mut Slice) -> c_int;
type DecryptDataFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut Slice) -> c_int;
type GetMediaDataFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    c_int,
    *mut MediaData,
) -> c_int;
type NewSliceFn = unsafe extern "C" fn() -> *mut Slice;
type FreeSliceFn = unsafe extern "C" fn(*mut Slice);
type NewMediaDataFn = unsafe extern "C" fn() -> *mut MediaData;
type FreeMediaDataFn = unsafe extern "C" fn(*mut MediaData);
type LiveAllocationsFn = unsafe extern "C" fn() -> c_long;

#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    #[error("cannot load the finance SDK library: {0}")]
    Load(String),
    #[error("the finance SDK library has no symbol `{0}`")]
    MissingSymbol(&'static str),
    #[error("an argument contains a NUL byte")]
    NulInArgument,
    #[error("the SDK returned no object")]
    NullObject,
}

/// The loaded library and its entry points. The function pointers stay valid as long as
/// `_library` is loaded, which is as long as this value lives.
pub struct SdkLibrary {
    new_sdk: NewSdkFn,
    init: InitFn,
    destroy_sdk: DestroySdkFn,
    get_chat_data: GetChatDataFn,
    decrypt_data: DecryptDataFn,
    get_media_data: GetMediaDataFn,
    new_slice: NewSliceFn,
    free_slice: FreeSliceFn,
    new_media_data: NewMediaDataFn,
    free_media_data: FreeMediaDataFn,
    /// Only the stand-in SDK has it: how many slices and media objects are not yet freed.
    live_allocations: Option<LiveAllocationsFn>,
    _library: Library,
}

/// One chunk of a media file, as `GetMediaData` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChunk {
    pub data: Vec<u8>,
    pub outindexbuf: String,
    pub finished: bool,
}

impl SdkLibrary {
    pub fn load(path: &Path) -> Result<SdkLibrary, FfiError> {
        // SAFETY: loading runs the library's initialisers; that is the point of the worker
        // process, which exists to absorb whatever this library does.
        let library = unsafe { Library::new(path) }.map_err(|error| FfiError::Load(error.to_string()))?;
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the types above are the header's; the pointer is copied out and used
                // only while `library` (moved into the result) stays loaded.
                *unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|_| FfiError::MissingSymbol($name))?
            };
        }
        Ok(SdkLibrary {
            new_sdk: symbol!("NewSdk"),
            init: symbol!("Init"),
            destroy_sdk: symbol!("DestroySdk"),
            get_chat_data: symbol!("GetChatData"),
            decrypt_data: symbol!("DecryptData"),
            get_media_data: symbol!("GetMediaData"),
            new_slice: symbol!("NewSlice"),
            free_slice: symbol!("FreeSlice"),
            new_media_data: symbol!("NewMediaData"),
            free_media_data: symbol!("FreeMediaData"),
            // SAFETY: as above; the stand-in's extra symbol takes nothing and returns a long.
            live_allocations: unsafe { library.get::<LiveAllocationsFn>(b"StubLiveAllocations\0") }
                .ok()
                .map(|symbol| *symbol),
            _library: library,
        })
    }

    /// `NewSdk` + `Init` for one corp. `Err(code)` is Init's return code.
    pub fn open(&self, corp_id: &str, secret: &str) -> Result<Result<CorpSdk<'_>, i32>, FfiError> {
        let corp_id = CString::new(corp_id).map_err(|_| FfiError::NulInArgument)?;
        let secret = CString::new(secret).map_err(|_| FfiError::NulInArgument)?;
        // SAFETY: NewSdk takes nothing; a null result is checked.
        let sdk = unsafe { (self.new_sdk)() };
        if sdk.is_null() {
            return Err(FfiError::NullObject);
        }
        let handle = CorpSdk { library: self, sdk };
        // SAFETY: `sdk` came from NewSdk; both strings are NUL-terminated and outlive the call.
        let rc = unsafe { (self.init)(handle.sdk, corp_id.as_ptr(), secret.as_ptr()) };
        Ok(if rc == 0 { Ok(handle) } else { Err(rc) })
    }

    /// `DecryptData(encrypt_key, encrypt_msg)`: the plaintext bytes, or the SDK's return code.
    pub fn decrypt_data(&self, encrypt_key: &str, encrypt_msg: &str) -> Result<Result<Vec<u8>, i32>, FfiError> {
        let key = CString::new(encrypt_key).map_err(|_| FfiError::NulInArgument)?;
        let message = CString::new(encrypt_msg).map_err(|_| FfiError::NulInArgument)?;
        let slice = self.slice()?;
        // SAFETY: the strings are NUL-terminated; the slice came from NewSlice and is freed by
        // its guard whatever happens next.
        let rc = unsafe { (self.decrypt_data)(key.as_ptr(), message.as_ptr(), slice.pointer) };
        Ok(if rc == 0 { Ok(slice.bytes()) } else { Err(rc) })
    }

    /// Slices and media objects the library has handed out and not had back (stand-in only).
    // `c_long` is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    pub fn live_allocations(&self) -> Option<i64> {
        // SAFETY: the stand-in's counter takes nothing.
        self.live_allocations.map(|count| i64::from(unsafe { count() }))
    }

    fn slice(&self) -> Result<SliceGuard<'_>, FfiError> {
        // SAFETY: NewSlice takes nothing; a null result is checked.
        let pointer = unsafe { (self.new_slice)() };
        if pointer.is_null() {
            return Err(FfiError::NullObject);
        }
        Ok(SliceGuard { library: self, pointer })
    }

    fn media_data(&self) -> Result<MediaGuard<'_>, FfiError> {
        // SAFETY: NewMediaData takes nothing; a null result is checked.
        let pointer = unsafe { (self.new_media_data)() };
        if pointer.is_null() {
            return Err(FfiError::NullObject);
        }
        Ok(MediaGuard { library: self, pointer })
    }
}

/// One corp's `WeWorkFinanceSdk_t`, destroyed on drop.
pub struct CorpSdk<'a> {
    library: &'a SdkLibrary,
    sdk: *mut c_void,
}

impl CorpSdk<'_> {
    /// `GetChatData`: the answer's JSON bytes, or the SDK's return code.
    pub fn get_chat_data(
        &self,
        seq: u64,
        limit: u32,
        proxy: &str,
        passwd: &str,
        timeout_s: i32,
    ) -> Result<Result<Vec<u8>, i32>, FfiError> {
        let proxy = CString::new(proxy).map_err(|_| FfiError::NulInArgument)?;
        let passwd = CString::new(passwd).map_err(|_| FfiError::NulInArgument)?;
        let slice = self.library.slice()?;
        // SAFETY: `sdk` is live (Init succeeded); strings are NUL-terminated; the slice guard
        // frees the slice.
        let rc = unsafe {
            (self.library.get_chat_data)(
                self.sdk,
                seq,
                limit,
                proxy.as_ptr(),
                passwd.as_ptr(),
                timeout_s,
                slice.pointer,
            )
        };
        Ok(if rc == 0 { Ok(slice.bytes()) } else { Err(rc) })
    }

    /// `GetMediaData`: one chunk (at most 512 KB), or the SDK's return code.
    pub fn get_media_data(
        &self,
        indexbuf: &str,
        sdkfileid: &str,
        proxy: &str,
        passwd: &str,
        timeout_s: i32,
    ) -> Result<Result<MediaChunk, i32>, FfiError> {
        let indexbuf = CString::new(indexbuf).map_err(|_| FfiError::NulInArgument)?;
        let sdkfileid = CString::new(sdkfileid).map_err(|_| FfiError::NulInArgument)?;
        let proxy = CString::new(proxy).map_err(|_| FfiError::NulInArgument)?;
        let passwd = CString::new(passwd).map_err(|_| FfiError::NulInArgument)?;
        let media = self.library.media_data()?;
        // SAFETY: as for GetChatData; the media guard frees the object.
        let rc = unsafe {
            (self.library.get_media_data)(
                self.sdk,
                indexbuf.as_ptr(),
                sdkfileid.as_ptr(),
                proxy.as_ptr(),
                passwd.as_ptr(),
                timeout_s,
                media.pointer,
            )
        };
        Ok(if rc == 0 { Ok(media.chunk()) } else { Err(rc) })
    }
}

impl Drop for CorpSdk<'_> {
    fn drop(&mut self) {
        // SAFETY: `sdk` came from NewSdk and is destroyed once.
        unsafe { (self.library.destroy_sdk)(self.sdk) }
    }
}

struct SliceGuard<'a> {
    library: &'a SdkLibrary,
    pointer: *mut Slice,
}

impl SliceGuard<'_> {
    fn bytes(&self) -> Vec<u8> {
        // SAFETY: the pointer came from NewSlice and is live; the SDK filled `buf`/`len`.
        let slice = unsafe { &*self.pointer };
        copy_out(slice.buf, slice.len)
    }
}

impl Drop for SliceGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: came from NewSlice; freed once.
        unsafe { (self.library.free_slice)(self.pointer) }
    }
}

struct MediaGuard<'a> {
    library: &'a SdkLibrary,
    pointer: *mut MediaData,
}

impl MediaGuard<'_> {
    fn chunk(&self) -> MediaChunk {
        // SAFETY: the pointer came from NewMediaData and is live; the SDK filled its fields.
        let media = unsafe { &*self.pointer };
        // Wrappers read the index as a C string (GetOutIndexBuf); the length is used when given.
        let outindexbuf = if media.out_len > 0 || media.outindexbuf.is_null() {
            copy_out(media.outindexbuf, media.out_len)
        } else {
            // SAFETY: a non-null index without a length is the SDK's NUL-terminated string.
            unsafe { CStr::from_ptr(media.outindexbuf) }.to_bytes().to_vec()
        };
        MediaChunk {
            data: copy_out(media.data, media.data_len),
            outindexbuf: String::from_utf8_lossy(trim_nul(&outindexbuf)).into_owned(),
            finished: media.is_finish == 1,
        }
    }
}

impl Drop for MediaGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: came from NewMediaData; freed once.
        unsafe { (self.library.free_media_data)(self.pointer) }
    }
}

/// Copies `len` bytes from `buf`; a null buffer or a length of zero or less is empty.
fn copy_out(buf: *const c_char, len: c_int) -> Vec<u8> {
    if buf.is_null() || len <= 0 {
        return Vec::new();
    }
    // SAFETY: the SDK says `buf` holds `len` bytes.
    unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    &bytes[..end]
}
