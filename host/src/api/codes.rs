//! The one table of error codes: every `code` an answer of the API may carry, with its HTTP status
//! and what it means. `ApiError::new` checks its code against it in debug builds (so a test that meets an
//! unlisted code fails), and a test checks that the README names every one.

/// (code, HTTP status, meaning).
pub const CODES: &[(&str, u16, &str)] = &[
    // The request itself.
    ("bad_request", 400, "a body the HTTP layer could not read (e.g. a malformed multipart form)"),
    ("malformed_json", 400, "the body is not JSON"),
    ("invalid_query", 400, "the query string does not fit the endpoint"),
    ("invalid_path", 400, "the path does not fit the endpoint (e.g. not UTF-8)"),
    ("brand_required", 400, "the key covers several brands: name one with ?brand_id="),
    ("idempotency_key_required", 400, "POST /v1/messaging/send needs X-Idempotency-Key"),
    ("idempotency_key_invalid", 400, "X-Idempotency-Key is not 1 to 128 visible ASCII characters"),
    ("bad_upload", 400, "a plugin upload without its `manifest` and `component` parts"),
    ("unauthorized", 401, "no key, or an unknown or revoked one"),
    ("stale_webhook", 401, "a provider webhook signed more than five minutes away from now"),
    ("forbidden", 403, "the key's role does not serve this endpoint (checked before the body is read)"),
    ("brand_not_allowed", 403, "the key may not act for this brand"),
    ("four_eyes", 403, "approved or activated by the person who uploaded, proposed or wrote it"),
    ("key_revoked", 403, "the signing key was revoked"),
    ("not_found", 404, "no such thing, or another brand's"),
    ("method_not_allowed", 405, "the endpoint does not take this method (see Allow)"),
    ("request_timeout", 408, "the request took too long to arrive"),
    ("event_id_conflict", 409, "an event_id reused for a different event"),
    ("idempotency_conflict", 409, "an X-Idempotency-Key reused for a different send"),
    ("version_exists", 409, "a plugin name and version taken by other bytes"),
    ("pack_version_exists", 409, "a pack version that exists already (a change is a new version)"),
    ("already_approved", 409, "a pack version approved already"),
    ("conflict", 409, "the change conflicts with the state (e.g. nothing to roll back to)"),
    ("segment_exists", 409, "the brand has a segment of that name already"),
    ("trigger_exists", 409, "the brand has a trigger of that name already"),
    ("journey_exists", 409, "the brand has a journey of that name already"),
    ("offer_template_exists", 409, "the brand has an offer template of that name already"),
    (
        "offer_pending_approval",
        409,
        "an offer above the high-value threshold that no compliance officer approved yet",
    ),
    ("offer_expired", 409, "an offer past its expiry"),
    ("offer_not_open", 409, "an offer refused, declined or accepted already: nothing to do"),
    ("rg_blocked", 409, "the player's responsible-gambling state forbids a bonus now"),
    ("bonus_conflict", 409, "the player holds a live bonus of the same conflict group"),
    ("no_binding", 409, "no plugin is bound for the brand, jurisdiction and world"),
    ("player_erased", 410, "the player was erased"),
    ("payload_too_large", 413, "the body is larger than the endpoint takes"),
    ("too_large", 413, "a plugin component over 48 MiB"),
    ("uri_too_long", 414, "a path and query over 8 KiB"),
    ("unsupported_media_type", 415, "the body's content type is not what the endpoint reads"),
    ("headers_too_large", 431, "the request's headers are too large"),
    ("unprocessable_body", 422, "a body of the wrong shape, as the HTTP layer saw it"),
    ("unknown_event_type", 422, "an event_type the catalogue does not have"),
    ("invalid_event", 422, "an event field out of its bounds (the field is named)"),
    ("invalid_batch", 422, "a batch with invalid events: nothing stored, a result per event"),
    ("bad_batch_size", 422, "a batch of 0 or more than 500 events"),
    ("invalid_consents", 422, "a consent change naming an unknown channel or product"),
    ("invalid_message", 422, "a send request with a wrong field (named)"),
    ("invalid_feedback", 422, "a feedback report of the wrong shape"),
    ("unknown_template", 422, "no template for the player's locale, its language or the default"),
    ("missing_variable", 422, "the personalization lacks a placeholder's value"),
    ("invalid_template", 422, "a template that is not well formed (the field is named)"),
    ("template_too_large", 422, "a template over its size or placeholder limits"),
    ("personalization_too_large", 422, "personalization over its entry or size limits"),
    ("rendered_too_large", 422, "a rendering that would pass 256 KiB"),
    ("invalid_key_request", 422, "an API key request without role, brands or holder"),
    ("invalid_manifest", 422, "a plugin manifest with a wrong field (named)"),
    (
        "bad_signature",
        422,
        "a signature that does not verify: an approval's over the manifest and sha256; a provider webhook's (then 401)",
    ),
    ("invalid_approval", 422, "an approval request of the wrong shape"),
    ("invalid_binding", 422, "a binding request with a wrong field (e.g. a jurisdiction no pack covers)"),
    ("invalid_pack", 422, "a pack version with a wrong or unsourced value (named)"),
    ("invalid_decision_request", 422, "a decision request of the wrong shape"),
    ("invalid_segment", 422, "a segment definition with a wrong field (named)"),
    ("invalid_trigger", 422, "a trigger definition, activation or dry run with a wrong field (named)"),
    ("invalid_journey", 422, "a journey definition, activation or dry run with a wrong field (named)"),
    (
        "invalid_offer_template",
        422,
        "an offer template with a wrong field, or one that breaks a pack's bonus law (named)",
    ),
    ("invalid_offer_request", 422, "an offer request with a wrong field (named)"),
    ("invalid_impact_request", 422, "an impact report request with a wrong field (named)"),
    // A plugin that could not be used or failed: the runtime's own codes.
    ("not_a_component", 422, "not a WebAssembly component"),
    ("unknown_world", 422, "it exports no Pitboss world"),
    ("wrong_world", 422, "it exports another world than the manifest says"),
    ("bad_exports", 422, "its exports do not match its world"),
    ("unsupported_version", 422, "a WIT version the host does not support"),
    ("disallowed_import", 422, "it imports something the host does not give"),
    ("compile_failed", 422, "it does not compile"),
    ("input_too_large", 422, "the decision's input passes the plugin's input limit"),
    ("instantiate_failed", 422, "it could not be instantiated"),
    ("out_of_fuel", 422, "it ran out of fuel"),
    ("out_of_memory", 422, "it passed its memory limit"),
    ("deadline_exceeded", 422, "it passed its wall-clock deadline"),
    ("stack_overflow", 422, "its stack overflowed"),
    ("log_limit", 422, "it logged more than its limit"),
    ("trap", 422, "it trapped (with the guest's panic message)"),
    ("output_too_large", 422, "its answer passes the output limit"),
    ("invalid_output", 422, "its answer breaks a host check (e.g. an offer above its bounds)"),
    ("rule_error", 422, "the plugin's own rule-error"),
    // The host.
    ("internal", 500, "an error on our side (details only in the log)"),
    ("integrity_failed", 503, "the bound version failed its integrity check: it does not run"),
    (
        "busy",
        503,
        "the database's write lock stayed taken past its timeout (SQLite under many writers); try again",
    ),
    ("profile_behind", 503, "the player's accepted events could not be applied in time; try again"),
];

/// Whether `code` is in the table.
pub fn known(code: &str) -> bool {
    CODES.iter().any(|(c, _, _)| *c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_code() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<&str> =
            CODES.iter().map(|(c, _, _)| *c).filter(|c| !readme.contains(&format!("`{c}`"))).collect();
        assert!(missing.is_empty(), "README does not name: {missing:?}");
    }

    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        for (i, (code, status, meaning)) in CODES.iter().enumerate() {
            assert!(!CODES[..i].iter().any(|(c, _, _)| c == code), "{code} twice");
            assert!((400..600).contains(status) && !meaning.is_empty(), "{code}");
        }
    }
}
