//! Who may connect: token verification (the `im-token` crate, shared with the load
//! generator and the benchmarks), the HTTP authentication callback's contract, and the
//! per-address limit on failed CONNECTs.

pub mod callback;
pub mod limiter;

pub use im_token::{AuthError, TokenAuth};
