//! Where the CLI finds the coordinator and its token: `--url`, `--token` and `--data-dir`, or
//! their environment variables, or the admin token the coordinator left in its data directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flotilla_client::{Client, ClientOptions};

use crate::cli::GlobalArgs;

/// The name of the admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The default data directory: `$XDG_DATA_HOME/flotilla`, else `~/.local/share/flotilla`.
pub fn default_data_dir() -> Option<PathBuf> {
    default_data_dir_from(
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn default_data_dir_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(x) = xdg.filter(|p| p.is_absolute()) {
        return Some(x.join("flotilla"));
    }
    home.filter(|h| !h.as_os_str().is_empty())
        .map(|h| h.join(".local/share/flotilla"))
}

/// The data directory: `--data-dir` / `FLOTILLA_DATA_DIR`, else the default.
pub fn data_dir(global: &GlobalArgs) -> Result<PathBuf> {
    match &global.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => default_data_dir().context(
            "cannot tell where the data directory is (neither XDG_DATA_HOME nor HOME is set): \
             pass --data-dir or set FLOTILLA_DATA_DIR",
        ),
    }
}

/// The token to act with: `--token` / `FLOTILLA_TOKEN`, else the admin token in the data
/// directory.
pub fn token(global: &GlobalArgs) -> Result<String> {
    if let Some(t) = global
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(t.to_owned());
    }
    let dir = match &global.data_dir {
        Some(dir) => dir.clone(),
        None => match default_data_dir() {
            Some(dir) => dir,
            None => bail!(
                "no API token: pass --token or set FLOTILLA_TOKEN (or set FLOTILLA_DATA_DIR to \
                 the coordinator's data directory)"
            ),
        },
    };
    read_admin_token(&dir)
}

fn read_admin_token(dir: &Path) -> Result<String> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => bail!(
            "{} is empty: pass --token or set FLOTILLA_TOKEN",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no API token: pass --token or set FLOTILLA_TOKEN, or set FLOTILLA_DATA_DIR to the \
             coordinator's data directory ({} does not exist)",
            path.display()
        ),
        Err(e) => bail!(
            "cannot read the admin token from {}: {e}; pass --token or set FLOTILLA_TOKEN",
            path.display()
        ),
    }
}

/// A client of the coordinator at `--url` (or of the coordinators, when it lists several
/// separated by commas), acting with the resolved token and trusting `--ca-cert`.
pub fn client(global: &GlobalArgs) -> Result<Client> {
    let token = token(global)?;
    Ok(Client::with_options(
        &global.url,
        token,
        &client_options(global),
    )?)
}

/// The client options of `--ca-cert` / `FLOTILLA_CA_CERT`.
pub fn client_options(global: &GlobalArgs) -> ClientOptions {
    ClientOptions {
        ca_cert: global.ca_cert.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(token: Option<&str>, data_dir: Option<&Path>) -> GlobalArgs {
        GlobalArgs {
            url: "http://127.0.0.1:7171".into(),
            token: token.map(str::to_owned),
            data_dir: data_dir.map(Path::to_path_buf),
            ca_cert: None,
        }
    }

    #[test]
    fn default_data_dir_prefers_xdg_then_home() {
        assert_eq!(
            default_data_dir_from(Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/flotilla"))
        );
        assert_eq!(
            default_data_dir_from(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.local/share/flotilla"))
        );
        assert_eq!(default_data_dir_from(None, None), None);
    }

    #[test]
    fn token_flag_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "from-file\n").unwrap();
        assert_eq!(
            token(&global(Some(" tok "), Some(dir.path()))).unwrap(),
            "tok"
        );
        assert_eq!(token(&global(None, Some(dir.path()))).unwrap(), "from-file");
        assert_eq!(
            token(&global(Some(""), Some(dir.path()))).unwrap(),
            "from-file"
        );
    }

    #[test]
    fn several_coordinators_are_separated_by_commas() {
        let mut g = global(Some("t"), None);
        g.url = "http://a:7171, http://b:7171/".into();
        let c = client(&g).unwrap();
        assert_eq!(c.base_urls(), ["http://a:7171", "http://b:7171"]);
        assert_eq!(c.base_url(), "http://a:7171");
        g.url = "http://a:7171,b:7171".into();
        let err = client(&g).unwrap_err().to_string();
        assert!(err.contains("\"b:7171\""), "{err}");
    }

    #[test]
    fn missing_token_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = token(&global(None, Some(dir.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--token"), "{err}");
        assert!(err.contains("FLOTILLA_DATA_DIR"), "{err}");
        assert!(!err.contains('\n'));
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "  \n").unwrap();
        let err = token(&global(None, Some(dir.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
