//! The book (docs/ → target/book): built with mdbook, its math rendered by KaTeX at build
//! time (docs/katex/preprocess.mjs), then checked: no raw TeX may remain in the pages and
//! every link between them must resolve.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::{cargo, root, run};

/// The mdbook release the book is built with (installed by `cargo install` when missing).
pub(crate) const MDBOOK_VERSION: &str = "0.5.4";

/// Builds the book into `out` and checks it.
pub(crate) fn build_and_check(out: &Path) -> Result<(), String> {
    ensure_mdbook()?;
    ensure_katex()?;
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    run(Command::new("mdbook")
        .args(["build", "docs", "--dest-dir"])
        .arg(out))?;
    let pages = html_files(out)?;
    let mut problems = Vec::new();
    let texts: HashMap<PathBuf, String> = pages
        .iter()
        .map(|p| {
            fs::read_to_string(p)
                .map(|t| (p.clone(), t))
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    for (page, html) in &texts {
        let name = page.strip_prefix(out).unwrap_or(page).display().to_string();
        problems.extend(
            raw_tex(html)
                .into_iter()
                .map(|s| format!("{name}: raw TeX `{s}`")),
        );
        problems.extend(
            broken_links(page, html, &texts)
                .into_iter()
                .map(|s| format!("{name}: broken link `{s}`")),
        );
    }
    if problems.is_empty() {
        eprintln!(
            "book: {} pages, math rendered, links resolve: {}",
            pages.len(),
            out.join("index.html").display()
        );
        Ok(())
    } else {
        problems.sort();
        Err(format!(
            "the book has {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

/// mdbook at [`MDBOOK_VERSION`], installed from crates.io when missing or of another version.
fn ensure_mdbook() -> Result<(), String> {
    let version = Command::new("mdbook")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if version
        .as_deref()
        .is_some_and(|v| v.ends_with(&format!("v{MDBOOK_VERSION}")))
    {
        return Ok(());
    }
    eprintln!(
        "mdbook {MDBOOK_VERSION} not found ({}): installing it from crates.io (about a minute)",
        version.as_deref().unwrap_or("none")
    );
    cargo(&[
        "install",
        "--locked",
        &format!("mdbook@{MDBOOK_VERSION}"),
        "--no-default-features",
        "--features",
        "search",
    ])
    .map_err(|e| format!("{e}\ninstall it by hand: cargo install --locked mdbook@{MDBOOK_VERSION}"))
}

/// KaTeX in docs/node_modules, from docs/package-lock.json (`npm ci`) when missing.
fn ensure_katex() -> Result<(), String> {
    let docs = root().join("docs");
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err(
            "node not found: the book's math is rendered by KaTeX at build time; \
             install Node.js and npm (Debian: apt-get install nodejs npm)"
                .into(),
        );
    }
    if docs.join("node_modules/katex/package.json").is_file() {
        return Ok(());
    }
    // `run` works in the workspace root, so the project folder is given as `--prefix`.
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix", "docs"]))
}

/// Every `.html` file under `dir`, sorted.
fn html_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(|e| format!("cannot list {}: {e}", d.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "html") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The page's visible prose: the HTML without scripts, styles, code and KaTeX's MathML
/// (whose annotation holds the TeX source on purpose), and without tags.
fn prose(html: &str) -> String {
    let mut text = html.to_string();
    for tag in ["script", "style", "code", "pre", "math"] {
        text = strip_elements(&text, tag);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// `html` without the elements `<tag …>…</tag>` (not nested within themselves).
fn strip_elements(html: &str, tag: &str) -> String {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = find_open(rest, &open) {
        out.push_str(&rest[..start]);
        match rest[start..].find(&close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The position of an opening tag `<tag` followed by `>`, whitespace or `/`.
fn find_open(html: &str, open: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = html[from..].find(open) {
        let at = from + i;
        match html[at + open.len()..].chars().next() {
            Some('>' | ' ' | '\n' | '\t' | '/') => return Some(at),
            _ => from = at + open.len(),
        }
    }
    None
}

/// Snippets of TeX left unrendered in a page's prose: `\(`, `\[`, `$$`, `$…$` on one line,
/// or a TeX command such as `\frac`.
fn raw_tex(html: &str) -> Vec<String> {
    let text = prose(html);
    let mut found = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let snippet = |i: usize| {
        chars[i..(i + 30).min(chars.len())]
            .iter()
            .collect::<String>()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // The length of the TeX token starting at `i`, if one does.
        let token = match (c, next) {
            ('\\', Some('(' | ')' | '[' | ']')) | ('$', Some('$')) => Some(2),
            // A command: a backslash and two or more letters.
            ('\\', Some(n)) if n.is_ascii_alphabetic() => {
                let letters = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic());
                Some(1 + letters.count()).filter(|&k| k >= 3)
            }
            // `$…$` on one line, with no space inside either dollar.
            ('$', Some(n)) if !n.is_whitespace() => chars[i + 1..]
                .iter()
                .take_while(|&&c| c != '\n')
                .position(|&c| c == '$')
                .filter(|&k| !chars[i + k].is_whitespace())
                .map(|k| k + 2),
            _ => None,
        };
        match token {
            Some(len) => {
                found.push(snippet(i).replace('\n', " "));
                i += len;
            }
            None => i += 1,
        }
    }
    found
}

/// The values of `attr="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&key) {
        rest = &rest[i + key.len()..];
        if let Some(end) = rest.find('"') {
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// Internal links (`href`, `src`) of `page` that name a missing file or a missing anchor.
fn broken_links(page: &Path, html: &str, pages: &HashMap<PathBuf, String>) -> Vec<String> {
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    let links = attribute_values(html, "href")
        .into_iter()
        .chain(attribute_values(html, "src"));
    for link in links {
        let link = link.replace("&amp;", "&");
        if link.is_empty()
            || link.contains("://")
            || link.starts_with("mailto:")
            || link.starts_with("javascript:")
            || link.starts_with("data:")
            || link.contains("{{")
            // Absolute paths depend on where the site is served (mdbook's 404 page).
            || link.starts_with('/')
        {
            continue;
        }
        let (path, fragment) = match link.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (link.as_str(), None),
        };
        let path = path.split('?').next().unwrap_or("");
        let target = if path.is_empty() {
            page.to_path_buf()
        } else {
            let t = normalize(&dir.join(path));
            if path.ends_with('/') || t.is_dir() {
                t.join("index.html")
            } else {
                t
            }
        };
        if !target.is_file() {
            broken.push(link.clone());
            continue;
        }
        let fragment = fragment.filter(|f| !f.is_empty());
        if let (Some(fragment), Some(text)) = (fragment, pages.get(&target))
            && !text.contains(&format!(" id=\"{fragment}\""))
        {
            broken.push(link.clone());
        }
    }
    broken.sort();
    broken.dedup();
    broken
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tex_is_found_in_prose_but_not_in_code_or_rendered_math() {
        let page = r#"<p>Solve \(Ax = b\) and $$x$$, or $y_i$, with \frac{1}{2}.</p>
            <pre><code>$ cargo run \(ok\)</code></pre>
            <span class="katex"><math><annotation encoding="application/x-tex">\frac{1}{2}</annotation></math></span>
            <p>It costs 5 $ and 6 $ more.</p>"#;
        let starts: Vec<String> = raw_tex(page)
            .iter()
            .map(|s| s.chars().take(4).collect())
            .collect();
        assert_eq!(starts, ["\\(Ax", "\\) a", "$$x$", "$$, ", "$y_i", "\\fra"]);
        assert!(raw_tex("<p>No math here; a path C:\\ is fine.</p>").is_empty());
    }

    #[test]
    fn links_to_missing_pages_and_anchors_are_broken() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        fs::create_dir_all(dir.join("images")).unwrap();
        fs::write(dir.join("images/a.png"), b"png").unwrap();
        let b = dir.join("b.html");
        fs::write(&b, r#"<h2 id="here">Here</h2>"#).unwrap();
        let a = dir.join("a.html");
        let html = r##"<a href="b.html#here">ok</a> <a href="b.html#gone">x</a>
            <a href="c.html">x</a> <img src="images/a.png"> <a href="https://example.org">ok</a>
            <a href="#top">x</a> <a href="../crates/krylov/README.md">x</a> <a href="/">ok</a>"##;
        let pages = HashMap::from([
            (a.clone(), html.to_string()),
            (b.clone(), fs::read_to_string(&b).unwrap()),
        ]);
        fs::write(&a, html).unwrap();
        let broken = broken_links(&a, html, &pages);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            broken,
            [
                "#top",
                "../crates/krylov/README.md",
                "b.html#gone",
                "c.html"
            ]
        );
    }
}
