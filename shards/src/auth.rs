//! Token authentication: the `im-token` crate (shared with the load generator and the
//! benchmarks), re-exported where the core has always named it.

pub use im_token::{AuthError, TokenAuth};
