//! Argument templates: `{{payload.a.b}}`, `{{payload}}`, `{{task.id}}`, `{{task.type}}` and
//! `{{task.attempt}}` filled inside each argv element.
//!
//! The result is an argv, never a shell string: whatever a payload holds (`; rm -rf /`,
//! `$(…)`, quotes, newlines) arrives in the program as one argument, byte for byte. JSON
//! strings are inserted as their text; numbers, booleans, null, arrays and objects as their
//! compact JSON. Path segments that are numbers index arrays (`{{payload.files.0}}`).
//! Whitespace inside the braces is ignored (`{{ task.id }}`).
//!
//! Environment variables from payloads ([`render_env`]): a template lists the names a task may
//! set (`payload_env`); the task sets them in its payload's `env` object. Any other name there
//! is refused, naming it and the names allowed, so a payload can never set `LD_PRELOAD`,
//! `PATH` or anything else the template does not list. A template that lists none leaves the
//! payload's `env` field alone (it is then just data).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::TemplateError;

/// The task a command runs for, as templates see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskVars {
    /// `{{task.id}}`.
    pub id: String,
    /// `{{task.type}}`.
    pub type_: String,
    /// `{{task.attempt}}`: 1 for the first attempt.
    pub attempt: u32,
}

/// Fills the placeholders of every argument; see the module documentation.
///
/// Fails on the first unknown placeholder, missing payload field, unclosed `{{`, or a value with a
/// NUL byte, naming it.
pub fn render_args(
    args: &[String],
    payload: &Value,
    task: &TaskVars,
) -> Result<Vec<String>, TemplateError> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| render_one(i, arg, payload, task))
        .collect()
}

/// Longest value a payload may give an environment variable.
pub const MAX_ENV_VALUE: usize = 64 * 1024;

/// The environment variables a task sets through its payload's `env` object, each of whose names
/// must be in `allowed`; see the module documentation.
///
/// Values are strings, or numbers and booleans (as their JSON text). With `allowed` empty the
/// payload is not looked at; a payload that is not an object, or has no `env`, sets nothing.
pub fn render_env(
    allowed: &[String],
    payload: &Value,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let mut out = BTreeMap::new();
    if allowed.is_empty() {
        return Ok(out);
    }
    let Some(env) = payload.as_object().and_then(|p| p.get("env")) else {
        return Ok(out);
    };
    let Value::Object(env) = env else {
        return Err(TemplateError::EnvNotObject);
    };
    for (name, value) in env {
        if !allowed.iter().any(|a| a == name) {
            return Err(TemplateError::EnvNotAllowed {
                name: name.clone(),
                allowed: allowed.join(", "),
            });
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(TemplateError::EnvValue {
                    name: name.clone(),
                    reason: "must be a string, a number or a boolean",
                });
            }
        };
        if text.contains('\0') {
            return Err(TemplateError::EnvValue {
                name: name.clone(),
                reason: "contains a NUL byte",
            });
        }
        if text.len() > MAX_ENV_VALUE {
            return Err(TemplateError::EnvValue {
                name: name.clone(),
                reason: "is longer than 64 KiB",
            });
        }
        out.insert(name.clone(), text);
    }
    Ok(out)
}

fn render_one(
    arg_index: usize,
    template: &str,
    payload: &Value,
    task: &TaskVars,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unterminated { arg: arg_index })?;
        let placeholder = after[..end].trim();
        resolve(arg_index, placeholder, payload, task, &mut out)?;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(TemplateError::NulByte { arg: arg_index });
    }
    Ok(out)
}

