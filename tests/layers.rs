//! The layers of `src/` run one way, and no file imports another that (through any chain)
//! imports it back.
//!
//! Layers, lowest first: the sans-IO core crate (re-exported at the crate root), `store`, `fleet`
//! (the product's rules), `shard` (the runtime), and the app (`api`, `backup`, `cli`, `client`,
//! `config`, `dashboard`, `data_dir`, `doctor`, `metrics_catalog`, `serve`, `main`, `lib`:
//! everything else). A file may name modules of its own layer and of layers below it, never above.
//!
//! This reads the source as text: every `crate::…`, `super::…` and `fleetgate::…` path in code
//! (comments and string literals stripped) is an edge to the file that defines the module it
//! names. Test-only code counts too: a unit test that imports upward ties the layers as firmly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules of the core crate re-exported by `src/lib.rs`: layer 0.
const CORE: &[&str] = &[
    "ack_window",
    "aiface",
    "clock",
    "generic",
    "generic_session",
    "http",
    "json",
    "keepalive",
    "lenient",
    "smackbio",
    "terminal",
    "time",
    "timer_wheel",
    "ws",
];

fn layer(module: &[String]) -> (u8, &'static str) {
    match module.first().map(String::as_str) {
        Some(m) if CORE.contains(&m) => (0, "core"),
        Some("store") => (1, "store"),
        Some("fleet") => (2, "fleet"),
        Some("shard") => (3, "runtime"),
        _ => (4, "app"),
    }
}

/// `src/a/b.rs` or `src/a/b/mod.rs` → ["a", "b"]; `src/lib.rs`/`src/main.rs` → [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and the contents of string and char literals.
fn code_only(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            while i < b.len() && !(b[i] == b'\'' && b[i - 1] != b'\\' && i > 0) {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every module path the code names: `crate::a::b…`, `super::…` (resolved against `me`), and
/// `fleetgate::…` (the binary naming its library). Grouped imports (`use crate::a::{b, c::d}`)
/// are expanded.
fn referenced(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (start, root) in [("crate::", 0), ("super::", 1), ("fleetgate::", 0)] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            // A whole path segment: not `mycrate::` or `fleetgate_core::`.
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            // `super` in module `a::b` (file `a/b.rs` or `a/b/mod.rs`) is `a`; inside an inline
            // `mod tests { … }` of that file it is `a::b` itself.
            let mut base: Vec<String> = if root == 1 {
                let mut full = me.to_vec();
                full.extend(inline_modules_at(code, at));
                full.pop();
                full
            } else {
                Vec::new()
            };
            let mut rest = &code[from..];
            // Chained supers.
            while root == 1 && rest.starts_with("super::") {
                base.pop();
                rest = &rest["super::".len()..];
            }
            for path in expand(rest) {
                let mut p = base.clone();
                p.extend(path);
                out.push(p);
            }
        }
    }
    out
}

/// The inline modules (`mod name { … }`) enclosing byte `at`, outermost first.
fn inline_modules_at(code: &str, at: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("mod ") {
        let start = from + pos;
        from = start + 4;
        let prev_ok = start == 0 || !code.as_bytes()[start - 1].is_ascii_alphanumeric();
        let name: String = code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = code[from + name.len()..].trim_start();
        if !prev_ok || name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        let mut end = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        if open < at && at < end {
            out.push(name);
        }
    }
    out
}

/// Paths through the file's own child modules, named without a root (`child::item`, `self::child`):
/// a parent that uses what its children define depends on them.
fn child_paths(code: &str, me: &[String], children: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for child in children {
        let needle = format!("{child}::");
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let at = from + pos;
            from = at + needle.len();
            let before = &code[..at];
            let bare = at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || (bytes[at - 1] == b':' && !before.ends_with("self::")));
            if bare {
                let mut p = me.to_vec();
                p.push(child.clone());
                out.push(p);
            }
        }
    }
    out
}

