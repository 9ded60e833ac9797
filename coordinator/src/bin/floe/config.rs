//! Where the API commands find their coordinator and token, and the output conventions they
//! share (tables, `--json`, exit codes).
//!
//! Precedence, for the server and the token separately: the `--server` / `--token` flags, then
//! the `FLOE_SERVER` / `FLOE_TOKEN` environment variables, then the config file
//! (`$XDG_CONFIG_HOME/floe/config.toml`, else `~/.config/floe/config.toml`, with `server` and
//! either `token` or `token_file`), then the defaults of a local `floe serve`:
//! `http://127.0.0.1:7300` and the token file in its default data directory
//! (`$XDG_DATA_HOME/floe/api-token`, else `~/.local/share/floe/api-token`). The config file is
//! read only when a flag or variable leaves something open, so a broken file never gets in the
//! way of an explicit `--server` and `--token`.
//!
//! Resolution is a pure function of its inputs (flags, an environment lookup, the home and XDG
//! directories), which is what the precedence tests drive.

use floe_wire::text::for_terminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use floe_coordinator::client::{Client, ClientError};
use serde::Deserialize;

/// The server a local `floe serve` listens on by default.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7300";
/// The token file name in the server's data directory.
pub(crate) const TOKEN_FILE: &str = "api-token";
/// The longest token file read; a token is a short line.
const MAX_TOKEN_BYTES: u64 = 4096;
/// The longest CA file read.
const MAX_CA_BYTES: u64 = 1024 * 1024;
/// The longest config file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The connection flags every API command takes (global within its subcommand tree).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Conn {
    /// The coordinator's URL (else FLOE_SERVER, the config file, http://127.0.0.1:7300).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The API token (else FLOE_TOKEN, the config file, the local server's token file).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// Trust this PEM file (a private CA, or the server's own certificate) for an https
    /// --server, instead of the system's roots.
    #[arg(long, global = true, value_name = "PEM", env = "FLOE_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// Trust exactly the https --server certificate with this fingerprint (`sha256:…`, as
    /// `floe serve --tls-self-signed` prints it and writes to DATA_DIR/tls/fingerprint).
    #[arg(
        long,
        global = true,
        value_name = "SHA256",
        env = "FLOE_PIN",
        conflicts_with = "ca"
    )]
    pub(crate) pin: Option<String>,
    /// Print the server's JSON as it was received instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// Where a setting came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// The config file.
    File(PathBuf),
    /// A token file (named by the config file or the default).
    TokenFile(PathBuf),
    /// The built-in default.
    Default,
    /// Nothing found.
    None,
}

/// The resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The server URL.
    pub(crate) server: String,
    /// Where the server came from.
    pub(crate) server_from: Source,
    /// The token, when one was found.
    pub(crate) token: Option<String>,
    /// Where the token came from.
    pub(crate) token_from: Source,
}

/// The directories resolution looks in, taken from the environment by [`Dirs::from_env`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Dirs {
    /// `$HOME`.
    pub(crate) home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub(crate) xdg_config: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub(crate) xdg_data: Option<PathBuf>,
}

impl Dirs {
    /// The directories of this process's environment (empty values count as unset).
    pub(crate) fn from_env() -> Dirs {
        let get = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Dirs {
            home: get("HOME"),
            xdg_config: get("XDG_CONFIG_HOME"),
            xdg_data: get("XDG_DATA_HOME"),
        }
    }

    /// The config file path, when a home or XDG config directory is known.
    pub(crate) fn config_file(&self) -> Option<PathBuf> {
        self.xdg_config
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("floe").join("config.toml"))
    }

    /// The default data directory of `floe serve`.
    pub(crate) fn data_dir(&self) -> Option<PathBuf> {
        self.xdg_data
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".local").join("share")))
            .map(|d| d.join("floe"))
    }
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(text)
}

