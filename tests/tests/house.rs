//! The house rules, checked on every `cargo test` so that a regression fails CI instead of
//! waiting for a reviewer to notice it:
//!
//! - no Rust source file outside test-only files has more than 1 000 lines, so that every file
//!   can be read in one sitting;
//! - no two files of one crate use each other (an import circle), directly or through others,
//!   so that each file can be understood, and moved, after the ones it uses; a child module
//!   using its ancestors (`super::`, `crate::Item` of the root) is the one allowed way back;
//! - the pure crates stay pure: `floe-wire` and `floe-rollout` pull in no async runtime,
//!   database, web server or networking stack, and the coordinator does not depend on the
//!   device runtime.
//!
//! The circle check reads the source as text with a small tokenizer instead of a Rust parser:
//! this crate has no parser among its dependencies, and the house's code is plain enough (no
//! `mod` or `use` made by macros, no `#[path]` modules) for tokens to be exact. It follows
//! `mod NAME;` from each crate root, skipping test-only files and the `#[cfg(test)] mod tests
//! { .. }` block that ends a file, and counts `use` trees and paths in code that start with
//! `crate`, `super`, `self` or a child module. Each checker also runs on a small tree it
//! writes itself (or, for the dependency check, on a crate that does have those
//! dependencies), so a checker that stopped seeing anything would fail too.
//!
//! `cargo tree` runs `--offline --locked` on the workspace's `Cargo.lock` for this host only,
//! so the check needs no network and never rewrites the lock file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::path::{Path, PathBuf};

/// Most lines a source file may have.
const MAX_LINES: usize = 1_000;

/// Crates that the pure crates must not depend on (also as the stem of a family: `tokio-util`).
const HEAVY: [&str; 5] = ["tokio", "rusqlite", "axum", "hyper", "libp2p"];

/// Every `.rs` file under `root`, skipping `target/` and hidden directories, sorted.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Whether a file (path relative to the tree checked) is test-only: named `tests.rs` or
/// `*_tests.rs`, or under a directory named `tests`.
fn test_only(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || rel
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"))
}

/// Every non-test source file under `root` with more than [`MAX_LINES`] lines, with its count.
fn oversized(root: &Path) -> Vec<(PathBuf, usize)> {
    rust_files(root)
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if test_only(&rel) {
                return None;
            }
            let lines = std::fs::read_to_string(&path).ok()?.lines().count();
            (lines > MAX_LINES).then_some((rel, lines))
        })
        .collect()
}

#[test]
fn no_source_file_has_more_than_a_thousand_lines() {
    let root = floe_tests::workspace_root();
    let found = oversized(&root);
    let list: Vec<String> = found
        .iter()
        .map(|(p, n)| format!("  {} ({n} lines)", p.display()))
        .collect();
    assert!(
        found.is_empty(),
        "{} source files have more than {MAX_LINES} lines (test-only files are exempt; split \
         the others along their responsibilities):\n{}",
        found.len(),
        list.join("\n")
    );
}

#[test]
fn the_size_check_finds_a_long_file_and_spares_test_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let fine = "fn f() {}\n".repeat(MAX_LINES);
    for (rel, text) in [
        ("a/src/long.rs", &long),
        ("a/src/fine.rs", &fine),
        ("a/src/tests.rs", &long),
        ("a/src/x_tests.rs", &long),
        ("a/tests/e2e.rs", &long),
        ("a/target/debug/build/gen.rs", &long),
    ] {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    assert_eq!(
        oversized(root),
        vec![(PathBuf::from("a/src/long.rs"), MAX_LINES + 1)]
    );
}

