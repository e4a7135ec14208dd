//! The web UI: one page (askama template), its static assets, and the plain form post
//! that works without JavaScript. With JavaScript the page posts JSON to the same URL.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use sms_proto::MAX_TEXT_CHARS;

use sms_runtime::trace::SpanContext;

use crate::{classify::Guess, error::AppError, state::AppState};

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

/// The page as it stands after a request: what the user typed and picked, and the answer
/// or the error.
fn page(
    state: &AppState,
    status: StatusCode,
    sms: &str,
    guess: &str,
    result: Option<ResultView>,
    error: Option<String>,
) -> Response {
    let page = Page { app_version: &state.config.app_version, max_chars: MAX_TEXT_CHARS, sms, guess, result, error };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("template failed: {e}");
            AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

pub async fn index(State(state): State<AppState>) -> Response {
    page(&state, StatusCode::OK, "", "", None, None)
}

#[derive(Default)]
struct FormBody {
    sms: String,
    guess: String,
}

impl FormBody {
    /// The `sms` and `guess` fields of an urlencoded body. Bytes that are not UTF-8 are
    /// refused, as the JSON API refuses them, rather than silently replaced.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let mut form = Self::default();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let decode = |raw: &[u8]| {
                let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
                String::from_utf8(percent_encoding::percent_decode(&plus_as_space).collect())
                    .map_err(|_| "the form is not valid UTF-8 text".to_string())
            };
            match decode(key)?.as_str() {
                "sms" => form.sms = decode(value)?,
                "guess" => form.guess = decode(value)?,
                _ => {}
            }
        }
        Ok(form)
    }
}

/// The form post (no JavaScript): the same page, with the answer or the error in it.
pub async fn classify_form(state: &AppState, body: &[u8], trace: &SpanContext) -> Response {
    let form = match FormBody::parse(body) {
        Ok(f) => f,
        Err(e) => {
            let error = format!("the form could not be read: {e}");
            return page(state, StatusCode::BAD_REQUEST, "", "", None, Some(error));
        }
    };
    let guess = match form.guess.as_str() {
        "" => None,
        g => match Guess::parse(g) {
            Some(g) => Some(g),
            None => {
                let error = "your guess must be spam or ham".to_string();
                return page(state, StatusCode::UNPROCESSABLE_ENTITY, &form.sms, "", None, Some(error));
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
            page(state, StatusCode::OK, &form.sms, &form.guess, Some(view), None)
        }
        Err(e) => {
            let err = AppError::from(e);
            page(state, err.status, &form.sms, &form.guess, None, Some(err.message))
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
        _ => return AppError::new(StatusCode::NOT_FOUND, format!("no static file {name:?}")).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::FormBody;

    #[test]
    fn form_fields_are_decoded_and_invalid_utf8_is_refused() {
        let f = FormBody::parse(b"sms=WIN+a+%C2%A3900+prize%21&guess=spam&other=x").unwrap();
        assert_eq!((f.sms.as_str(), f.guess.as_str()), ("WIN a \u{a3}900 prize!", "spam"));
        assert_eq!(FormBody::parse(b"").unwrap().sms, "");
        assert!(FormBody::parse(b"sms=%FF%FE").is_err());
        assert!(FormBody::parse(b"sms=ok&guess=%C3").is_err());
    }
}
