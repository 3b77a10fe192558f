//! What a fake container does once started: a scripted [`Behaviour`] played against the
//! container's side of the attach — the runner's JSON header read from stdin like `runner.py`,
//! output (with the end marker taken from the header) sent down the output stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::{State, Tx, unavailable};
use crate::sandbox::engine::OutputChunk;
use crate::sandbox::lifecycle::lock;

/// What a started container does. Each waits silently for its program (so a pre-started pool
/// container prints nothing until fed); all but `Idle` then read the runner's input like
/// `runner.py` (the JSON header line, then the source until stdin closes) before acting.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Prints, then ends by itself: `"\n<marker>:<status>\n"` on both streams, exit `status`.
    Exits {
        stdout: String,
        stderr: String,
        status: i64,
    },
    /// Prints, then stops WITHOUT a marker (killed, OOM, `os._exit`): inspect tells the rest.
    Dies {
        stdout: String,
        stderr: String,
        exit_code: Option<i64>,
        oom: bool,
    },
    /// Never prints the marker and never ends until killed (exit 137).
    Hangs,
    /// Prints this many bytes of stdout, in 64 KiB chunks, then ends with status 0.
    Floods(usize),
    /// Prints nothing and ends (exit 0) when stdin closes: the sentinel.
    Idle,
    /// Prints `stdout`, then the output stream fails with `Unavailable` (with `down`, every
    /// later call fails too); the container keeps running until killed.
    Cut { stdout: String, down: bool },
    /// Anything else, step by step; without a final `Exit` the container hangs until killed.
    Steps(Vec<Step>),
}

/// One step of a script. In text, `{marker}` stands for the marker from the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Out(String),
    Err(String),
    /// Stdout text, one byte per chunk.
    OutBytewise(String),
    Flood(usize),
    Pause(Duration),
    /// The output stream fails with `Unavailable`; with `down` the whole engine goes away.
    Cut {
        down: bool,
    },
    /// The container stops with this state (the stream ends).
    Exit {
        code: Option<i64>,
        oom: bool,
    },
}

impl Behaviour {
    /// A program that prints `stdout` and exits 0.
    pub fn ok(stdout: &str) -> Self {
        Behaviour::Exits {
            stdout: stdout.into(),
            stderr: String::new(),
            status: 0,
        }
    }

    fn steps(self) -> Vec<Step> {
        let marker = |s: i64| format!("\n{{marker}}:{s}\n");
        let exit = |code: Option<i64>, oom| Step::Exit { code, oom };
        match self {
            Behaviour::Exits {
                stdout,
                stderr,
                status,
            } => vec![
                Step::Out(stdout),
                Step::Err(stderr),
                Step::Out(marker(status)),
                Step::Err(marker(status)),
                exit(Some(status), false),
            ],
            Behaviour::Dies {
                stdout,
                stderr,
                exit_code,
                oom,
            } => {
                vec![Step::Out(stdout), Step::Err(stderr), exit(exit_code, oom)]
            }
            Behaviour::Floods(n) => vec![
                Step::Flood(n),
                Step::Out(marker(0)),
                Step::Err(marker(0)),
                exit(Some(0), false),
            ],
            Behaviour::Cut { stdout, down } => vec![Step::Out(stdout), Step::Cut { down }],
            Behaviour::Steps(steps) => steps,
            Behaviour::Hangs | Behaviour::Idle => Vec::new(),
        }
    }
}

/// The container's "process": plays its behaviour until it exits, is killed or is cut off.
pub(super) async fn process(
    state: Arc<Mutex<State>>,
    id: String,
    b: Behaviour,
    io: Option<(DuplexStream, Tx)>,
    killed: CancellationToken,
    cut: CancellationToken,
) {
    let (stdin, mut out) = io.map_or((None, None), |(i, o)| (Some(i), Some(o)));
    enum Stop {
        Exit(Option<i64>, bool),
        Killed,
        Cut,
    }
    let stop = tokio::select! {
        (code, oom) = play(&state, &id, b, stdin, &mut out) => Stop::Exit(code, oom),
        _ = killed.cancelled() => Stop::Killed,
        _ = cut.cancelled() => Stop::Cut,
    };
    match stop {
        Stop::Exit(code, oom) => {
            if let Some(c) = lock(&state).find(&id) {
                c.stop(code, oom);
            }
        }
        Stop::Killed => {}
        Stop::Cut => {
            cut_off(&mut out);
            killed.cancelled().await;
        }
    }
}

/// Plays `b` once the runner's input arrives; returns the exit state (never, for a hang).
async fn play(
    state: &Mutex<State>,
    id: &str,
    b: Behaviour,
    stdin: Option<DuplexStream>,
    out: &mut Option<Tx>,
) -> (Option<i64>, bool) {
    let Some(mut stdin) = stdin else {
        return std::future::pending().await;
    };
    if b == Behaviour::Idle {
        let _ = stdin.read_to_end(&mut Vec::new()).await;
        return (Some(0), false);
    }
    let Some(marker) = read_program(state, id, stdin).await else {
        return (Some(0), false); // no program: runner.py leaves with os._exit(0)
    };
    let text = |s: &str| Bytes::from(s.replace("{marker}", &marker));
    for step in b.steps() {
        match step {
            Step::Out(s) if !s.is_empty() => send(out, OutputChunk::Stdout(text(&s))),
            Step::Err(s) if !s.is_empty() => send(out, OutputChunk::Stderr(text(&s))),
            Step::Out(_) | Step::Err(_) => {}
            Step::OutBytewise(s) => text(&s)
                .iter()
                .for_each(|b| send(out, OutputChunk::Stdout(Bytes::copy_from_slice(&[*b])))),
            Step::Flood(n) => flood(out, n).await,
            Step::Pause(d) => tokio::time::sleep(d).await,
            Step::Cut { down } => {
                lock(state).down |= down;
                cut_off(out);
            }
            Step::Exit { code, oom } => return (code, oom),
        }
        tokio::task::yield_now().await;
    }
    std::future::pending().await
}

/// Reads the JSON header line and the source like runner.py, keeps both on the container and
/// returns the end marker; `None` when stdin closed without a header.
async fn read_program(state: &Mutex<State>, id: &str, stdin: DuplexStream) -> Option<String> {
    let mut reader = BufReader::new(stdin);
    let (mut line, mut source) = (String::new(), String::new());
    let _ = reader.read_line(&mut line).await;
    let header = serde_json::from_str::<serde_json::Value>(&line).ok()?;
    let _ = reader.read_to_string(&mut source).await;
    let marker = header["marker"].as_str().unwrap_or_default().to_string();
    if let Some(c) = lock(state).find(id) {
        c.received = Some((header, source));
    }
    Some(marker)
}

fn send(out: &Option<Tx>, chunk: OutputChunk) {
    if let Some(tx) = out {
        let _ = tx.send(Ok(chunk));
    }
}

/// The output stream fails with `Unavailable` and ends.
fn cut_off(out: &mut Option<Tx>) {
    if let Some(tx) = out.take() {
        let _ = tx.send(Err(unavailable()));
    }
}

/// `n` bytes of 64-byte lines of `x`, in 64 KiB chunks.
async fn flood(out: &Option<Tx>, n: usize) {
    let block: Bytes = (0..65536)
        .map(|i| if i % 64 == 63 { b'\n' } else { b'x' })
        .collect::<Vec<u8>>()
        .into();
    for at in (0..n).step_by(block.len()) {
        send(
            out,
            OutputChunk::Stdout(block.slice(..(n - at).min(block.len()))),
        );
        tokio::task::yield_now().await;
    }
}
