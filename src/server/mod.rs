//! The MCP server: its shared `State`, and `CodeExecutor`, whose tool handlers are thin: each
//! parses its arguments (`params`) and hands them to the room that owns the tool. A tool that ran
//! and failed returns a result with `isError: true` and a JSON body with `status: "error"` and an
//! `error` message (`reply`, the one mapping from typed errors); malformed arguments are JSON-RPC
//! `invalid_params` errors (`params`). `progress` reports long calls.
//!
//! Rooms: `contract` (the wire types), `worlds` and `state` (one world per principal; stdio has
//! one), `run` (execute_code, execute_code_file, one-shot or in a session) and `figures` (the
//! files and figures a run shows), `background` and `runs` (long runs: the registry and
//! get_run, cancel_run, list_runs), `adopt` (taking over the runs of a server that is gone), `records` (their files),
//! `tasks` (the MCP tasks extension over the same runs), `sessions` (create, list and close
//! sessions), `files` (the code-file tools), `datafiles` and `resources` (data files as tools and as MCP resources), `packages` (install and check),
//! `environment` (switch and report), `reply` (results and failures), `logging` (MCP log
//! notifications).
//!
//! `handler` is the protocol side (`ServerHandler`: tool calls and tasks, resources, logging,
//! the server's info). This file is the tool side: one thin `#[tool]` method per tool, each
//! with the description clients are shown.

mod adopt;
mod background;
pub mod contract;
mod datafiles;
mod environment;
mod figures;
mod files;
mod handler;
pub mod logging;
mod packages;
mod params;
mod progress;
mod records;
mod reply;
mod resources;
mod run;
mod runs;
mod sessions;
mod state;
mod tasks;
mod worlds;

pub use adopt::take_over_runs;
pub use state::State;
pub use worlds::Worlds;

use std::sync::Arc;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};

use contract::{
    AppendToCodeFileArgs, CancelRunArgs, CheckResult, CloseSessionArgs, CloseSessionResult,
    ConfigResult, ConfigureEnvironmentArgs, ConfigureResult, CreateSessionArgs,
    CreateSessionResult, DataFileResult, ExecuteCodeArgs, ExecuteCodeFileArgs, FilePathArgs,
    FileResult, GetRunArgs, InitializeCodeFileArgs, InstallArgs, InstallResult, ListFilesArgs,
    ListFilesResult, ListRunsResult, ListSessionsResult, PackagesArgs, ReadFileArgs, RunResult,
    WriteFileArgs,
};
use params::Parameters;

/// The MCP server (one value per MCP connection; they share the worlds).
#[derive(Debug, Clone)]
pub struct CodeExecutor {
    worlds: Arc<Worlds>,
    tool_router: ToolRouter<Self>,
}

impl CodeExecutor {
    pub fn new(worlds: Arc<Worlds>) -> Self {
        CodeExecutor {
            worlds,
            tool_router: Self::tool_router(),
        }
    }

    /// The world the call of `ctx` works in (see [`Worlds::world_of`]). Not finding one is a
    /// failure of the server or of the transport, not of the tool: a JSON-RPC error.
    fn world(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<State>, ErrorData> {
        self.worlds
            .world_of(ctx)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }
}

#[tool_router]
impl CodeExecutor {
    /// Store Python code as a new .py file in the storage directory and run it in a fresh,
    /// offline, locked-down container of the active environment. The working directory is the
    /// storage directory: files the code writes there are kept. With session_id (from
    /// create_session), the code runs in that session's live interpreter instead, in the
    /// session's environment: variables, imports and functions from earlier calls are there,
    /// and what this call defines stays for the next.
    /// Long work: a run still going after RESULT_WAIT is answered at once with status
    /// "running" and a run_id, and goes on to its own deadline (poll get_run, stop cancel_run).
    /// Cancelling this request (notifications/cancelled) before that answer stops the work;
    /// once a run_id has been handed out, cancelling only ever stops a wait (get_run), never
    /// the run.
    #[tool(
        annotations(title = "Run Python code", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<RunResult>()
    )]
    async fn execute_code(
        &self,
        Parameters(args): Parameters<ExecuteCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (ctx, _link) = self.worlds.link(ctx);
        run::execute_code(self.world(&ctx)?, args, &ctx).await
    }

