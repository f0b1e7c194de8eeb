//! Custom error pages (`routes[].error_pages`, ingress-nginx's `custom-http-errors`): the
//! body people see instead of an upstream's error answer or sluice's JSON one, from a file
//! or from an upstream that renders them. Plain data; `proxy::error_pages` serves them.

use bytes::Bytes;
use std::path::PathBuf;

/// A route's error pages, first matching rule first.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    pub rules: Vec<ErrorPage>,
}

impl ErrorPages {
    /// The page for answers with `status`, if any.
    pub fn for_status(&self, status: u16) -> Option<&PageSource> {
        self.rules
            .iter()
            .find(|rule| rule.statuses.contains(&status))
            .map(|rule| &rule.source)
    }
}

/// One rule: answers with any of `statuses` get the page of `source`.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    /// 400–599.
    pub statuses: Vec<u16>,
    pub source: PageSource,
}

/// Where a page comes from.
#[derive(Debug, Clone)]
pub enum PageSource {
    /// A file read when the config is loaded (again on reload).
    File(PageFile),
    /// An upstream asked `GET /` with `X-Code`, `X-Format`, `X-Original-URI`,
    /// `X-Request-ID` and `X-Service-Name`, as ingress-nginx's custom default backends are.
    Upstream(String),
}

/// A page file's content.
#[derive(Debug, Clone)]
pub struct PageFile {
    pub path: PathBuf,
    /// From the file name's extension.
    pub content_type: &'static str,
    pub body: Bytes,
}

impl PageFile {
    /// The `Content-Type` of a page named `path`.
    pub fn content_type_of(path: &std::path::Path) -> &'static str {
        match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            Some("xml") => "application/xml",
            _ => "text/plain; charset=utf-8",
        }
    }
}