fn resolve(
    arg: usize,
    placeholder: &str,
    payload: &Value,
    task: &TaskVars,
    out: &mut String,
) -> Result<(), TemplateError> {
    let unknown = || TemplateError::UnknownPlaceholder {
        arg,
        placeholder: placeholder.to_owned(),
    };
    let mut segments = placeholder.split('.');
    match segments.next() {
        Some("payload") => {
            let mut value = payload;
            for segment in segments {
                let next = match value {
                    Value::Object(map) => map.get(segment),
                    Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                };
                value = next.ok_or_else(|| TemplateError::MissingField {
                    arg,
                    placeholder: placeholder.to_owned(),
                    missing: segment.to_owned(),
                })?;
            }
            match value {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
        Some("task") => {
            let field = segments.next().ok_or_else(unknown)?;
            if segments.next().is_some() {
                return Err(unknown());
            }
            match field {
                "id" => out.push_str(&task.id),
                "type" => out.push_str(&task.type_),
                "attempt" => out.push_str(&task.attempt.to_string()),
                _ => return Err(unknown()),
            }
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task() -> TaskVars {
        TaskVars {
            id: "t-1".into(),
            type_: "review".into(),
            attempt: 2,
        }
    }

    fn render(args: &[&str], payload: Value) -> Result<Vec<String>, TemplateError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        render_args(&args, &payload, &task())
    }

    #[test]
    fn fills_placeholders_inside_arguments() {
        let payload = json!({"repo": {"url": "https://x/y", "depth": 3}, "files": ["a.rs", "b.rs"], "ok": true});
        let out = render(
            &[
                "--repo={{payload.repo.url}}",
                "{{ payload.repo.depth }}",
                "{{payload.files}}",
                "{{payload.files.1}}",
                "{{task.id}}/{{task.type}}#{{task.attempt}}",
                "{{payload.ok}}",
                "plain } { text",
            ],
            payload,
        )
        .unwrap();
        assert_eq!(
            out,
            [
                "--repo=https://x/y",
                "3",
                r#"["a.rs","b.rs"]"#,
                "b.rs",
                "t-1/review#2",
                "true",
                "plain } { text"
            ]
        );
    }

    #[test]
    fn whole_payload_is_compact_json() {
        let out = render(&["{{payload}}"], json!({"a": [1, null]})).unwrap();
        assert_eq!(out, [r#"{"a":[1,null]}"#]);
    }

    #[test]
    fn hostile_strings_are_inserted_verbatim() {
        let evil = "x; rm -rf /tmp/x $(touch /tmp/pwned) `id` \"' {{task.id}}";
        let out = render(&["{{payload.q}}"], json!({"q": evil})).unwrap();
        // Inserted text is not scanned again for placeholders.
        assert_eq!(out, [evil]);
    }

    #[test]
    fn payload_env_takes_only_listed_names() {
        let allowed: Vec<String> = vec!["MODEL".into(), "DEPTH".into(), "FAST".into()];
        let env = render_env(
            &allowed,
            &json!({"env": {"MODEL": "opus; $(id) 'x' \"y\"\nz", "DEPTH": 3, "FAST": true}, "other": 1}),
        )
        .unwrap();
        assert_eq!(env["MODEL"], "opus; $(id) 'x' \"y\"\nz");
        assert_eq!(env["DEPTH"], "3");
        assert_eq!(env["FAST"], "true");
        // Nothing asked: nothing set.
        assert!(render_env(&allowed, &json!({"a": 1})).unwrap().is_empty());
        assert!(render_env(&allowed, &json!("text")).unwrap().is_empty());
        // A template that lists nothing does not read `env` at all.
        assert!(
            render_env(&[], &json!({"env": {"LD_PRELOAD": "/tmp/x.so"}}))
                .unwrap()
                .is_empty()
        );
        let err = render_env(
            &allowed,
            &json!({"env": {"MODEL": "m", "LD_PRELOAD": "/x.so"}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::EnvNotAllowed {
                name: "LD_PRELOAD".into(),
                allowed: "MODEL, DEPTH, FAST".into()
            }
        );
        assert!(err.to_string().contains("LD_PRELOAD"), "{err}");
        assert!(err.to_string().contains("MODEL, DEPTH, FAST"), "{err}");
        assert!(matches!(
            render_env(&allowed, &json!({"env": {"PATH": "/tmp"}})),
            Err(TemplateError::EnvNotAllowed { .. })
        ));
        assert_eq!(
            render_env(&allowed, &json!({"env": ["MODEL"]})),
            Err(TemplateError::EnvNotObject)
        );
        assert!(matches!(
            render_env(&allowed, &json!({"env": {"MODEL": {"a": 1}}})),
            Err(TemplateError::EnvValue { .. })
        ));
        assert!(matches!(
            render_env(&allowed, &json!({"env": {"MODEL": "a\u{0}b"}})),
            Err(TemplateError::EnvValue { .. })
        ));
        assert!(matches!(
            render_env(
                &allowed,
                &json!({"env": {"MODEL": "x".repeat(MAX_ENV_VALUE + 1)}})
            ),
            Err(TemplateError::EnvValue { .. })
        ));
    }

    #[test]
    fn errors_name_the_placeholder() {
        let err = render(&["a", "{{payload.nope}}"], json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingField {
                arg: 1,
                placeholder: "payload.nope".into(),
                missing: "nope".into()
            }
        );
        assert!(err.to_string().contains("payload.nope"), "{err}");
        let err = render(&["{{task.owner}}"], json!({})).unwrap_err();
        assert!(
            matches!(err, TemplateError::UnknownPlaceholder { ref placeholder, .. } if placeholder == "task.owner")
        );
        assert!(err.to_string().contains("{{task.owner}}"), "{err}");
        assert!(matches!(
            render(&["{{env.HOME}}"], json!({})),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            render(&["{{task}}"], json!({})),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            render(&["{{task.id.x}}"], json!({})),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert_eq!(
            render(&["x{{payload"], json!({})),
            Err(TemplateError::Unterminated { arg: 0 })
        );
        assert!(matches!(
            render(&["{{payload.a.b}}"], json!({"a": 1})),
            Err(TemplateError::MissingField { .. })
        ));
        assert!(matches!(
            render(&["{{payload.a.5}}"], json!({"a": [1]})),
            Err(TemplateError::MissingField { .. })
        ));
        assert_eq!(
            render(&["{{payload.s}}"], json!({"s": "a\0b"})),
            Err(TemplateError::NulByte { arg: 0 })
        );
    }
}