#[test]
fn no_import_circles_between_the_files_of_a_crate() {
    let root = floe_tests::workspace_root();
    let found = circles::in_workspace(&root);
    let list: Vec<String> = found
        .iter()
        .map(|c| {
            let files: Vec<String> = c.files.iter().map(|p| p.display().to_string()).collect();
            format!("  {}\n    {}", files.join(" <-> "), c.uses.join("\n    "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "{} import circles between files (each line is a set of files that use each other, \
         directly or through the others; a child using its ancestors is not counted):\n{}",
        found.len(),
        list.join("\n")
    );
}

/// Writes `files` (path, text) under `root`.
fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn the_circle_finder_sees_circles_and_only_circles() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_tree(
        root,
        &[
            ("c/Cargo.toml", "[package]\nname = \"c\"\n"),
            (
                "c/src/lib.rs",
                "//! Root.\npub mod a;\npub mod b;\npub mod d;\npub mod e;\npub mod f;\n\
                 mod g;\n#[cfg(test)]\nmod g_tests;\n#[cfg(test)]\nmod tests;\n\
                 pub struct Root;\nuse crate::a::A;\n",
            ),
            // a -> b through a use tree, b -> a through a path in code: a circle.
            (
                "c/src/a.rs",
                "use crate::{b::{self, B}, Root};\npub struct A;\nfn f(_: b::B) {}\n",
            ),
            (
                "c/src/b.rs",
                "pub struct B;\nfn g() -> crate::a::A { crate::a::A }\n\
                 fn h() -> crate::g::G { crate::g::G }\n",
            ),
            // d -> e -> f -> d through super:: paths: one circle of three.
            (
                "c/src/d/mod.rs",
                "pub mod inner;\nuse super::e::E;\npub struct D;\n",
            ),
            // A child using its parent (and the root) is fine.
            (
                "c/src/d/inner.rs",
                "use super::D;\nuse crate::Root;\nuse super::super::a::A;\n",
            ),
            (
                "c/src/e.rs",
                "pub struct E;\nfn h() { let _ = super::f::F; }\n",
            ),
            (
                "c/src/f.rs",
                "// use crate::a::A; (a comment is no use)\npub struct F;\n\
                 const S: &str = \"crate::b::B\";\nuse self::inner::I;\n\
                 mod inner { pub struct I; use super::super::d::D; }\n",
            ),
            // Uses in tests do not count: the cfg(test) module and test-only files are cut.
            (
                "c/src/g.rs",
                "pub struct G;\n#[cfg(test)]\nmod tests {\n    use crate::g_tests;\n    \
                 use crate::b::B;\n}\n",
            ),
            ("c/src/g_tests.rs", "use crate::b::B;\nuse crate::g::G;\n"),
            ("c/src/tests.rs", "use crate::b::B;\nuse crate::g::G;\n"),
            // A binary is its own module tree: its `crate::` is the binary's.
            ("c/src/bin/tool/main.rs", "mod x;\nmod y;\npub struct M;\n"),
            ("c/src/bin/tool/x.rs", "use crate::y::Y;\npub struct X;\n"),
            ("c/src/bin/tool/y.rs", "pub struct Y;\nuse crate::M;\n"),
            // Another crate with the same shape but no circle.
            ("k/Cargo.toml", "[package]\nname = \"k\"\n"),
            ("k/src/lib.rs", "mod a;\nmod b;\n"),
            ("k/src/a.rs", "use crate::b::B;\n"),
            // Comments, strings and chars name no module.
            (
                "k/src/b.rs",
                "pub struct B;\n// use crate::a::A;\nconst S: &str = \"crate::a::A\";\n\
                 /* crate::a::A */\nconst R: &str = r#\"crate::a::A\"#;\nconst C: char = '\"';\n\
                 fn f<'a>(x: &'a str) -> &'a str { x }\n",
            ),
        ],
    );
    let found = circles::in_workspace(root);
    let as_text: Vec<Vec<String>> = found
        .iter()
        .map(|c| c.files.iter().map(|p| p.display().to_string()).collect())
        .collect();
    assert_eq!(
        as_text,
        vec![
            vec!["c/src/a.rs".to_string(), "c/src/b.rs".to_string()],
            vec![
                "c/src/d/mod.rs".to_string(),
                "c/src/e.rs".to_string(),
                "c/src/f.rs".to_string()
            ],
        ]
    );
}

/// The crates (names) in `cargo tree -p PACKAGE` with these edge kinds, for this host (offline:
/// the registry cache holds only what this platform builds).
fn tree(package: &str, edges: &str) -> Vec<String> {
    let out = floe_tests::cargo_command()
        .args(["tree", "--offline", "--locked"])
        .args(["--prefix", "none", "--format", "{p}", "-e", edges, "-p"])
        .arg(package)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} -e {edges} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The crates of `names` that belong to a family in `banned` (`tokio` bans `tokio-util` too).
fn banned_in<'a>(names: &'a [String], banned: &[&str]) -> Vec<&'a str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            banned
                .iter()
                .any(|b| *n == *b || n.strip_prefix(b).is_some_and(|r| r.starts_with('-')))
        })
        .collect()
}

