//! Stage contract (being written).
