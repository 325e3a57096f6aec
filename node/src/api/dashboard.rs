//! The web dashboard, served by the node itself on the local API address. Plain HTML, CSS and JavaScript
//! built into the binary (no CDN, no build step); the page talks to the same JSON API as the CLI and follows
//! the event stream (`/v1/events`) for live updates.
//!
//! Login: a browser cannot send the `Authorization` header by itself, so `xov dashboard` prints
//! `http://127.0.0.1:PORT/?token=…`; that request sets the token as an HttpOnly, SameSite=Strict cookie and
//! redirects to a clean URL. The API accepts that cookie like the header (see `api::require_cookie`). The
//! page and its assets are public (they hold nothing secret); every API call they make is checked.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::api::{ApiError, AppState};

/// The cookie that carries the API token for the dashboard.
pub const COOKIE: &str = "xov_token";

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

#[derive(Debug, Deserialize)]
pub struct Login {
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
    if let Some(t) = &q.token {
        if !crate::api::same_token(t.trim().as_bytes(), st.token.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_cookie",
                "this dashboard link is outdated (the node restarted); run `xov dashboard` again for a fresh one",
            )
            .into_response();
        }
        let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", t.trim());
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