/// `a::b::{c, d::e}` (the text after the root) → [[a,b,c],[a,b,d,e]]; a plain path → [[a,b,…]].
fn expand(rest: &str) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut s = rest;
    loop {
        let ident: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(inner) = s.strip_prefix('{') {
                let mut depth = 1;
                let mut end = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let body = &inner[..end];
                let mut all = Vec::new();
                // A trailing comma (as rustfmt writes long groups) leaves an empty last part: it
                // names nothing, not the group's prefix.
                for part in split_top(body).into_iter().filter(|p| !p.trim().is_empty()) {
                    for sub in expand(part.trim()) {
                        let mut p = path.clone();
                        p.extend(sub);
                        all.push(p);
                    }
                }
                return all;
            }
            return vec![path];
        }
        s = &s[ident.len()..];
        path.push(ident);
        match s.strip_prefix("::") {
            Some(r) => s = r,
            None => return vec![path],
        }
    }
}

fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

struct Tree {
    /// Module path → file.
    files: BTreeMap<Vec<String>, PathBuf>,
}

impl Tree {
    /// The file defining the longest prefix of `path` that is a module with a file.
    fn file_of(&self, path: &[String]) -> Option<&Vec<String>> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.files.get_key_value(&path[..n]).map(|(k, _)| k))
    }
}

#[test]
fn layers_run_one_way_and_no_file_imports_itself_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tree = Tree {
        files: files
            .iter()
            .filter(|f| !f.ends_with("main.rs"))
            .map(|f| (module_of(&src, f), f.clone()))
            .collect(),
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    for f in &files {
        if f.ends_with("main.rs") {
            continue;
        }
        let me = module_of(&src, f);
        let code = code_only(&std::fs::read_to_string(f).expect("read"));
        let children: Vec<String> = tree
            .files
            .keys()
            .filter(|k| k.len() == me.len() + 1 && k.starts_with(&me))
            .filter_map(|k| k.last().cloned())
            .collect();
        for path in referenced(&code, &me)
            .into_iter()
            .chain(child_paths(&code, &me, &children))
        {
            if path.first().is_some_and(|m| CORE.contains(&m.as_str())) {
                // The core crate is below everything and cannot import back.
                continue;
            }
            let Some(target) = tree.file_of(&path) else {
                continue;
            };
            if target == &me || target.is_empty() {
                continue;
            }
            let (from, from_name) = layer(&me);
            let (to, to_name) = layer(target);
            if to > from {
                upward.push(format!(
                    "{} ({from_name}) imports {} ({to_name})",
                    me.join("::"),
                    path.join("::")
                ));
            }
            edges.entry(me.clone()).or_default().insert(target.clone());
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
    let cycles = strongly_connected(&edges);
    let describe = |c: &Vec<Vec<String>>| {
        let inner: Vec<String> = c
            .iter()
            .flat_map(|a| {
                edges[a]
                    .iter()
                    .filter(|b| c.contains(b))
                    .map(move |b| format!("  {} -> {}", a.join("::"), b.join("::")))
            })
            .collect();
        inner.join("\n")
    };
    assert!(
        cycles.is_empty(),
        "files that import each other in a circle (the edges within each):\n{}",
        cycles.iter().map(describe).collect::<Vec<_>>().join("\n\n")
    );
}

/// Tarjan's algorithm; only components of more than one file.
fn strongly_connected(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    struct St<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(st: &mut St<'a>, v: &'a Vec<String>) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on.insert(v);
        if let Some(ws) = st.edges.get(v) {
            for w in ws {
                if !st.index.contains_key(w) {
                    visit(st, w);
                    let lw = st.low[w];
                    let lv = st.low[v];
                    st.low.insert(v, lv.min(lw));
                } else if st.on.contains(w) {
                    let iw = st.index[w];
                    let lv = st.low[v];
                    st.low.insert(v, lv.min(iw));
                }
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: Vec<&Vec<String>> = edges.keys().collect();
    for v in nodes {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

#[test]
fn the_checker_sees_grouped_and_relative_imports() {
    let me = vec!["shard".to_string(), "ws_session".to_string()];
    let code = code_only(
        "use super::{CloseReason, io::Transport};\n// use crate::api::x;\nlet s = \"crate::api\";\nuse crate::fleet::{presence, registry::{Claim, Device},\n};",
    );
    let got = referenced(&code, &me);
    let want: Vec<Vec<String>> = [
        vec!["fleet", "presence"],
        vec!["fleet", "registry", "Claim"],
        vec!["fleet", "registry", "Device"],
        vec!["shard", "CloseReason"],
        vec!["shard", "io", "Transport"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    let got: BTreeSet<_> = got.into_iter().collect();
    let want: BTreeSet<_> = want.into_iter().collect();
    assert_eq!(got, want);
}
