//! The MCP tool handlers (rmcp). Each one is thin: parse the arguments, call the storage or the
//! sandbox, map the outcome to a result. A tool that ran and failed returns a result with
//! `isError: true` and a JSON body with `status: "error"` and an `error` message; malformed
//! arguments are JSON-RPC `invalid_params` errors (`params`). `progress` reports long calls.

pub mod logging;
mod params;
mod progress;

use std::sync::{Arc, Mutex, PoisonError};

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use crate::config::Config;
use crate::environment::{EnvSpec, Environments};
use crate::error::Error;
use crate::limits::Limits;
use crate::packages::{install_plan, validate_lookup_names, validate_requirements};
use crate::sandbox::engine::ContainerEngine;
use crate::sandbox::helpers::PackageStatus;
use crate::sandbox::{Job, RunOutcome, Sandbox, SandboxSettings};
use crate::storage::Storage;
use crate::tools::{
    AppendToCodeFileArgs, CheckResult, ConfigReport, ConfigResult, ConfigureEnvironmentArgs,
    ConfigureResult, EnvReport, ExecuteCodeArgs, ExecuteCodeFileArgs, FileInfo, FilePathArgs,
    FileResult, InitializeCodeFileArgs, InstallResult, PackagesArgs, RunResult, Status,
};
use params::Parameters;
use progress::Progress;

const INSTRUCTIONS: &str = "Runs Python code in short-lived, offline, locked-down Docker \
containers. execute_code stores code as a file in the storage directory and runs it there; files \
the code writes to its working directory are kept. Build long programs with initialize_code_file, \
append_to_code_file and execute_code_file. Runs are offline: add packages with \
install_dependencies (they persist), look them up with check_installed_packages. \
get_environment_config shows the environment and the limits (time, memory, output) in force.";

/// Shared state of the server.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub storage: Storage,
    pub sandbox: Arc<Sandbox>,
    envs: Mutex<Environments>,
}

impl State {
    pub fn new(config: Config, engine: Arc<dyn ContainerEngine>) -> Result<Self, Error> {
        let storage = Storage::new(
            config.storage_dir.clone(),
            config.limits.max_code_bytes,
            config.run_as,
        )?;
        let sandbox = Sandbox::new(
            SandboxSettings {
                images: config.images.clone(),
                run_as: config.run_as,
                host_workdir: config.host_storage_dir.to_string_lossy().into_owned(),
                workdir: config.storage_dir.to_string_lossy().into_owned(),
                install: config.install_source.clone(),
                env_limits: config.install_limits.clone(),
                max_concurrent: config.max_concurrent_runs,
                run_limits: config.limits.clone(),
                pool_size: config.pool_size,
                preimport: config.preimport.clone(),
            },
            engine,
        );
        Ok(State {
            envs: Mutex::new(config.environments.clone()),
            config,
            storage,
            sandbox,
        })
    }

    /// Starts filling the pool for the active environment (in the background).
    pub fn warm_up(&self) {
        self.sandbox.warm_up(self.envs().active_spec());
    }