fn load_file(path: &Path) -> Result<Option<FileConfig>> {
    match read_capped(path, MAX_CONFIG_BYTES) {
        Ok(text) => {
            let cfg: FileConfig = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "config file {}: {}",
                    path.display(),
                    e.to_string().trim().replace('\n', " ")
                )
            })?;
            if cfg.token.is_some() && cfg.token_file.is_some() {
                bail!(
                    "config file {}: set either `token` or `token_file`, not both",
                    path.display()
                );
            }
            Ok(Some(cfg))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = read_capped(path, MAX_TOKEN_BYTES)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

/// Resolves server and token from flags, an environment lookup and the directories.
pub(crate) fn resolve(
    conn: &Conn,
    env: &dyn Fn(&str) -> Option<String>,
    dirs: &Dirs,
) -> Result<Settings> {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut server = conn
        .server
        .clone()
        .map(|s| (s, Source::Flag))
        .or_else(|| env("FLOE_SERVER").map(|s| (s, Source::Env("FLOE_SERVER"))));
    let mut token = conn
        .token
        .clone()
        .map(|t| (t, Source::Flag))
        .or_else(|| env("FLOE_TOKEN").map(|t| (t, Source::Env("FLOE_TOKEN"))));
    if server.is_none() || token.is_none() {
        if let Some(path) = dirs.config_file() {
            if let Some(file) = load_file(&path)? {
                if server.is_none() {
                    server = file.server.map(|s| (s, Source::File(path.clone())));
                }
                if token.is_none() {
                    if let Some(t) = file.token {
                        token = Some((t, Source::File(path.clone())));
                    } else if let Some(tf) = file.token_file {
                        // A relative token_file is relative to the config file's directory.
                        let tf = match path.parent() {
                            Some(dir) if tf.is_relative() => dir.join(tf),
                            _ => tf,
                        };
                        token = Some((read_token(&tf)?, Source::TokenFile(tf)));
                    }
                }
            }
        }
    }
    if token.is_none() {
        if let Some(path) = dirs.data_dir().map(|d| d.join(TOKEN_FILE)) {
            if path.exists() {
                token = Some((read_token(&path)?, Source::TokenFile(path)));
            }
        }
    }
    let (server, server_from) =
        server.unwrap_or_else(|| (DEFAULT_SERVER.to_string(), Source::Default));
    let (token, token_from) = match token {
        Some((t, s)) => (Some(t), s),
        None => (None, Source::None),
    };
    Ok(Settings {
        server,
        server_from,
        token,
        token_from,
    })
}

/// Resolves the settings from this process's flags and environment and builds a client.
pub(crate) fn client(conn: &Conn) -> Result<Client> {
    let settings = resolve(conn, &|k| std::env::var(k).ok(), &Dirs::from_env())?;
    tracing::debug!(server = %settings.server, server_from = ?settings.server_from, token_from = ?settings.token_from, "connection settings");
    if let Some(pin) = &conn.pin {
        return Client::with_pin(&settings.server, settings.token, pin)
            .map_err(|e| explain(e, false));
    }
    let ca = match &conn.ca {
        Some(path) => Some(
            read_capped(path, MAX_CA_BYTES)
                .map(String::into_bytes)
                .with_context(|| {
                    format!("reading the CA file {} (--ca / FLOE_CA)", path.display())
                })?,
        ),
        None => None,
    };
    Client::with_ca(&settings.server, settings.token, ca.as_deref()).map_err(|e| explain(e, false))
}

/// Turns a client error into the CLI's error, adding a hint when a 401 came back and no token
/// was sent.
pub(crate) fn explain(err: ClientError, had_token: bool) -> anyhow::Error {
    if err.status() == Some(401) && !had_token {
        return anyhow::Error::new(err).context(
            "no API token was found: pass --token, set FLOE_TOKEN, or set `token`/`token_file` in ~/.config/floe/config.toml",
        );
    }
    anyhow::Error::new(err)
}

/// Runs one client call and maps its error.
pub(crate) fn call<T>(
    client: &Client,
    f: impl FnOnce(&Client) -> Result<T, ClientError>,
) -> Result<T> {
    f(client).map_err(|e| explain(e, client.has_token()))
}

