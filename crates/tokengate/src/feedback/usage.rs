//! Usage read from providers' JSON replies.
