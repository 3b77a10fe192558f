//! How a tool answers. `respond` turns a result into a structured tool result (`isError` when it
//! failed); `fail` is the one mapping from a typed error (`crate::error::Error` or anything that
//! converts into it) to a failed result: `status: "error"`, `error: <the error's message>`,
//! `isError: true`. Every result type implements [`Fallible`], which is how `fail` marks it.

use rmcp::ErrorData;
use rmcp::model::CallToolResult;
use serde::Serialize;

use super::contract::{
    CheckResult, CloseSessionResult, ConfigResult, ConfigureResult, CreateSessionResult,
    DataFileResult, FileResult, InstallResult, ListFilesResult, ListRunsResult, ListSessionsResult,
    RunLookup, RunResult, Status,
};
use crate::error::Error;

/// A tool result that can report a failure.
pub trait Fallible: Serialize {
    /// Marks the result failed: `status: error` and `error: message`.
    fn set_error(&mut self, message: String);
}

macro_rules! fallible {
    ($($result:ty),*) => {$(
        impl Fallible for $result {
            fn set_error(&mut self, message: String) {
                self.status = Status::Error;
                self.error = Some(message);
            }
        }
    )*};
}

fallible!(
    RunResult,
    FileResult,
    InstallResult,
    CheckResult,
    ConfigureResult,
    ConfigResult,
    CreateSessionResult,
    ListSessionsResult,
    CloseSessionResult,
    ListRunsResult,
    RunLookup,
    ListFilesResult,
    DataFileResult
);

/// A structured result; `isError` when `failed`.
pub fn respond<T: Serialize>(value: &T, failed: bool) -> Result<CallToolResult, ErrorData> {
    let json = serde_json::to_value(value)
        .map_err(|e| ErrorData::internal_error(format!("cannot encode the result: {e}"), None))?;
    Ok(if failed {
        CallToolResult::structured_error(json)
    } else {
        CallToolResult::structured(json)
    })
}

/// `result` (with whatever it already says) failed with `err`.
pub fn fail<R: Fallible>(result: R, err: impl Into<Error>) -> Result<CallToolResult, ErrorData> {
    fail_in(result, None, err)
}

/// `fail`, with the error's message after what the failure prevented: "`context`: `err`".
pub fn fail_in<R: Fallible>(
    mut result: R,
    context: Option<&str>,
    err: impl Into<Error>,
) -> Result<CallToolResult, ErrorData> {
    let err = err.into();
    result.set_error(match context {
        None => err.to_string(),
        Some(context) => format!("{context}: {err}"),
    });
    respond(&result, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::{PackageError, SandboxError, StorageError};

    fn body(r: &CallToolResult) -> serde_json::Value {
        r.structured_content.clone().unwrap_or_default()
    }

    #[test]
    fn a_typed_error_is_an_error_result_with_its_message() {
        let r = fail(FileResult::default(), PackageError::Empty).unwrap();
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            body(&r),
            json!({
                "status": "error",
                "error": "no packages given: pass a list such as [\"pandas>=2\", \"requests\"]"
            })
        );
    }

    #[test]
    fn failing_keeps_what_the_result_already_says() {
        let result = RunResult {
            file_path: Some("x.py".into()),
            ..Default::default()
        };
        let err = StorageError::Symlink {
            name: "x.py".into(),
        };
        let r = fail(result, err).unwrap();
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            body(&r),
            json!({
                "status": "error",
                "error": "\"x.py\" is a symbolic link; links are never followed, use the file it points to",
                "file_path": "x.py"
            })
        );
    }

    #[test]
    fn the_context_goes_before_the_message() {
        let r = fail_in(
            ConfigureResult::default(),
            Some("not switched"),
            SandboxError::ShuttingDown,
        )
        .unwrap();
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            body(&r)["error"],
            "not switched: the server is shutting down; no new runs are started"
        );
        assert_eq!(body(&r)["status"], "error");
    }

    #[test]
    fn every_result_type_is_marked_failed() {
        fn marked<R: Fallible + Default>() -> serde_json::Value {
            let mut r = R::default();
            r.set_error("boom".into());
            serde_json::to_value(&r).unwrap()
        }
        let expected = json!({"status": "error", "error": "boom"});
        assert_eq!(marked::<RunResult>(), expected);
        assert_eq!(marked::<FileResult>(), expected);
        assert_eq!(marked::<InstallResult>(), expected);
        assert_eq!(marked::<CheckResult>(), expected);
        assert_eq!(marked::<ConfigureResult>(), expected);
        assert_eq!(marked::<ConfigResult>(), expected);
        assert_eq!(marked::<CreateSessionResult>(), expected);
        assert_eq!(marked::<ListSessionsResult>(), expected);
        let mut closed = CloseSessionResult {
            session_id: "s1".into(),
            ..Default::default()
        };
        closed.set_error("boom".into());
        assert_eq!(
            serde_json::to_value(&closed).unwrap(),
            json!({"status": "error", "error": "boom", "session_id": "s1"})
        );
    }

    #[test]
    fn respond_sets_is_error_only_when_failed() {
        let ok = respond(&RunResult::default(), false).unwrap();
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(body(&ok), json!({"status": "success"}));
        let failed = respond(&RunResult::default(), true).unwrap();
        assert_eq!(failed.is_error, Some(true));
    }
}
