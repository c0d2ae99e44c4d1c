//! One integration binary: crypto vectors and properties, the HTTP surface, the command line.

mod abilities;
mod api;
mod archive;
mod cli;
mod crash;
mod crypto;
mod finance;
mod helpers;
mod ingest;
mod layering;
mod rootfs;
mod rsa;
mod search;
