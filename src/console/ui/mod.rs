//! The console's pages: static HTML, one script and one stylesheet, embedded in the binary.
//!
//! No build step and nothing fetched from elsewhere: the files in this directory are served as
//! they are (`include_str!`), so the console works offline and a release is one binary. Every
//! page is a shell that `app.js` fills from the JSON API (`/api/overview`, `/api/clients`, ...,
//! polled every 2 s); what each page shows is in docs/console-ui.md.
//!
//! The script writes values from the API with `textContent` and DOM attributes only (client ids
//! and topics are chosen by clients), and sends actions as `POST` with the `X-CSRF-Token` of
//! `/api/overview`, showing their buttons only to a user with `user.admin`.

/// The names [`page`] knows, in navigation order.
pub const PAGES: [&str; 5] = ["overview", "clients", "sessions", "topics", "queues"];

/// Each page's heading and title, in [`PAGES`] order.
const TITLES: [&str; 5] = ["Overview", "Clients", "Sessions", "Topics", "Queues"];

/// The HTML of one page by name (`overview`, `clients`, `sessions`, `topics`, `queues`), or
/// `None` for any other name. Served as `text/html; charset=utf-8`. A page is `layout.html`
/// (head, navigation, heading, status line) around the page's own `NAME.html`, put together
/// once per process.
pub fn page(name: &str) -> Option<&'static str> {
    static BUILT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let index = PAGES.iter().position(|p| *p == name)?;
    let built = BUILT.get_or_init(|| {
        let contents = [
            include_str!("overview.html"),
            include_str!("clients.html"),
            include_str!("sessions.html"),
            include_str!("topics.html"),
            include_str!("queues.html"),
        ];
        PAGES
            .iter()
            .zip(TITLES)
            .zip(contents)
            .map(|((page, title), content)| {
                include_str!("layout.html")
                    .replace("{title}", title)
                    .replace("{page}", page)
                    .replace("{content}", content)
            })
            .collect()
    });
    built.get(index).map(String::as_str)
}

/// A static asset by its path under `/static/` (`app.js`, `style.css`; a leading `/static/`,
/// `static/` or `/` is accepted), as (content type, bytes); `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let name = path
        .strip_prefix("/static/")
        .or_else(|| path.strip_prefix("static/"))
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    match name {
        "app.js" => Some((
            "text/javascript; charset=utf-8",
            include_bytes!("app.js").as_slice(),
        )),
        "style.css" => Some((
            "text/css; charset=utf-8",
            include_bytes!("style.css").as_slice(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/static/...` reference of every page is an asset this module serves.
    #[test]
    fn pages_reference_only_served_assets() {
        for name in PAGES {
            let html = page(name).unwrap_or_default();
            assert!(html.contains(&format!("data-page=\"{name}\"")), "{name}");
            let mut rest = html;
            let mut found = 0;
            while let Some(at) = rest.find("\"/static/") {
                let reference = &rest[at + 1..];
                let end = reference.find('"').unwrap_or(reference.len());
                assert!(
                    asset(&reference[..end]).is_some(),
                    "{name}: {}",
                    &reference[..end]
                );
                found += 1;
                rest = &reference[end..];
            }
            assert_eq!(found, 2, "{name} links the script and the stylesheet");
        }
    }

    /// Nothing is loaded from another origin: the console works without a network.
    #[test]
    fn nothing_is_loaded_from_elsewhere() {
        let mut texts: Vec<&str> = PAGES.iter().filter_map(|n| page(n)).collect();
        for name in ["app.js", "style.css"] {
            let bytes = asset(name).map(|(_, b)| b).unwrap_or_default();
            texts.push(std::str::from_utf8(bytes).unwrap_or_default());
        }
        for text in texts {
            assert!(!text.is_empty());
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{needle} in an embedded file");
            }
        }
    }

    /// The script never turns API data into markup.
    #[test]
    fn script_writes_text_not_html() {
        let script = asset("app.js")
            .and_then(|(_, b)| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(needle), "app.js uses {needle}");
        }
    }

    #[test]
    fn unknown_names_are_none() {
        assert!(page("admin").is_none());
        assert!(page("../mod.rs").is_none());
        assert!(asset("/static/mod.rs").is_none());
        assert!(asset("/static/../mod.rs").is_none());
        assert_eq!(
            asset("/static/app.js").map(|(t, _)| t),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            asset("style.css").map(|(t, _)| t),
            Some("text/css; charset=utf-8")
        );
    }
}
