//! The protocol side of the server: `ServerHandler` for `CodeExecutor` — tool calls through
//! the router (a task at once for task-capable clients, see `tasks`), `tasks/*`, resources
//! (`resources`), MCP logging and the server's info and instructions.

use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};

use super::{CodeExecutor, logging, resources, tasks};

const INSTRUCTIONS: &str = "Runs Python code in short-lived, offline, locked-down Docker \
containers. execute_code stores code as a file in the storage directory and runs it there; files \
the code writes to its working directory are kept. Build long programs with initialize_code_file, \
append_to_code_file and execute_code_file. Runs are offline: add packages with \
install_dependencies (they persist), look them up with check_installed_packages. \
For work in steps that should keep variables and imports between calls, create_session starts \
a live interpreter: pass its session_id to execute_code; close_session ends it. \
get_environment_config shows the environment and the limits (time, memory, output) in force.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CodeExecutor {
    /// Tool calls, through the router; for a client that declared the tasks extension, the
    /// long-run tools answer with a task at once (see `tasks`).
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let as_task = tasks::wanted(&request, &context);
        if as_task {
            context.extensions.insert(tasks::AnswerAtOnce);
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(tcc).await?;
        Ok(match response {
            rmcp::model::CallToolResponse::Complete(result) if as_task => tasks::created(result),
            other => other,
        })
    }

    async fn list_resources(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        resources::list(&*self.world(&context)?, request)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        resources::read(&*self.world(&context)?, request).map(Into::into)
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        tasks::get(&*self.world(&context)?, &request.task_id)
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tasks::cancel(&self.world(&context)?, &request.task_id).await
    }

    /// No run ever asks its client for input: responses are ignored (as the extension says
    /// for keys that are not outstanding).
    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.world(&context)?
            .runs
            .find(&request.task_id)
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        Ok(())
    }

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
                .enable_resources()
                .enable_logging()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }
}
