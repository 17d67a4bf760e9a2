//! pacs-edge's data plane: every per-byte loop of DICOM ingest, in plain Rust.
//!
//! The modules below know nothing of Python; `python` (feature "python") is the one
//! binding layer that exposes them as the private module `core_rs._core`.

pub mod associate;
pub mod catalog;
pub mod codec;
pub mod command;
pub mod dataset;
pub mod error;
pub mod net;
pub mod part10;
pub mod pdu;
pub mod pump;
pub mod receiver;
pub mod spool;
pub mod warm;

#[cfg(feature = "python")]
mod python;
