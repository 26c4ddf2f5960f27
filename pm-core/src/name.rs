//! Service names and path templates.
//!
//! Names become file names inside the state directory, so validation here is also the
//! path-traversal guard: no `/`, no leading `.` or `-`, nothing outside `[A-Za-z0-9._@-]`.
//! Templates let one `--pidfile` or `PM_PIDFILE` serve many instances of a service, the way
//! systemd's `php-fpm@8.3` style units do.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest accepted name, so `NAME.json.tmp.PID` stays far below NAME_MAX (255).
pub const MAX_LEN: usize = 128;

/// A validated service name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates `s` as a NAME; the error names the offending character.
    pub fn new(s: &str) -> Result<Name> {
        let bad = |reason: String| Error::InvalidName {
            name: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        if s.chars().count() > MAX_LEN {
            return Err(bad(format!("longer than {MAX_LEN} characters")));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._@-".contains(*c)))
        {
            return Err(bad(format!(
                "character {c:?} is not allowed (use A-Z a-z 0-9 . _ @ -)"
            )));
        }
        if s.starts_with('.') || s.starts_with('-') {
            return Err(bad("must not start with '.' or '-'".into()));
        }
        // `{instance}` may stand for a whole directory in a template: `.` and `..` would
        // climb out of (or stay in) the template's directory instead of naming one.
        if let Some((_, inst @ ("." | ".."))) = s.split_once('@') {
            return Err(bad(format!("instance {inst:?} is not allowed")));
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `@` (the whole name when there is none).
    pub fn service(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(s, _)| s)
    }

    /// The part after the first `@`, if any.
    pub fn instance(&self) -> Option<&str> {
        self.0.split_once('@').map(|(_, i)| i)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Name::new(s)
    }
}

/// The PID-file template for names without a record: `--pidfile`, else `$PM_PIDFILE`;
/// its syntax is checked up front so a bad template is a usage error, not a per-name one.
pub fn pidfile_template(explicit: Option<&str>) -> Result<Option<String>> {
    let t = explicit
        .map(str::to_string)
        .or_else(|| std::env::var("PM_PIDFILE").ok().filter(|s| !s.is_empty()));
    if let Some(t) = &t {
        check_template(t)?;
    }
    Ok(t)
}

/// Checks a template's syntax without a name, so bad templates are usage errors up front.
pub fn check_template(template: &str) -> Result<()> {
    // `x@y` supplies every placeholder; only syntax errors remain.
    let probe = Name("x@y".into());
    expand(template, &probe, Path::new("/")).map(|_| ())
}

/// Expands `{name}`, `{service}`, `{instance}`, `{state_dir}`, `{{` and `}}` in `template`.
pub fn expand(template: &str, name: &Name, state_dir: &Path) -> Result<PathBuf> {
    let bad = |reason: String| Error::InvalidTemplate {
        template: template.to_string(),
        reason,
    };
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(bad("unmatched '}' (write '}}' for a literal brace)".into()));
        } else {
            let Some(end) = tail.find('}') else {
                return Err(bad(format!(
                    "unclosed brace in {tail:?} (write '{{{{' for a literal brace)"
                )));
            };
            let key = &tail[1..end];
            match key {
                "name" => out.push_str(name.as_str()),
                "service" => out.push_str(name.service()),
                "instance" => match name.instance() {
                    Some(i) => out.push_str(i),
                    None => {
                        return Err(bad(format!(
                            "{{instance}} needs a name of the form service@instance, got {name:?}",
                            name = name.as_str()
                        )))
                    }
                },
                "state_dir" => out.push_str(&state_dir.to_string_lossy()),
                other => {
                    return Err(bad(format!(
                        "unknown placeholder {{{other}}} (known: {{name}} {{service}} {{instance}} {{state_dir}})"
                    )))
                }
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(bad("expands to an empty path".into()));
    }
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["web", "php-fpm@8.3", "a", "A.b_c-d@e", "x@", "9lives"] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        assert!(Name::new(&"a".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn rejects_bad_names_naming_the_character() {
        let err = Name::new("we/b").unwrap_err().to_string();
        assert!(err.contains("'/'"), "{err}");
        let err = Name::new("a b").unwrap_err().to_string();
        assert!(err.contains("' '"), "{err}");
        for bad in [
            "",
            ".hidden",
            "-x",
            "..",
            "a\0b",
            "ü",
            "svc@..",
            "svc@.",
            &"a".repeat(MAX_LEN + 1),
        ] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
        let err = Name::new("svc@..").unwrap_err().to_string();
        assert!(err.contains("\"..\""), "{err}");
        assert!(Name::new("svc@..x").is_ok() && Name::new("svc@8.3").is_ok());
    }

    #[test]
    fn splits_service_and_instance() {
        assert_eq!(n("php-fpm@8.3").service(), "php-fpm");
        assert_eq!(n("php-fpm@8.3").instance(), Some("8.3"));
        assert_eq!(n("web").service(), "web");
        assert_eq!(n("web").instance(), None);
        assert_eq!(n("a@b@c").instance(), Some("b@c"));
    }

    #[test]
    fn expands_every_placeholder() {
        let p = expand(
            "{state_dir}/{service}/{instance}/{name}.pid",
            &n("php-fpm@8.3"),
            Path::new("/run/pm"),
        )
        .unwrap();
        assert_eq!(p, PathBuf::from("/run/pm/php-fpm/8.3/php-fpm@8.3.pid"));
        let p = expand(
            "/run/php/php{instance}-fpm.pid",
            &n("php-fpm@8.2"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(p, PathBuf::from("/run/php/php8.2-fpm.pid"));
    }

    #[test]
    fn doubled_braces_are_literal() {
        let p = expand("/tmp/{{x}}-{name}", &n("web"), Path::new("/")).unwrap();
        assert_eq!(p, PathBuf::from("/tmp/{x}-web"));
    }

    #[test]
    fn template_errors_name_the_problem() {
        let e = expand("/run/{nmae}.pid", &n("web"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("{nmae}"), "{e}");
        let e = expand("/run/{name.pid", &n("web"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unclosed"), "{e}");
        let e = expand("/run/}x", &n("web"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unmatched"), "{e}");
        let e = expand("/run/{instance}.pid", &n("web"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("service@instance"), "{e}");
        assert!(check_template("/run/{instance}.pid").is_ok());
        assert!(check_template("/run/{bogus}").is_err());
    }
}
