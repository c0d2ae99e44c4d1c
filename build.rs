//! Builds the stand-in finance SDK (`stub-sdk/finance_sdk_stub.c`) as a shared library in
//! OUT_DIR; the simulator embeds it, so tests and `demo` can load a library with the official C ABI
//! without WeCom's. Nothing links it: it is loaded at run time, like the real one.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "stub-sdk/finance_sdk_stub.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out.join("libWeWorkFinanceSdk_stub.so");
    let compiler = cc::Build::new().opt_level(2).warnings(true).get_compiler();
    let mut command: Command = compiler.to_command();
    command.args(["-shared", "-fPIC", "-o"]).arg(&library).arg(source);
    let status = command.status().expect("a C compiler runs (the stub finance SDK is C)");
    assert!(status.success(), "compiling {source} failed");
}