/// Renders rows under headers as an aligned text table (two spaces between columns, no
/// trailing spaces). Widths count characters, not bytes. Cells are untrusted text (names,
/// labels, audit details): control characters are shown escaped, never sent to the terminal.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| for_terminal(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Renders `key: value` lines with the keys aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let v = for_terminal(v);
        out.push_str(&format!("{k:<w$}  {v}\n", w = w + 1, k = format!("{k}:")));
    }
    out
}

/// `-` for an absent value.
pub(crate) fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

/// Prints the reply text as received, with a final newline.
pub(crate) fn print_raw(text: &str) {
    if text.ends_with('\n') {
        out!("{text}");
    } else {
        outln!("{text}");
    }
}

/// Parses `key=value`.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// Parses `on`/`off` (also `true`/`false`, `yes`/`no`).
pub(crate) fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("`{s}` is not on or off")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    struct Home {
        _tmp: tempfile::TempDir,
        dirs: Dirs,
    }

    fn home() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            home: Some(tmp.path().to_path_buf()),
            xdg_config: None,
            xdg_data: None,
        };
        Home { _tmp: tmp, dirs }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn conn(server: Option<&str>, token: Option<&str>) -> Conn {
        Conn {
            server: server.map(str::to_string),
            token: token.map(str::to_string),
            ca: None,
            pin: None,
            json: false,
        }
    }

    #[test]
    fn defaults_are_the_local_server_and_its_token_file() {
        let h = home();
        let s = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap();
        assert_eq!(s.server, "http://127.0.0.1:7300");
        assert_eq!(s.server_from, Source::Default);
        assert_eq!(s.token, None);
        let token_path = h
            .dirs
            .home
            .clone()
            .unwrap()
            .join(".local/share/floe/api-token");
        write(&token_path, "tok-from-data-dir\n");
        let s = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap();
        assert_eq!(s.token.as_deref(), Some("tok-from-data-dir"));
        assert_eq!(s.token_from, Source::TokenFile(token_path));
    }

    #[test]
    fn xdg_directories_win_over_home() {
        let h = home();
        let root = h.dirs.home.clone().unwrap();
        let dirs = Dirs {
            xdg_config: Some(root.join("cfg")),
            xdg_data: Some(root.join("data")),
            ..h.dirs.clone()
        };
        write(&root.join("data/floe/api-token"), "xdg-token");
        write(&root.join(".local/share/floe/api-token"), "home-token");
        write(
            &root.join("cfg/floe/config.toml"),
            "server = \"http://xdg:1\"\n",
        );
        write(
            &root.join(".config/floe/config.toml"),
            "server = \"http://home:1\"\n",
        );
        let s = resolve(&conn(None, None), &env_of(&[]), &dirs).unwrap();
        assert_eq!(s.server, "http://xdg:1");
        assert_eq!(s.token.as_deref(), Some("xdg-token"));
    }

    #[test]
    fn flags_beat_env_beat_file_beat_default() {
        let h = home();
        let root = h.dirs.home.clone().unwrap();
        write(&root.join(".local/share/floe/api-token"), "default-token");
        write(
            &root.join(".config/floe/config.toml"),
            "server = \"http://file:1\"\ntoken = \"file-token\"\n",
        );
        let env = env_of(&[("FLOE_SERVER", "http://env:1"), ("FLOE_TOKEN", "env-token")]);
        let s = resolve(
            &conn(Some("http://flag:1"), Some("flag-token")),
            &env,
            &h.dirs,
        )
        .unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://flag:1", Some("flag-token"))
        );
        assert_eq!((s.server_from, s.token_from), (Source::Flag, Source::Flag));

        let s = resolve(&conn(None, None), &env, &h.dirs).unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://env:1", Some("env-token"))
        );
        assert_eq!(s.token_from, Source::Env("FLOE_TOKEN"));

        // Server and token resolve separately: a flag for one, the file for the other.
        let s = resolve(&conn(Some("http://flag:1"), None), &env_of(&[]), &h.dirs).unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://flag:1", Some("file-token"))
        );

        // An empty variable counts as unset.
        let s = resolve(&conn(None, None), &env_of(&[("FLOE_TOKEN", "")]), &h.dirs).unwrap();
        assert_eq!(s.token.as_deref(), Some("file-token"));

        std::fs::remove_file(root.join(".config/floe/config.toml")).unwrap();
        let s = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            (DEFAULT_SERVER, Some("default-token"))
        );
    }

    #[test]
    fn token_file_in_config_is_relative_to_the_config_file() {
        let h = home();
        let root = h.dirs.home.clone().unwrap();
        write(
            &root.join(".config/floe/config.toml"),
            "token_file = \"secret\"\n",
        );
        write(&root.join(".config/floe/secret"), "  rel-token \n");
        let s = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap();
        assert_eq!(s.token.as_deref(), Some("rel-token"));
        assert_eq!(
            s.token_from,
            Source::TokenFile(root.join(".config/floe/secret"))
        );
    }

    #[test]
    fn bad_config_files_are_named_errors_unless_not_needed() {
        let h = home();
        let root = h.dirs.home.clone().unwrap();
        let cfg = root.join(".config/floe/config.toml");
        write(&cfg, "sever = \"http://typo:1\"\n");
        let err = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("config.toml") && text.contains("sever"),
            "{text}"
        );
        // Flags for both: the file is not read.
        resolve(&conn(Some("http://a:1"), Some("t")), &env_of(&[]), &h.dirs).unwrap();

        write(&cfg, "token = \"a\"\ntoken_file = \"b\"\n");
        let err = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");

        write(&cfg, "token_file = \"/nonexistent/floe-token\"\n");
        let err = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/floe-token"),
            "{err:#}"
        );

        write(&cfg, "token_file = \"empty\"\n");
        write(&root.join(".config/floe/empty"), "\n");
        let err = resolve(&conn(None, None), &env_of(&[]), &h.dirs).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn tables_and_fields_never_pass_control_characters_to_the_terminal() {
        let t = table(
            &["name"],
            &[vec!["evil\u{1b}]0;pwned\u{7}\u{1b}[2J".to_string()]],
        );
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("evil\\u{1b}]0;pwned"), "{t:?}");
        let f = fields(&[("description", "a\nb\u{0}".to_string())]);
        assert_eq!(f, "description:  a\\u{a}b\\u{0}\n");
    }

    #[test]
    fn tables_align_by_characters_without_trailing_spaces() {
        let t = table(
            &["ID", "NAME", "STATE"],
            &[
                vec!["flow_1".into(), "Température".into(), "draft".into()],
                vec!["flow_22".into(), "x".into(), String::new()],
            ],
        );
        assert_eq!(
            t,
            "ID       NAME         STATE\nflow_1   Température  draft\nflow_22  x\n"
        );
        assert_eq!(
            fields(&[("id", "a".into()), ("status", "b".into())]),
            "id:      a\nstatus:  b\n"
        );
    }

    #[test]
    fn a_401_without_a_token_says_where_tokens_come_from() {
        let unauthorized = || {
            floe_coordinator::client::error_from_reply(
                401,
                r#"{"error":{"code":"unauthorized","message":"missing bearer token","field":null}}"#,
            )
        };
        let text = format!("{:#}", explain(unauthorized(), false));
        assert!(
            text.starts_with("no API token was found: pass --token"),
            "{text}"
        );
        assert!(
            text.ends_with("unauthorized (401): missing bearer token"),
            "{text}"
        );
        // With a token sent, the server's words stand alone.
        let text = format!("{:#}", explain(unauthorized(), true));
        assert_eq!(text, "unauthorized (401): missing bearer token");
    }

    #[test]
    fn small_parsers() {
        assert_eq!(
            key_value("site=north").unwrap(),
            ("site".into(), "north".into())
        );
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
        assert!(on_off("on").unwrap());
        assert!(!on_off("off").unwrap());
        assert!(on_off("maybe").unwrap_err().contains("maybe"));
    }
}
