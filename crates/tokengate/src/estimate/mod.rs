//! Token estimates for a request before it is sent.
