//! Delivery: what reaches players, after the policy gate. So far: message templates (per brand and
//! locale, with fallback and strict placeholders). The outbox, channels and feedback come next.

pub mod templates;
