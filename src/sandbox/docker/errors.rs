//! What the engine's error answers mean: maps bollard's errors to [`EngineError`]s (keeping
//! bollard's error as their source), and classifies the answers Docker and Podman give
//! differently for the same situation, so that the engine code reads as "gone", "already
//! stopped", "name taken", "busy" rather than as status codes.
//!
//! | situation                          | Docker              | Podman 4.3 (compat API)            |
//! |------------------------------------|---------------------|------------------------------------|
//! | no such container / image / volume | 404                 | 404                                |
//! | create: name in use                | 409                 | 500 "... is already in use ..."    |
//! | create: image missing              | 404 "No such image" | 404 "no such image: ..."           |
//! | kill: not running                  | 409                 | 500 "... container state improper" |
//! | remove (force): being removed      | 409                 | 500 "container state improper" (while exiting) |

use bollard::errors::Error as BollardError;

use crate::error::EngineError;

/// Podman's cause for an operation the container's state does not allow (kill of a stopped
/// container, force-removal of one that is exiting).
const STATE_IMPROPER: &str = "container state improper";
/// Podman's cause for a create whose name another container has.
const NAME_IN_USE: &str = "already in use";

/// `(status, message)` of an error answer from the engine.
fn answer(e: &BollardError) -> Option<(u16, &str)> {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Some((*status_code, message.as_str())),
        _ => None,
    }
}

/// `Ok(None)` for a 404 answer (the thing does not exist), else the result as it is.
pub(super) fn absent_ok<T>(r: Result<T, BollardError>) -> Result<Option<T>, BollardError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if answer(&e).is_some_and(|(s, _)| s == 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a create failed because the name is taken (Docker: 409; Podman: 500).
pub(super) fn is_name_taken(e: &BollardError) -> bool {
    answer(e).is_some_and(|(s, m)| s == 409 || (s == 500 && m.contains(NAME_IN_USE)))
}

/// Whether a create failed because the image does not exist.
pub(super) fn is_image_missing(e: &BollardError) -> bool {
    answer(e).is_some_and(|(s, m)| s == 404 && m.to_ascii_lowercase().contains("image"))
}

/// Whether the engine refused because of the container's state (Podman's 500).
pub(super) fn is_state_improper(e: &BollardError) -> bool {
    answer(e).is_some_and(|(s, m)| s == 500 && m.contains(STATE_IMPROPER))
}

/// Success for a kill the container does not need: gone (404) or not running (Docker's 409,
/// Podman's 500 "container state improper").
pub(super) fn kill_settled(r: Result<(), BollardError>) -> Result<(), BollardError> {
    match r {
        Err(e) if answer(&e).is_some_and(|(s, _)| s == 404 || s == 409) => Ok(()),
        Err(e) if is_state_improper(&e) => Ok(()),
        other => other,
    }
}

/// Success for a removal already done or under way: gone (404) or being removed (409). A
/// container Podman cannot remove yet (exiting) stays an error: the caller retries.
pub(super) fn removal_settled(r: Result<(), BollardError>) -> Result<(), BollardError> {
    match r {
        Err(e) if answer(&e).is_some_and(|(s, _)| s == 404 || s == 409) => Ok(()),
        other => other,
    }
}

pub(super) fn unavailable(e: BollardError) -> EngineError {
    EngineError::Unavailable {
        source: Box::new(e),
    }
}

/// An answer from the daemon is a refusal; an unreadable answer is malformed; anything else
/// means the daemon is unreachable.
pub(super) fn map_err(op: &'static str, container: Option<&str>, e: BollardError) -> EngineError {
    let container = container.map(|id| id.chars().take(12).collect());
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Refused {
            op,
            container,
            status: status_code,
            message,
        },
        e @ (BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {
            EngineError::Malformed {
                op,
                container,
                source: Box::new(e),
            }
        }
        other => unavailable(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn docker_and_podman_answers_mean_the_same() {
        let podman_taken = refused(
            500,
            "container create: creating container storage: the container name \"mce-x\" is \
             already in use by 0123. You have to remove that container to be able to reuse that \
             name: that name is already in use",
        );
        assert!(is_name_taken(&refused(
            409,
            "Conflict. The container name is in use"
        )));
        assert!(is_name_taken(&podman_taken));
        assert!(!is_name_taken(&refused(500, "something else broke")));
        assert!(is_image_missing(&refused(404, "No such image: x:latest")));
        assert!(is_image_missing(&refused(
            404,
            "no such image: docker.io/x: image not known"
        )));
        assert!(!is_image_missing(&refused(404, "no such container")));

        let podman_stopped = refused(
            500,
            "can only kill running containers. 0123 is in state exited: container state improper",
        );
        assert!(kill_settled(Err(podman_stopped)).is_ok());
        assert!(kill_settled(Err(refused(409, "is not running"))).is_ok());
        assert!(kill_settled(Err(refused(404, "no such container"))).is_ok());
        assert!(kill_settled(Err(refused(500, "boom"))).is_err());

        assert!(removal_settled(Err(refused(409, "removal in progress"))).is_ok());
        assert!(removal_settled(Err(refused(404, "gone"))).is_ok());
        let exiting = refused(
            500,
            "cannot remove container 0123: container state improper",
        );
        assert!(is_state_improper(&exiting));
        assert!(removal_settled(Err(exiting)).is_err());

        assert!(absent_ok(Err::<(), _>(refused(404, "x"))).is_ok_and(|v| v.is_none()));
        assert!(absent_ok(Err::<(), _>(refused(500, "x"))).is_err());
    }

    #[test]
    fn refusals_keep_status_and_container() {
        let e = map_err(
            "kill a container",
            Some(&"a".repeat(64)),
            refused(500, "boom"),
        );
        match e {
            EngineError::Refused {
                status, container, ..
            } => {
                assert_eq!(status, 500);
                assert_eq!(container.as_deref(), Some("aaaaaaaaaaaa"));
            }
            other => panic!("{other:?}"),
        }
        assert!(map_err("x", None, BollardError::RequestTimeoutError).is_unavailable());
    }
}
