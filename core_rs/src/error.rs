//! The one error type of the data plane. The binding layer maps each variant to
//! one Python exception class (see `python.rs`); nothing else crosses the boundary.

use std::fmt;
use std::io;

/// A-ABORT reasons for the service-provider source (PS3.8 9.3.8, Table 9-26).
pub mod abort_reason {
    pub const NOT_SPECIFIED: u8 = 0;
    pub const UNRECOGNIZED_PDU: u8 = 1;
    pub const UNEXPECTED_PDU: u8 = 2;
    pub const UNRECOGNIZED_PDU_PARAMETER: u8 = 4;
    pub const UNEXPECTED_PDU_PARAMETER: u8 = 5;
    pub const INVALID_PDU_PARAMETER: u8 = 6;
}

#[derive(Debug)]
pub enum CoreError {
    /// The peer broke PS3.8 framing: the association must be aborted with `reason`.
    Protocol { reason: u8, message: String },
    /// A DIMSE command set that cannot be decoded (PS3.7 6.3).
    Command(String),
    /// A dataset whose encoding cannot be walked (PS3.5 7).
    Dataset(String),
    /// The disk is full: C-STORE answers 0xA700 "out of resources".
    NoSpace(io::Error),
    /// Any other I/O failure of an object body.
    Io(io::Error),
    /// A pixel codec refused, failed, or did not round-trip (`codec`).
    Codec(crate::codec::CodecError),
    /// An index record is not what the catalog writes (`catalog`).
    Record(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    pub fn protocol(reason: u8, message: impl Into<String>) -> Self {
        Self::Protocol {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol { message, .. } => write!(f, "protocol error: {message}"),
            Self::Command(m) => write!(f, "invalid command set: {m}"),
            Self::Dataset(m) => write!(f, "invalid dataset: {m}"),
            Self::NoSpace(e) => write!(f, "no space left on device: {e}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Codec(e) => write!(f, "{e}"),
            Self::Record(m) => write!(f, "unreadable index record: {m}"),
        }
    }
}

impl std::error::Error for CoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoSpace(e) | Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::codec::CodecError> for CoreError {
    fn from(e: crate::codec::CodecError) -> Self {
        Self::Codec(e)
    }
}

impl From<io::Error> for CoreError {
    fn from(e: io::Error) -> Self {
        // ENOSPC and EDQUOT both mean "this disk cannot take the object".
        if matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == io::ErrorKind::StorageFull {
            Self::NoSpace(e)
        } else {
            Self::Io(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space() {
        let e: CoreError = io::Error::from_raw_os_error(28).into();
        assert!(matches!(e, CoreError::NoSpace(_)));
        let e: CoreError = io::Error::from_raw_os_error(5).into();
        assert!(matches!(e, CoreError::Io(_)));
    }
}
