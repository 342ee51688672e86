//! The progress bar of the ISO copy: `keypack_plugin::progress`, shared with `keypack flash`
//! (one bar for both, as issue 17 asks), re-exported here for the medium's modules.

pub use keypack_plugin::progress::Progress;
