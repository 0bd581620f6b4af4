//! The console's pages and static files, embedded in the binary (placeholder: the pages are
//! written separately and replace this file).

/// The HTML page `name` (overview, clients, sessions, topics, queues).
pub fn page(name: &str) -> Option<&'static str> {
    match name {
        "overview" | "clients" | "sessions" | "topics" | "queues" => Some(PLACEHOLDER),
        _ => None,
    }
}

/// A static file under `/static/`: its content type and bytes.
pub fn asset(_path: &str) -> Option<(&'static str, &'static [u8])> {
    None
}

const PLACEHOLDER: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>ferromq \
                           console</title></head><body><h1>ferromq console</h1><p>The JSON API \
                           is under <a href=\"/api/overview\">/api/overview</a>.</p></body></html>";
