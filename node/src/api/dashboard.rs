//! The web dashboard, served by the node itself on the local API address. Plain HTML, CSS and JavaScript
//! built into the binary (no CDN, no build step); the page talks to the same JSON API as the CLI and follows
//! the event stream (`/v1/events`) for live updates.
//!
//! Login: a browser cannot send the `Authorization` header by itself, so `xov dashboard` asks the API (with
//! the token) for a one-time login code and prints `http://127.0.0.1:PORT/?code=…`; that request sets the
//! token as an HttpOnly, SameSite=Strict cookie and redirects to a clean URL. The API accepts that cookie
//! like the header (see `api::require_cookie`). The page and its assets are public (they hold nothing
//! secret); every API call they make is checked.
//!
//! Invariants:
//! - The API token never appears in a URL: a login link carries a code that works once, within
//!   [`LOGIN_CODE_TTL`], so the copy left in the browser's history or a proxy log is worthless.
//! - At most [`MAX_LOGIN_CODES`] codes are outstanding; expired ones are dropped when a new one is made.
//! - Every response carries a Content-Security-Policy (scripts, styles, images and connections from the
//!   node itself only; no framing), `X-Frame-Options: DENY`, `nosniff` and `no-referrer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiError, AppState};

/// How long a login code works.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(120);
/// Most login codes outstanding at once.
pub const MAX_LOGIN_CODES: usize = 16;

/// Outstanding one-time login codes and when each expires.
pub type LoginCodes = Arc<Mutex<HashMap<String, Instant>>>;

/// The policy every response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Adds the security headers to every response (page, assets and API alike).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// A one-time login code for the dashboard.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginCode {
    pub code: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
    /// The link that logs a browser in with it.
    pub url: String,
}

fn fresh_code() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// `POST /v1/dashboard/login`: a one-time code that logs a browser in (what `xov dashboard` prints).
#[utoipa::path(post, path = "/v1/dashboard/login", responses((status = 200, body = LoginCode)))]
pub async fn new_login(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let code = fresh_code();
    {
        let Ok(mut codes) = st.logins.lock() else {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lock")
                .into_response();
        };
        codes.retain(|_, until| *until > now);
        if codes.len() >= MAX_LOGIN_CODES {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_login_codes",
                format!("{MAX_LOGIN_CODES} dashboard links are waiting to be used; use one, or wait {} s", LOGIN_CODE_TTL.as_secs()),
            )
            .into_response();
        }
        codes.insert(code.clone(), now + LOGIN_CODE_TTL);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    Json(LoginCode {
        url: format!("http://{host}/?code={code}"),
        code,
        expires_in_secs: LOGIN_CODE_TTL.as_secs(),
    })
    .into_response()
}

/// The cookie that carries the API token for the dashboard.
pub const COOKIE: &str = "xov_token";

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

#[derive(Debug, Deserialize)]
pub struct Login {
    code: Option<String>,
    token: Option<String>,
}

/// The token from a `Cookie` header, if it carries ours.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn index(State(st): State<AppState>, q: Query<Login>) -> Response {
    if q.token.is_some() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "token_in_url",
            "links that carry the API token are not accepted (they stay in the browser's history); run `xov dashboard` for a one-time link",
        )
        .into_response();
    }
    if let Some(code) = &q.code {
        let valid = st
            .logins
            .lock()
            .ok()
            .and_then(|mut c| c.remove(code.trim()));
        if valid.is_none_or(|until| until <= Instant::now()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_login_code",
                "this dashboard link was used already or is over two minutes old; run `xov dashboard` again for a fresh one",
            )
            .into_response();
        }
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            st.token.trim()
        );
        // Redirect so the token leaves the address bar.
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = cookie.parse() {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response()
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

#[derive(Debug, Deserialize)]
pub struct QrQuery {
    data: String,
}

/// `GET /v1/qr.svg?data=…`: a QR code of a payment request, drawn on the server (no JavaScript encoder).
pub async fn qr_svg(Query(q): Query<QrQuery>) -> Response {
    if q.data.len() > 1024 {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_long",
            "QR data is limited to 1024 bytes",
        )
        .into_response();
    }
    match qrcode::QrCode::new(q.data.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .quiet_zone(true)
                .build();
            ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
        }
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, "bad_qr", e.to_string()).into_response(),
    }
}

/// The public part: the page and its assets.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
}
