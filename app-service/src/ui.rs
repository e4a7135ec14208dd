//! The web UI: one page (askama template), its static assets, and the plain form post
//! that works without JavaScript. With JavaScript the page posts JSON to the same URL.

use askama::Template;
use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use sms_proto::MAX_TEXT_CHARS;

use crate::{AppState, api::ApiError, classify::Guess};

#[derive(Template)]
#[template(path = "index.html")]
pub struct Page<'a> {
    pub app_version: &'a str,
    pub max_chars: usize,
    pub sms: &'a str,
    pub guess: &'a str,
    pub result: Option<ResultView>,
    pub error: Option<String>,
}

pub struct ResultView {
    pub label: String,
    pub probability: f32,
    pub probability_text: String,
    pub model_version: String,
    pub model_name: String,
    pub agreement: Option<&'static str>,
    pub cached: bool,
}

impl Page<'_> {
    pub fn render_response(&self, status: StatusCode) -> Response {
        match self.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!("template failed: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
            }
        }
    }
}

pub async fn index(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    Page { app_version: &state.config.app_version, max_chars: MAX_TEXT_CHARS, sms: "", guess: "", result: None, error: None }
        .render_response(StatusCode::OK)
}

#[derive(serde::Deserialize)]
struct FormBody {
    #[serde(default)]
    sms: String,
    #[serde(default)]
    guess: String,
}

/// The form post (no JavaScript): the same page, with the answer or the error in it.
pub async fn classify_form(state: &AppState, body: &[u8], trace: &sms_proto::trace::TraceContext) -> Response {
    let page = |sms: &str, guess: &str, result, error: Option<String>| Page {
        app_version: &state.config.app_version,
        max_chars: MAX_TEXT_CHARS,
        sms,
        guess,
        result,
        error,
    }
    .render_response(StatusCode::OK);
    let form: FormBody = match serde_urlencoded::from_bytes(body) {
        Ok(f) => f,
        Err(e) => {
            let mut r = page("", "", None, Some(format!("the form could not be read: {e}")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let guess = match form.guess.as_str() {
        "" => None,
        g => match Guess::parse(g) {
            Some(g) => Some(g),
            None => {
                let mut r = page(&form.sms, "", None, Some("your guess must be spam or ham".into()));
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                return r;
            }
        },
    };
    match state.classifier.classify(&form.sms, guess, trace).await {
        Ok(o) => {
            let c = o.classification;
            let view = ResultView {
                probability_text: format!("{:.1}%", c.spam_probability * 100.0),
                probability: c.spam_probability,
                label: c.label,
                model_version: c.model_version,
                model_name: c.model_name,
                agreement: o.agrees.map(|a| if a { "agrees" } else { "disagrees" }),
                cached: o.cached,
            };
            page(&form.sms, &form.guess, Some(view), None)
        }
        Err(e) => {
            let err = ApiError::from(e);
            let mut r = page(&form.sms, &form.guess, None, Some(err.message));
            *r.status_mut() = err.status;
            r
        }
    }
}

const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// Static assets are compiled into the binary: one file to ship, nothing to mount.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::new(StatusCode::NOT_FOUND, format!("no static file {name:?}")).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}
