//! The API's OpenAPI 3.1 document, generated from the handlers' own annotations (`#[utoipa::path]`) and
//! served at `GET /openapi.json`. Each API module contributes its `Doc`; a test checks that every route
//! the modules register is in the document, so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every error answer: `{"error": {code, message, field?}}`; the codes are in the README's table
/// (`api/codes.rs`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable code, e.g. `not_found`, `invalid_event`, `cap_reached`.
    code: String,
    /// What went wrong, for a person.
    message: String,
    /// The request field at fault, when there is one (`payload.amount_minor`).
    field: Option<String>,
}

/// The error answers every endpoint may give (which codes, the README's table says).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// malformed_json, invalid_query, invalid_path, bad_request, brand_required, …
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// unauthorized: no key, or an unknown or revoked one
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// forbidden, brand_not_allowed, four_eyes, …
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// not_found (also another brand's)
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// method_not_allowed
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// a conflict with what exists (event_id_conflict, idempotency_conflict, version_exists, …)
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// player_erased
    #[response(status = 410)]
    Gone(ErrorBody),
    /// payload_too_large, too_large
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// uri_too_long
    #[response(status = 414)]
    UriTooLong(ErrorBody),
    /// unsupported_media_type
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// the request's fields (invalid_event, invalid_message, …) or a plugin's failure (out_of_fuel, …)
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// internal
    #[response(status = 500)]
    Internal(ErrorBody),
    /// profile_behind, integrity_failed
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Pitboss", description = "A WebAssembly-plugin host for the rules of an iGaming CRM."),
    paths(super::healthz, super::metrics, document),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerKey),
    security(("api_key" = [])),
)]
struct Base;

/// The whole document: the base and every API module's paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    for part in [
        super::events::Doc::openapi(),
        super::players::Doc::openapi(),
        super::decisions::Doc::openapi(),
        super::messaging::Doc::openapi(),
        super::templates::Doc::openapi(),
        super::plugins::Doc::openapi(),
        super::packs::Doc::openapi(),
        super::admin::Doc::openapi(),
        super::segments::Doc::openapi(),
        super::engage::Doc::openapi(),
        super::offers::Doc::openapi(),
        super::impact::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// `GET /openapi.json`: this document (no key needed).
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
