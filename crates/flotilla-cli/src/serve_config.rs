//! `flotilla serve --config FILE` (and `up`, and `FLOTILLA_CONFIG`): the coordinator's options
//! in a TOML file, for a service manager or a machine image.
//!
//! ```toml
//! listen = "0.0.0.0:7171"
//! store = "postgres://flotilla@db.internal:5432/flotilla"
//! bus = "redis://redis.internal:6379"
//! advertise_url = "http://10.0.0.5:7171"
//! lease_ttl = "3s"
//! host_timeout = "10s"
//! work_root = ["/srv/agents"]      # a repeatable option takes an array
//! tls_cert = "/etc/flotilla/cert.pem"
//! ```
//!
//! Each key is one of `flotilla serve`'s long options (`_` or `-` alike) and takes what the
//! option takes. The command line wins over the environment, which wins over the file, which
//! wins over the defaults: the file's settings are added to the command line only for options
//! that neither sets. A key that is not an option is an error naming the file and the key.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::CommandFactory;
use clap::parser::ValueSource;

use crate::cli::Cli;

/// The command line with the settings of `--config FILE` added where the command line and the
/// environment leave an option unset; the command line as it is for other commands, without a
/// file, or when it does not parse (clap then says what is wrong).
pub fn apply(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let command = Cli::command();
    let Ok(matches) = command.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(args);
    };
    if name != "serve" && name != "up" {
        return Ok(args);
    }
    let Some(path) = sub.get_one::<PathBuf>("config").cloned() else {
        return Ok(args);
    };
    let at = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the config file {at}: {e}"))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{at}: not a TOML file of settings: {}", e.message()))?;
    let serve = command
        .find_subcommand(name)
        .expect("the subcommand parsed");
    let mut extra = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        else {
            return Err(format!(
                "{at}: {key:?} is not a setting; the settings are `flotilla {name}`'s long options \
                 (see `flotilla {name} --help`), e.g. store, bus, listen, lease_ttl"
            ));
        };
        if matches!(
            sub.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        extra.push(OsString::from(format!("--{long}")));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{at}: {key} must be a string, a number, a boolean or an array of them"
                    ));
                }
            };
            if !takes_value {
                return Err(format!("{at}: {key} is a switch: give it true or false"));
            }
            extra.push(OsString::from(format!("--{long}={text}")));
        }
    }
    let mut args = args;
    args.extend(extra);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use clap::Parser;

    fn with_file(text: &str, args: &[&str]) -> Result<Cli, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["flotilla".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(path.into_os_string());
        let args = apply(argv)?;
        Cli::try_parse_from(args).map_err(|e| e.to_string())
    }

    fn serve(cli: Cli) -> crate::cli::ServeArgs {
        match cli.command {
            Command::Serve(s) => s,
            Command::Up(u) => u.serve,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_sets_what_the_command_line_leaves_unset() {
        let s = serve(
            with_file(
                "store = \"sqlite:/tmp/x.db\"\nlisten = \"127.0.0.1:9001\"\nlease_ttl = \"5s\"\n\
                 host-timeout = \"20s\"\ncapacity_cpu = 1.5\nwork_root = [\"/a\", \"/b\"]\n",
                &["serve", "--listen", "127.0.0.1:9002"],
            )
            .unwrap(),
        );
        assert_eq!(s.store.as_deref(), Some("sqlite:/tmp/x.db"));
        // The command line wins.
        assert_eq!(s.listen.port(), 9002);
        assert_eq!(s.lease_ttl, std::time::Duration::from_secs(5));
        assert_eq!(s.host_timeout, std::time::Duration::from_secs(20));
        assert_eq!(s.resources.capacity.cpu, Some(1.5));
        assert_eq!(
            s.security.work_roots,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn up_takes_it_too() {
        let cli = with_file("bus = \"redis://127.0.0.1:6379\"\n", &["up", "fleet.toml"]).unwrap();
        let s = serve(cli);
        assert_eq!(s.bus.bus, "redis://127.0.0.1:6379");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_file_and_key() {
        let err = with_file("stoer = \"x\"\n", &["serve"]).err().unwrap();
        assert!(
            err.contains("serve.toml: \"stoer\" is not a setting"),
            "{err}"
        );
        let err = with_file("store = { a = 1 }\n", &["serve"]).err().unwrap();
        assert!(err.contains("store must be a string"), "{err}");
        let err = with_file("store = \n", &["serve"]).err().unwrap();
        assert!(err.contains("not a TOML file"), "{err}");
        let err = with_file("config = \"other.toml\"\n", &["serve"])
            .err()
            .unwrap();
        assert!(err.contains("\"config\" is not a setting"), "{err}");
        // A value the option refuses is refused as on the command line.
        let err = with_file("listen = \"nowhere\"\n", &["serve"])
            .err()
            .unwrap();
        assert!(err.contains("nowhere"), "{err}");
    }
}
