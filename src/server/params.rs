//! The argument extractor of our tools. rmcp 3.11's own `Parameters` reports arguments that do
//! not match the schema as a tool result (`isError`); DESIGN §1 wants protocol misuse (missing
//! or mistyped arguments) to be a JSON-RPC `invalid_params` error, so the client, not the
//! model, sees it. The name must stay `Parameters`: rmcp's `#[tool]` macro finds the input
//! schema by that name.

use rmcp::ErrorData;
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

/// Tool arguments, deserialized from the call's `arguments` object.
#[derive(Debug)]
pub struct Parameters<P>(pub P);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        P::json_schema(generator)
    }
}

impl<S, P: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<P> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(serde_json::Value::Object(arguments))
            .map(Parameters)
            .map_err(|e| {
                ErrorData::invalid_params(
                    format!(
                        "invalid arguments for tool {}: {e}; see the tool's inputSchema",
                        context.name
                    ),
                    None,
                )
            })
    }
}
