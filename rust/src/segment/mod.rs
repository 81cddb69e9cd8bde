//! Segment files (format section 5): header, compressed blocks of record-set entries, index, footer.
//!
//! Invariants: blocks hold whole entries, are contiguous from byte 32 to the index, and their offsets
//! are dense from the segment's base offset to its end offset; a segment holds at least one record.
pub mod builder;
pub mod format;
pub mod reader;
pub mod sealed;

pub use builder::{SegmentBuffer, SegmentOptions};
pub use format::{BlockLocation, SegmentFooter};
pub use reader::{decode_block, parse_segment_footer, parse_segment_index, SegmentReader};
pub use sealed::{SealedParts, SealedSegment};
