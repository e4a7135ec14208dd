//! The security headers of every answer: a strict Content-Security-Policy, no sniffing,
//! no framing, no referrer, no powerful features.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, header};

/// The security headers of every answer, set where the handler did not set its own.
pub fn security_headers<B>(mut response: Response<B>) -> Response<B> {
    const POLICY: [(HeaderName, &str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=()"),
    ];
    let headers: &mut HeaderMap = response.headers_mut();
    headers.reserve(POLICY.len() + 1); // and x-trace-id, set by `Observe`
    for (name, value) in POLICY {
        if let header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(HeaderValue::from_static(value));
        }
    }
    response
}

/// A strict policy: only this origin's scripts and styles, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn every_answer_gets_the_security_headers() {
        for status in [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::BAD_GATEWAY] {
            let response = security_headers(Response::builder().status(status).body(()).unwrap());
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP, "{status}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{status}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{status}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{status}");
            assert_eq!(headers["permissions-policy"], "camera=(), microphone=(), geolocation=()", "{status}");
            assert_eq!(headers.len(), 5, "{status}: {headers:?}");
        }
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-inline"), "{CSP}");
        assert!(CSP.contains("frame-ancestors 'none'"), "{CSP}");
    }

    #[test]
    fn a_handlers_own_security_header_is_kept() {
        let own = "default-src 'none'; img-src data:";
        let response = Response::builder()
            .header(header::CONTENT_SECURITY_POLICY, own)
            .header(header::X_FRAME_OPTIONS, "SAMEORIGIN")
            .body(())
            .unwrap();
        let headers = security_headers(response).headers().clone();
        assert_eq!(headers.get_all(header::CONTENT_SECURITY_POLICY).iter().collect::<Vec<_>>(), [own]);
        assert_eq!(headers.get_all(header::X_FRAME_OPTIONS).iter().collect::<Vec<_>>(), ["SAMEORIGIN"]);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    }
}