    fn envs(&self) -> Environments {
        self.envs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The MCP server.
#[derive(Debug, Clone)]
pub struct CodeExecutor {
    state: Arc<State>,
    tool_router: ToolRouter<Self>,
}

/// A structured result; `isError` when `failed`.
fn respond<T: Serialize>(value: &T, failed: bool) -> Result<CallToolResult, ErrorData> {
    let json = serde_json::to_value(value)
        .map_err(|e| ErrorData::internal_error(format!("cannot encode the result: {e}"), None))?;
    Ok(if failed {
        CallToolResult::structured_error(json)
    } else {
        CallToolResult::structured(json)
    })
}

/// The `error` text of a run that did not succeed.
fn run_failure(o: &RunOutcome, limits: &Limits) -> Option<String> {
    if o.cancelled {
        Some("the run was cancelled by the client; its container was killed".to_string())
    } else if o.oom_killed {
        Some(format!(
            "the program ran out of memory and was killed (limit {} MiB, setting MEMORY_LIMIT)",
            limits.memory_bytes >> 20
        ))
    } else if o.timed_out {
        Some(format!(
            "the program did not finish within {} s and was killed (the call's timeout, at most \
             the server's EXECUTION_TIMEOUT); output printed before that is kept",
            limits.timeout_secs
        ))
    } else {
        match o.exit_code {
            Some(0) => None,
            Some(127) if o.stderr.contains("failed to run command") => Some(
                "the environment's interpreter does not exist in its image: select the \
                 environment with configure_environment to create it"
                    .to_string(),
            ),
            Some(code) => Some(format!("the program exited with code {code}; see stderr")),
            None => Some("the program was killed before it exited".to_string()),
        }
    }
}

impl CodeExecutor {
    pub fn new(state: Arc<State>) -> Self {
        CodeExecutor {
            state,
            tool_router: Self::tool_router(),
        }
    }

    /// Runs a stored file's `code` in the active environment.
    async fn run_stored(
        &self,
        name: String,
        code: &str,
        timeout: Option<u64>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let state = &self.state;
        let env = state.envs().active_spec().clone();
        let path = state.storage.path_of(&name).to_string_lossy().into_owned();
        let limits = &state.config.limits.with_call_timeout(timeout);
        let before = state.storage.snapshot();
        let progress = Progress::start(ctx, format!("running {name}"), None);
        let job = Job {
            last_line: Some(progress.last_line()),
            ..Job::run(&env, &path, code, limits)
        };
        let mut result = RunResult {
            file_path: Some(path.clone()),
            generated_filename: Some(name),
            environment: Some(env.to_string()),
            timeout_secs: Some(limits.timeout_secs),
            ..Default::default()
        };
        let outcome = state.sandbox.execute(job, &ctx.ct).await;
        // No progress notification after the result.
        progress.stop().await;
        match outcome {
            Ok(o) => {
                let error = run_failure(&o, limits);
                let mut output = o.stdout.clone();
                if !o.stderr.is_empty() {
                    if !output.is_empty() && !output.ends_with('\n') {
                        output.push('\n');
                    }
                    output.push_str(&o.stderr);
                }
                result.status = if error.is_none() {
                    Status::Success
                } else {
                    Status::Error
                };
                result.error = error;
                result.output = Some(output);
                result.stdout = Some(o.stdout);
                result.stderr = Some(o.stderr);
                result.exit_code = o.exit_code;
                result.duration_ms = Some(o.duration.as_millis() as u64);
                result.timed_out = Some(o.timed_out);
                result.oom_killed = Some(o.oom_killed);
                result.truncated = Some(o.truncated);
                result.cancelled = Some(o.cancelled);
                let changed = crate::storage::changed_files(&before, &state.storage.snapshot());
                let images = self.images_of(&changed);
                result.files = Some(
                    changed
                        .iter()
                        .map(|c| FileInfo {
                            name: c.name.clone(),
                            path: state
                                .storage
                                .path_of(&c.name)
                                .to_string_lossy()
                                .into_owned(),
                            size: c.size,
                            created: c.created,
                        })
                        .collect(),
                );
                result.images = Some(images.iter().map(|(name, _)| name.clone()).collect());
                let failed = result.status == Status::Error;
                let mut response = respond(&result, failed)?;
                response.content.extend(
                    images
                        .into_iter()
                        .map(|(_, png)| ContentBlock::image(png, "image/png")),
                );
                Ok(response)
            }
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(e.to_string());
                respond(&result, true)
            }
        }
    }

    /// The PNG files among `changed`, base64-encoded, within the count and size caps.
    fn images_of(&self, changed: &[crate::storage::Changed]) -> Vec<(String, String)> {
        use base64::Engine;
        let config = &self.state.config;
        changed
            .iter()
            .filter(|c| {
                c.name.to_ascii_lowercase().ends_with(".png") && c.size <= config.max_image_bytes
            })
            .filter_map(|c| {
                let bytes = self
                    .state
                    .storage
                    .read_bytes(&c.name, config.max_image_bytes)
                    .ok()?;
                bytes.starts_with(b"\x89PNG\r\n\x1a\n").then(|| {
                    (
                        c.name.clone(),
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    )
                })
            })
            .take(config.max_images)
            .collect()
    }

    fn file_error(e: impl Into<Error>) -> Result<CallToolResult, ErrorData> {
        let result = FileResult {
            status: Status::Error,
            error: Some(e.into().to_string()),
            ..Default::default()
        };
        respond(&result, true)
    }
}

#[tool_router]
impl CodeExecutor {
    /// Store Python code as a new .py file in the storage directory and run it in a fresh,
    /// offline, locked-down container of the active environment. The working directory is the
    /// storage directory: files the code writes there are kept.
    #[tool(
        annotations(title = "Run Python code", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<RunResult>()
    )]
    async fn execute_code(
        &self,
        Parameters(args): Parameters<ExecuteCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let stored = match self
            .state
            .storage
            .create(args.filename.as_deref(), &args.code)
        {
            Ok(stored) => stored,
            Err(e) => {
                let result = RunResult {
                    status: Status::Error,
                    error: Some(e.to_string()),
                    ..Default::default()
                };
                return respond(&result, true);
            }
        };
        self.run_stored(stored.name, &args.code, args.timeout, &ctx)
            .await
    }