    /// Run a file stored earlier (by execute_code or initialize_code_file), given by its bare
    /// name or the path this server returned. With session_id, in that session's live
    /// interpreter (state kept between calls), as execute_code.
    /// Long work: a run still going after RESULT_WAIT is answered at once with status
    /// "running" and a run_id, and goes on to its own deadline (poll get_run, stop cancel_run).
    /// Cancelling this request (notifications/cancelled) before that answer stops the work;
    /// once a run_id has been handed out, cancelling only ever stops a wait (get_run), never
    /// the run.
    #[tool(
        annotations(title = "Run a stored Python file", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<RunResult>()
    )]
    async fn execute_code_file(
        &self,
        Parameters(args): Parameters<ExecuteCodeFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (ctx, _link) = self.worlds.link(ctx);
        run::execute_code_file(self.world(&ctx)?, args, &ctx).await
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
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        files::initialize(&self.world(&ctx)?.storage, args)
    }

    /// Append content to a file created earlier.
    #[tool(
        annotations(title = "Append to a code file", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<FileResult>()
    )]
    async fn append_to_code_file(
        &self,
        Parameters(args): Parameters<AppendToCodeFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        files::append(&self.world(&ctx)?.storage, args)
    }

    /// Return the content of a file in the storage directory.
    #[tool(
        annotations(title = "Read a code file", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<FileResult>()
    )]
    async fn read_code_file(
        &self,
        Parameters(args): Parameters<FilePathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        files::read(&self.world(&ctx)?.storage, args)
    }

    /// Install packages into the active environment with its own installer (pip, uv, or conda
    /// with a pip fallback). Each entry is a requirement such as "pandas>=2" or
    /// "requests[socks]"; options, URLs and paths are refused. Installed packages stay for
    /// later runs. Only the install container has network access.
    /// Long work: a run still going after RESULT_WAIT is answered at once with status
    /// "running" and a run_id, and goes on to its own deadline (poll get_run, stop cancel_run).
    /// Cancelling this request (notifications/cancelled) before that answer stops the work;
    /// once a run_id has been handed out, cancelling only ever stops a wait (get_run), never
    /// the run.
    #[tool(
        annotations(title = "Install Python packages", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = true),
        output_schema = schema_for_output::<InstallResult>()
    )]
    async fn install_dependencies(
        &self,
        Parameters(args): Parameters<InstallArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (ctx, _link) = self.worlds.link(ctx);
        packages::install(self.world(&ctx)?, args, &ctx).await
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
        let (ctx, _link) = self.worlds.link(ctx);
        packages::check(&*self.world(&ctx)?, args, &ctx).await
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
        let (ctx, _link) = self.worlds.link(ctx);
        environment::configure(&*self.world(&ctx)?, args, &ctx).await
    }

    /// Start a session: a live Python interpreter, in its own offline, locked-down container,
    /// that keeps its state (variables, imports, functions) between calls. Pass the returned
    /// session_id to execute_code or execute_code_file. It runs in the active environment, or
    /// in the one configured for env_type. A session ends when it is closed (close_session),
    /// after idle_timeout_secs without a call, after max_lifetime_secs, or when its interpreter
    /// dies (out of memory, a crash); its state is then lost. Sessions survive a restart of this
    /// server. At most MAX_SESSIONS are open at once.
    #[tool(
        annotations(title = "Start a Python session", read_only_hint = false, destructive_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<CreateSessionResult>()
    )]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSessionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (ctx, _link) = self.worlds.link(ctx);
        sessions::create(&*self.world(&ctx)?, args, &ctx).await
    }

    /// List the open sessions of this storage folder: id, name, environment, when each was
    /// created and last used (unix seconds), how many calls it ran, and its state.
    #[tool(
        annotations(title = "List Python sessions", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ListSessionsResult>()
    )]
    async fn list_sessions(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        sessions::list(&*self.world(&ctx)?).await
    }

    /// End a session: its interpreter and container are removed and its state is lost. Files it
    /// wrote to the storage directory are kept.
    #[tool(
        annotations(title = "End a Python session", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<CloseSessionResult>()
    )]
    async fn close_session(
        &self,
        Parameters(args): Parameters<CloseSessionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        sessions::close(&*self.world(&ctx)?, args).await
    }

    /// Wait for a run that answered status "running" (from execute_code, execute_code_file or
    /// install_dependencies) and return its result: the same as the call would have returned,
    /// or "running" again with the newest output after wait_secs (at most RESULT_WAIT).
    /// Cancelling this call only stops the waiting, never the run (use cancel_run).
    #[tool(annotations(
        title = "Wait for a run",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn get_run(
        &self,
        Parameters(args): Parameters<GetRunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        runs::get(&self.world(&ctx)?, args, &ctx).await
    }

    /// Stop a run (its container is killed) and return its result, which says cancelled.
    #[tool(annotations(
        title = "Stop a run",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn cancel_run(
        &self,
        Parameters(args): Parameters<CancelRunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        runs::cancel(&self.world(&ctx)?, args).await
    }

    /// List the runs kept: those still running and those that finished within RUN_RETENTION,
    /// newest first, with their state, start time, elapsed seconds and file.
    #[tool(
        annotations(title = "List runs", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ListRunsResult>()
    )]
    async fn list_runs(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        runs::list(&*self.world(&ctx)?)
    }

    /// List the files in the storage directory (code, files runs wrote, files written with
    /// write_file), newest first, with size, modification time, path and resource URI; a page
    /// at a time (pass next_cursor as cursor). pattern filters names ("*.csv").
    #[tool(
        annotations(title = "List stored files", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ListFilesResult>()
    )]
    async fn list_files(
        &self,
        Parameters(args): Parameters<ListFilesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        datafiles::list(&*self.world(&ctx)?, args)
    }

    /// Read a stored file, or a slice of it (offset, length): text when it is UTF-8, else
    /// base64, with the file's size and whether the slice reaches its end.
    #[tool(
        annotations(title = "Read a stored file", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<DataFileResult>()
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        datafiles::read(&*self.world(&ctx)?, args)
    }

    /// Write a data file into the storage directory (created or replaced, atomically) for the
    /// next run to read: text, or bytes as base64 with encoding "base64". At most
    /// MAX_FILE_SIZE.
    #[tool(
        annotations(title = "Write a data file", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<DataFileResult>()
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        datafiles::write(&*self.world(&ctx)?, args)
    }

    /// Show the active environment, its image and interpreter, the storage directory and the
    /// limits in force (of runs and of sessions).
    #[tool(
        annotations(title = "Show the environment and limits", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ConfigResult>()
    )]
    async fn get_environment_config(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        environment::get_config(&*self.world(&ctx)?)
    }
}