#[test]
fn banned_in_matches_a_family_and_not_a_lookalike() {
    let names: Vec<String> = ["tokio", "tokio-util", "tokioish", "libp2p-swarm", "serde"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        banned_in(&names, &HEAVY),
        ["tokio", "tokio-util", "libp2p-swarm"]
    );
}

#[test]
fn the_dependency_check_sees_the_heavy_crates_where_they_are() {
    let names = tree("floe-fabric", "normal");
    let heavy = banned_in(&names, &HEAVY);
    assert!(
        heavy.contains(&"libp2p") && heavy.contains(&"tokio"),
        "floe-fabric is the libp2p swarm on tokio, yet cargo tree shows {heavy:?} of {HEAVY:?}"
    );
}

#[test]
fn the_wire_crate_pulls_in_no_runtime_database_server_or_network_stack() {
    let names = tree("floe-wire", "normal");
    assert!(names.iter().any(|n| n == "floe-wire"), "{names:?}");
    let bad = banned_in(&names, &HEAVY);
    assert!(
        bad.is_empty(),
        "floe-wire must stay serde/ciborium/ed25519/sha2 only, but its normal dependencies \
         include {bad:?}"
    );
}

#[test]
fn the_rollout_crate_pulls_in_no_runtime_database_server_or_network_stack() {
    let names = tree("floe-rollout", "normal");
    assert!(names.iter().any(|n| n == "floe-rollout"), "{names:?}");
    let bad = banned_in(&names, &HEAVY);
    assert!(
        bad.is_empty(),
        "floe-rollout must stay a pure engine (serde and hdrhistogram only), but its normal dependencies \
         include {bad:?}"
    );
}

#[test]
fn the_coordinator_does_not_depend_on_the_device_runtime() {
    let names = tree("floe-coordinator", "normal,build,dev");
    assert!(names.iter().any(|n| n == "floe-coordinator"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "floe-runtime"),
        "floe-coordinator depends on floe-runtime (normal, build or dev): what both need \
         belongs in floe-wire"
    );
}