    /// Run a file stored earlier (by execute_code or initialize_code_file), given by its bare
    /// name or the path this server returned.
    #[tool(
        annotations(title = "Run a stored Python file", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<RunResult>()
    )]
    async fn execute_code_file(
        &self,
        Parameters(args): Parameters<ExecuteCodeFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let storage = &self.state.storage;
        let loaded = storage
            .resolve(&args.file_path)
            .and_then(|name| storage.read(&name).map(|code| (name, code)));
        match loaded {
            Ok((name, code)) => self.run_stored(name, &code, args.timeout, &ctx).await,
            Err(e) => {
                let result = RunResult {
                    status: Status::Error,
                    error: Some(e.to_string()),
                    file_path: Some(args.file_path),
                    ..Default::default()
                };
                respond(&result, true)
            }
        }
    }

    /// Create a new .py file in the storage directory (for building up a long program) and
    /// return its path.
    #[tool(
        annotations(title = "Create a code file", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<FileResult>()
    )]
    async fn initialize_code_file(
        &self,
        Parameters(args): Parameters<InitializeCodeFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self
            .state
            .storage
            .create(args.filename.as_deref(), &args.content)
        {
            Ok(f) => respond(
                &FileResult {
                    message: Some(format!("created {}", f.name)),
                    file_path: Some(f.path.to_string_lossy().into_owned()),
                    filename: Some(f.name),
                    size: Some(args.content.len() as u64),
                    ..Default::default()
                },
                false,
            ),
            Err(e) => Self::file_error(e),
        }
    }

    /// Append content to a file created earlier.
    #[tool(
        annotations(title = "Append to a code file", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<FileResult>()
    )]
    async fn append_to_code_file(
        &self,
        Parameters(args): Parameters<AppendToCodeFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let storage = &self.state.storage;
        let appended = storage.resolve(&args.file_path).and_then(|name| {
            storage
                .append(&name, &args.content)
                .map(|size| (name, size))
        });
        match appended {
            Ok((name, size)) => respond(
                &FileResult {
                    message: Some(format!("appended {} bytes to {name}", args.content.len())),
                    file_path: Some(storage.path_of(&name).to_string_lossy().into_owned()),
                    size: Some(size),
                    ..Default::default()
                },
                false,
            ),
            Err(e) => Self::file_error(e),
        }
    }

    /// Return the content of a file in the storage directory.
    #[tool(
        annotations(title = "Read a code file", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<FileResult>()
    )]
    async fn read_code_file(
        &self,
        Parameters(args): Parameters<FilePathArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let storage = &self.state.storage;
        let read = storage
            .resolve(&args.file_path)
            .and_then(|name| storage.read(&name).map(|content| (name, content)));
        match read {
            Ok((name, content)) => respond(
                &FileResult {
                    file_path: Some(storage.path_of(&name).to_string_lossy().into_owned()),
                    size: Some(content.len() as u64),
                    content: Some(content),
                    ..Default::default()
                },
                false,
            ),
            Err(e) => Self::file_error(e),
        }
    }

    /// Install packages into the active environment with its own installer (pip, uv, or conda
    /// with a pip fallback). Each entry is a requirement such as "pandas>=2" or
    /// "requests[socks]"; options, URLs and paths are refused. Installed packages stay for
    /// later runs. Only the install container has network access.
    #[tool(
        annotations(title = "Install Python packages", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        output_schema = schema_for_output::<InstallResult>()
    )]
    async fn install_dependencies(
        &self,
        Parameters(args): Parameters<PackagesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let env = self.state.envs().active_spec().clone();
        let mut result = InstallResult {
            env_type: Some(env.env_type),
            environment: Some(env.to_string()),
            ..Default::default()
        };
        let reqs = match validate_requirements(&args.packages) {
            Ok(reqs) => reqs,
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(e.to_string());
                return respond(&result, true);
            }
        };
        let plan = install_plan(&env, &reqs);
        let total = reqs.len();
        let progress = Progress::start(
            &ctx,
            format!("installing {total} package(s) into {env}"),
            None,
        );
        let outcome = self
            .state
            .sandbox
            .install(
                &env,
                &reqs,
                &plan,
                &self.state.config.install_limits,
                &ctx.ct,
                progress.last_line(),
            )
            .await;
        progress.stop().await;
        // Runs from now on start on interpreters that never saw the old environment.
        self.state.sandbox.flush_pool();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(e.to_string());
                return respond(&result, true);
            }
        };
        let (ok, failed): (Vec<_>, Vec<_>) = outcome
            .packages
            .iter()
            .partition(|p| p.status != PackageStatus::Failed);
        let run = &outcome.run;
        result.warnings = Some(
            run.stderr
                .lines()
                .filter(|l| l.to_ascii_lowercase().contains("warning"))
                .map(str::to_string)
                .collect(),
        );
        result.installed_packages = Some(ok.iter().map(|p| p.requirement.clone()).collect());
        result.failed_packages = Some(failed.iter().map(|p| p.requirement.clone()).collect());
        result.output = Some(run.stderr.clone());
        result.duration_ms = Some(run.duration.as_millis() as u64);
        result.timed_out = Some(run.timed_out);
        if !failed.is_empty() {
            result.status = Status::Error;
            result.error = Some(if run.timed_out {
                format!(
                    "the install did not finish within {} s (setting INSTALL_TIMEOUT)",
                    self.state.config.install_limits.timeout_secs
                )
            } else if run.cancelled {
                "the install was cancelled by the client".to_string()
            } else {
                format!(
                    "could not install {}; see output",
                    failed
                        .iter()
                        .map(|p| p.requirement.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        result.packages = Some(outcome.packages);
        let failed = result.status == Status::Error;
        respond(&result, failed)
    }

    /// Check whether packages are installed in the active environment. Accepts distribution
    /// names (python-dateutil, scikit-learn) and import names (dateutil, sklearn); reports the
    /// distribution and version of each. Runs offline; nothing is imported.
    #[tool(
        annotations(title = "Check installed packages", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<CheckResult>()
    )]
    async fn check_installed_packages(
        &self,
        Parameters(args): Parameters<PackagesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let env = self.state.envs().active_spec().clone();
        let mut result = CheckResult {
            env_type: Some(env.env_type),
            environment: Some(env.to_string()),
            ..Default::default()
        };
        let checked = match validate_lookup_names(&args.packages) {
            Ok(names) => self
                .state
                .sandbox
                .check(&env, &names, &self.state.config.limits, &ctx.ct)
                .await
                .map_err(Error::from),
            Err(e) => Err(e.into()),
        };
        match checked {
            Ok(details) => {
                let missing: Vec<String> = details
                    .iter()
                    .filter(|d| !d.installed)
                    .map(|d| d.package.clone())
                    .collect();
                result.all_installed = Some(missing.is_empty());
                result.not_installed = Some(missing);
                result.package_details = Some(details);
                respond(&result, false)
            }
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(e.to_string());
                respond(&result, true)
            }
        }
    }

    /// Switch the active environment: type venv, venv-uv or conda, with an optional environment
    /// name/path inside that type's image. An environment that does not exist yet is created
    /// (persistent, like the default ones).
    #[tool(
        annotations(title = "Switch the Python environment", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ConfigureResult>()
    )]
    async fn configure_environment(
        &self,
        Parameters(args): Parameters<ConfigureEnvironmentArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let images = &self.state.config.images;
        let spec = match EnvSpec::new(args.env_type, args.location()) {
            Ok(spec) => spec,
            Err(e) => {
                let result = ConfigureResult {
                    status: Status::Error,
                    error: Some(e.to_string()),
                    ..Default::default()
                };
                return respond(&result, true);
            }
        };
        let sandbox = &self.state.sandbox;
        let prepared = match sandbox.check_image(&spec).await {
            Ok(()) => {
                let progress = Progress::start(&ctx, format!("preparing {spec}"), None);
                let prepared = sandbox
                    .prepare_env(&spec, true, &self.state.config.install_limits, &ctx.ct)
                    .await;
                progress.stop().await;
                prepared
            }
            Err(e) => Err(e),
        };
        let created = match prepared {
            Ok(created) => created,
            Err(e) => {
                let result = ConfigureResult {
                    status: Status::Error,
                    error: Some(format!("not switched: {e}")),
                    ..Default::default()
                };
                return respond(&result, true);
            }
        };
        let (previous, current) = {
            let mut envs = self
                .state
                .envs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let previous = EnvReport::new(envs.active_spec(), images);
            envs.select(spec.clone());
            (previous, EnvReport::new(&spec, images))
        };
        sandbox.warm_up(&spec);
        respond(
            &ConfigureResult {
                message: Some(if created {
                    format!("created the environment {spec}; it is now active")
                } else {
                    format!("environment is now {spec}")
                }),
                previous: Some(previous),
                current: Some(current),
                ..Default::default()
            },
            false,
        )
    }

    /// Show the active environment, its image and interpreter, the storage directory and the
    /// limits in force.
    #[tool(
        annotations(title = "Show the environment and limits", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ConfigResult>()
    )]
    async fn get_environment_config(&self) -> Result<CallToolResult, ErrorData> {
        let c = &self.state.config;
        let report = ConfigReport::new(
            &self.state.envs(),
            &c.images,
            &c.storage_dir.to_string_lossy(),
            &c.limits,
            c.run_as,
        );
        respond(
            &ConfigResult {
                config: Some(report),
                ..Default::default()
            },
            false,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CodeExecutor {
    #[allow(deprecated)] // MCP logging: see the `logging` module
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        logging::set_level(context.peer, request.level);
        tracing::info!(level = ?request.level, "the client asked for log messages");
        Ok(())
    }

    #[allow(deprecated)] // MCP logging: see the `logging` module
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }
}