/// The import-circle finder: each crate's `src/` as module trees (the library's and each
/// binary's), an edge from a file to every other file of its tree whose module it names, and
/// Tarjan's strongly connected components of that graph.
mod circles {
    use super::test_only;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// A token of Rust source, with comments and the insides of literals gone.
    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        PathSep,
        Open,
        Close,
        Semi,
        Comma,
        Star,
        Other,
    }

    /// The identifier a token is, if it is one.
    fn ident(t: &Tok) -> Option<&str> {
        match t {
            Tok::Ident(s) => Some(s),
            _ => None,
        }
    }

    /// Tokenizes `text`, dropping comments, strings and char literals. `$crate` becomes
    /// `crate`; a lifetime's quote is dropped and its name kept as an identifier.
    fn tokens(text: &str) -> Vec<Tok> {
        let c: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            let next = c.get(i + 1).copied();
            if ch.is_whitespace() {
                i += 1;
            } else if ch == '/' && next == Some('/') {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            } else if ch == '/' && next == Some('*') {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            } else if ch == '"' {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            } else if (ch == 'r' || ch == 'b')
                && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
                && raw_string_start(&c, i).is_some()
            {
                // r"..", r#".."#, br#".."#: skip to the closing quote and as many hashes.
                let (hashes, body) = raw_string_start(&c, i).unwrap_or((0, i));
                i = body;
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
            } else if ch == '\'' {
                // A char literal ('a', '\n', '\u{..}') or a lifetime ('a, 'static).
                if next == Some('\\') {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            } else if ch.is_alphabetic() || ch == '_' {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            } else if ch.is_ascii_digit() {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Other);
            } else {
                i += 1;
                out.push(match ch {
                    ':' if next == Some(':') => {
                        i += 1;
                        Tok::PathSep
                    }
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ';' => Tok::Semi,
                    ',' => Tok::Comma,
                    '*' => Tok::Star,
                    // `$crate::` in a macro is `crate::`.
                    '$' => continue,
                    _ => Tok::Other,
                });
            }
        }
        out
    }

    /// At a raw string (`r"`, `r#"`, `br"`...): its number of hashes and where its body starts.
    fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
        let mut j = i;
        if c.get(j) == Some(&'b') {
            j += 1;
        }
        if c.get(j) != Some(&'r') {
            return None;
        }
        j += 1;
        let mut hashes = 0;
        while c.get(j) == Some(&'#') {
            hashes += 1;
            j += 1;
        }
        (c.get(j) == Some(&'"')).then_some((hashes, j + 1))
    }

    /// The text of a file without its `#[cfg(test)] mod tests { .. }` block: everything from the
    /// first line `#[cfg(test)]` followed by `mod tests {` (the house puts that block last).
    fn without_test_block(text: &str) -> String {
        let lines: Vec<&str> = text.lines().collect();
        let mut keep = lines.len();
        for (n, line) in lines.iter().enumerate() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("#[cfg(test)]") else {
                continue;
            };
            let rest = rest.trim();
            let decl = if rest.is_empty() {
                lines.get(n + 1).map(|l| l.trim()).unwrap_or("")
            } else {
                rest
            };
            let decl = decl.strip_prefix("pub ").unwrap_or(decl);
            if let Some(after) = decl.strip_prefix("mod tests")
                && after.trim_start().starts_with('{')
            {
                keep = n;
                break;
            }
        }
        lines[..keep].join("\n")
    }

    /// One file of a module tree.
    #[derive(Debug)]
    struct File {
        /// Relative to the workspace root.
        rel: PathBuf,
        /// Its module path from the tree's root (`[]` for the root file).
        module: Vec<String>,
        tokens: Vec<Tok>,
        /// The inline modules (`mod NAME { .. }`) of the file, as paths within it; the first is
        /// the file's own scope, `[]`.
        inline: Vec<Vec<String>>,
        /// For each token, the index in `inline` of the inline module it is in.
        scope: Vec<usize>,
    }

    /// The inline modules of `toks` and, for each token, the one it is in (see [`File`]).
    fn inline_scopes(toks: &[Tok]) -> (Vec<Vec<String>>, Vec<usize>) {
        let mut inline = vec![Vec::new()];
        let mut scope = Vec::with_capacity(toks.len());
        // (scope to return to, brace depth at which it closes)
        let mut open: Vec<(usize, usize)> = Vec::new();
        let mut current = 0;
        let mut depth = 0usize;
        for (i, tok) in toks.iter().enumerate() {
            match tok {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth = depth.saturating_sub(1);
                    if let Some(&(back, at)) = open.last()
                        && at == depth
                    {
                        current = back;
                        open.pop();
                    }
                }
                _ => {}
            }
            scope.push(current);
            if ident(tok) == Some("mod")
                && let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
            {
                let mut path = inline[current].clone();
                path.push(name.clone());
                inline.push(path);
                open.push((current, depth));
                current = inline.len() - 1;
            }
        }
        (inline, scope)
    }

    /// The name declared by a `mod NAME;` (not an inline module) at `i`, unless it is a module of
    /// tests (`#[cfg(test)]` before it).
    fn mod_decl(toks: &[Tok], i: usize) -> Option<String> {
        if ident(&toks[i]) != Some("mod") {
            return None;
        }
        let name = ident(toks.get(i + 1)?)?.to_string();
        if toks.get(i + 2) != Some(&Tok::Semi) {
            return None;
        }
        // `#[cfg(test)]` in the attributes just before: after the previous item's end.
        let from = toks[..i]
            .iter()
            .rposition(|t| matches!(t, Tok::Semi | Tok::Close | Tok::Open))
            .map_or(0, |p| p + 1);
        let attrs: Vec<&str> = toks[from..i].iter().filter_map(ident).collect();
        let cfg_test = attrs.contains(&"cfg") && attrs.contains(&"test") && !attrs.contains(&"not");
        (!cfg_test).then_some(name)
    }

    /// Loads the module tree rooted at `root_file` (relative to `ws`), following `mod NAME;`
    /// declarations (inline modules at the top level of a file are followed too).
    fn load_tree(ws: &Path, src: &Path, root_file: &Path) -> Vec<File> {
        let mut files = Vec::new();
        let mut queue = vec![(root_file.to_path_buf(), Vec::<String>::new(), true)];
        while let Some((path, module, is_root)) = queue.pop() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let toks = tokens(&without_test_block(&text));
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let children_dir = if is_root || name.as_deref() == Some("mod") {
                dir
            } else {
                dir.join(name.unwrap_or_default())
            };
            // Inline modules shift where their `mod NAME;` children live.
            let (inline, scope) = inline_scopes(&toks);
            for i in 0..toks.len() {
                let Some(child) = mod_decl(&toks, i) else {
                    continue;
                };
                let within = &inline[scope[i]];
                let cdir = within.iter().fold(children_dir.clone(), |d, n| d.join(n));
                let mut cmod = module.clone();
                cmod.extend(within.iter().cloned());
                cmod.push(child.clone());
                let flat = cdir.join(format!("{child}.rs"));
                let nested = cdir.join(&child).join("mod.rs");
                let file = if flat.exists() { flat } else { nested };
                let rel_src = file.strip_prefix(src).unwrap_or(&file);
                if file.exists() && !test_only(rel_src) {
                    queue.push((file, cmod, false));
                }
            }
            let rel = path.strip_prefix(ws).unwrap_or(&path).to_path_buf();
            files.push(File {
                rel,
                module,
                tokens: toks,
                inline,
                scope,
            });
        }
        files
    }

    /// Expands the use tree at `toks[*i..]` under `prefix` into full paths, up to `;`.
    fn use_tree(toks: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            match toks.get(*i) {
                Some(Tok::Ident(w)) if w == "as" => {
                    *i += 2;
                }
                Some(Tok::Ident(w)) => {
                    if w != "self" || path.is_empty() {
                        path.push(w.clone());
                    }
                    *i += 1;
                }
                Some(Tok::PathSep) => *i += 1,
                Some(Tok::Star) => *i += 1,
                Some(Tok::Open) => {
                    *i += 1;
                    loop {
                        use_tree(toks, i, path.clone(), out);
                        match toks.get(*i) {
                            Some(Tok::Comma) => *i += 1,
                            Some(Tok::Close) => {
                                *i += 1;
                                break;
                            }
                            _ => break,
                        }
                    }
                    return;
                }
                _ => break,
            }
        }
        out.push(path);
    }

    /// Every path in `file` that starts with `crate`, `super`, `self` or a child module of the
    /// module it is in, made absolute (from the tree's root).
    fn references(
        file: &File,
        children: &BTreeMap<Vec<String>, BTreeSet<String>>,
    ) -> Vec<Vec<String>> {
        let toks = &file.tokens;
        let mut out = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let mut here = file.module.clone();
            here.extend(file.inline[file.scope[i]].iter().cloned());
            match &toks[i] {
                Tok::Ident(w) if w == "use" => {
                    i += 1;
                    let mut paths = Vec::new();
                    use_tree(toks, &mut i, Vec::new(), &mut paths);
                    out.extend(paths.iter().filter_map(|p| absolute(p, &here, children)));
                    continue;
                }
                Tok::Ident(_)
                    if toks.get(i + 1) == Some(&Tok::PathSep)
                        && (i == 0 || toks[i - 1] != Tok::PathSep)
                        && (i == 0 || ident(&toks[i - 1]) != Some("in")) =>
                {
                    let mut path = Vec::new();
                    while let Some(Tok::Ident(w)) = toks.get(i) {
                        path.push(w.clone());
                        if toks.get(i + 1) != Some(&Tok::PathSep) {
                            break;
                        }
                        i += 2;
                    }
                    out.extend(absolute(&path, &here, children));
                }
                _ => {}
            }
            i += 1;
        }
        out
    }

    /// `path` as seen from module `here`, from the root; `None` unless it is a path into this
    /// tree.
    fn absolute(
        path: &[String],
        here: &[String],
        children: &BTreeMap<Vec<String>, BTreeSet<String>>,
    ) -> Option<Vec<String>> {
        let first = path.first()?;
        let mut abs: Vec<String>;
        let mut rest = &path[1..];
        match first.as_str() {
            "crate" => abs = Vec::new(),
            "self" => abs = here.to_vec(),
            "super" => {
                abs = here.to_vec();
                abs.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    abs.pop();
                    rest = &rest[1..];
                }
            }
            name if children.get(here).is_some_and(|c| c.contains(name)) => {
                abs = here.to_vec();
                rest = path;
            }
            _ => return None,
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    }

    /// Files that use each other, directly or through the others.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub(super) struct Circle {
        /// The files, sorted, relative to the workspace root.
        pub(super) files: Vec<PathBuf>,
        /// Each use between two of them, with the first path that made it.
        pub(super) uses: Vec<String>,
    }

    /// The import circles of one module tree.
    fn in_tree(files: &[File]) -> Vec<Circle> {
        // Modules (file modules and the inline ones inside them) to the file defining them.
        let mut owner: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        for (n, f) in files.iter().enumerate() {
            owner.insert(f.module.clone(), n);
            if let Some((last, parent)) = f.module.split_last() {
                children
                    .entry(parent.to_vec())
                    .or_default()
                    .insert(last.clone());
            }
            for within in f.inline.iter().skip(1) {
                let mut m = f.module.clone();
                m.extend(within.iter().cloned());
                if let Some((last, parent)) = m.split_last() {
                    children
                        .entry(parent.to_vec())
                        .or_default()
                        .insert(last.clone());
                }
                owner.entry(m).or_insert(n);
            }
        }
        let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); files.len()];
        let mut why: BTreeMap<(usize, usize), String> = BTreeMap::new();
        for (n, f) in files.iter().enumerate() {
            for path in references(f, &children) {
                let target = (0..=path.len())
                    .rev()
                    .find_map(|len| owner.get(&path[..len]).copied());
                let Some(t) = target else { continue };
                let is_ancestor = f.module.starts_with(&files[t].module);
                if t != n && !is_ancestor {
                    edges[n].insert(t);
                    why.entry((n, t))
                        .or_insert_with(|| format!("crate::{}", path.join("::")));
                }
            }
        }
        let mut found: Vec<Circle> = tarjan(&edges)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut uses: Vec<String> = why
                    .iter()
                    .filter(|((a, b), _)| c.contains(a) && c.contains(b))
                    .map(|((a, b), path)| {
                        format!(
                            "{} uses {} ({path})",
                            files[*a].rel.display(),
                            files[*b].rel.display()
                        )
                    })
                    .collect();
                uses.sort();
                let mut files: Vec<PathBuf> = c.into_iter().map(|n| files[n].rel.clone()).collect();
                files.sort();
                Circle { files, uses }
            })
            .collect();
        found.sort();
        found
    }

    /// Tarjan's strongly connected components.
    fn tarjan(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
        struct State<'a> {
            edges: &'a [BTreeSet<usize>],
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(s: &mut State<'_>, v: usize) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on_stack[v] = true;
            for &w in s.edges[v].iter() {
                match s.index[w] {
                    None => {
                        visit(s, w);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                s.out.push(comp);
            }
        }
        let n = edges.len();
        let mut s = State {
            edges,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if s.index[v].is_none() {
                visit(&mut s, v);
            }
        }
        s.out
    }

    /// The import circles of every crate under `ws` (a directory with `Cargo.toml` and `src/`):
    /// its library's tree and each binary's (`src/main.rs`, `src/bin/*.rs`,
    /// `src/bin/*/main.rs`), paths relative to `ws`.
    pub(super) fn in_workspace(ws: &Path) -> Vec<Circle> {
        let mut found = Vec::new();
        let mut manifests: Vec<PathBuf> = Vec::new();
        let mut stack = vec![ws.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
                manifests.push(dir.clone());
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && name != "target"
                    && name != "src"
                    && !name.starts_with('.')
                {
                    stack.push(entry.path());
                }
            }
        }
        manifests.sort();
        for krate in manifests {
            let src = krate.join("src");
            let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
                .iter()
                .map(|r| src.join(r))
                .filter(|p| p.is_file())
                .collect();
            for entry in std::fs::read_dir(src.join("bin"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "rs") {
                    roots.push(p);
                } else if p.join("main.rs").is_file() {
                    roots.push(p.join("main.rs"));
                }
            }
            roots.sort();
            for root in roots {
                found.extend(in_tree(&load_tree(ws, &src, &root)));
            }
        }
        found.sort();
        found
    }
}

/// floed's HTTP listener has no TLS code: only the coordinator enables `floe-httpd/tls`
/// (ARCHITECTURE.md, "Server limits": TLS).
#[test]
fn floed_does_not_enable_the_tls_feature_of_its_http_server() {
    let features = |package: &str| -> String {
        let out = floe_tests::cargo_command()
            .args(["tree", "--offline", "--locked", "-e", "features"])
            .args([
                "--prefix",
                "none",
                "--format",
                "{p} {f}",
                "-i",
                "floe-httpd",
                "-p",
            ])
            .arg(package)
            .output()
            .expect("running cargo tree");
        assert!(
            out.status.success(),
            "cargo tree -p {package} -i floe-httpd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coordinator = features("floe-coordinator");
    assert!(
        coordinator.contains("floe-httpd feature \"tls\""),
        "the check must see the coordinator's TLS: {coordinator}"
    );
    let floed = features("floe-runtime");
    assert!(
        !floed.contains("feature \"tls\""),
        "floe-runtime (floed) pulls floe-httpd's tls feature: {floed}"
    );
}
