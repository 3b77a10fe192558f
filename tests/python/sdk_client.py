"""Drives mcp-code-executor over streamable HTTP with the official MCP Python SDK.

Run by tests/http.rs (python_sdk_client_uses_every_tool) in a venv of its own with a pinned `mcp`
release:

    python sdk_client.py <url> <token>

Connects with `streamable_http_client(url, http_client=<client with an Authorization header>)`,
does the legacy `initialize` handshake (as clients in the field do), lists the tools, calls every
tool once, and prints one JSON line summarising what it saw; the Rust test checks it. Exits 0 once
the summary is printed, whatever the server answered (the checks are the test's), and non-zero
when the SDK itself failed.
"""

import asyncio
import json
import sys
import time

try:  # The 2.x SDK is built on httpx2; 1.x releases on httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def result_of(result):
    """The parts of a CallToolResult the test checks."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": texts[0] if texts else None,
    }


async def main(url: str, token: str) -> dict:
    summary: dict = {"calls": {}}
    calls = summary["calls"]
    headers = {"Authorization": f"Bearer {token}"}
    # trust_env=False: loopback only, whatever proxy the environment names.
    async with httpx.AsyncClient(
        headers=headers, timeout=httpx.Timeout(30.0, read=120.0), trust_env=False
    ) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                summary["protocol_version"] = init.protocol_version
                summary["server_name"] = init.server_info.name

                tools = await session.list_tools()
                summary["tools"] = sorted(t.name for t in tools.tools)

                async def call(key, name, args):
                    started = time.time()
                    r = await session.call_tool(name, args)
                    calls[key] = result_of(r)
                    calls[key]["seconds"] = round(time.time() - started, 3)
                    return calls[key]["structured"] or {}

                await call("execute_code", "execute_code", {"code": "print('hello from the python sdk')"})
                await call("execute_code_fails", "execute_code", {"code": "import sys\nsys.exit(3)"})
                made = await call(
                    "initialize_code_file",
                    "initialize_code_file",
                    {"content": "x = 20\n", "filename": "sdk_file"},
                )
                path = made.get("file_path", "")
                await call(
                    "append_to_code_file",
                    "append_to_code_file",
                    {"file_path": path, "content": "print(x + 22)\n"},
                )
                await call("read_code_file", "read_code_file", {"file_path": path})
                await call("execute_code_file", "execute_code_file", {"file_path": path})
                await call("get_environment_config", "get_environment_config", {})
                await call("configure_environment", "configure_environment", {"type": "venv"})
                await call("check_installed_packages", "check_installed_packages", {"packages": ["pip"]})
                # Refused before any network use: an option is not a requirement.
                await call(
                    "install_dependencies",
                    "install_dependencies",
                    {"packages": ["--index-url=http://127.0.0.1:9/simple"]},
                )
                session_made = await call("create_session", "create_session", {"name": "sdk"})
                sid = session_made.get("session_id", "")
                await call(
                    "execute_in_session_1",
                    "execute_code",
                    {"code": "counter = 41", "session_id": sid},
                )
                await call(
                    "execute_in_session_2",
                    "execute_code",
                    {"code": "print(counter + 1)", "session_id": sid},
                )
                await call("list_sessions", "list_sessions", {})
                await call("close_session", "close_session", {"session_id": sid})
    return summary


if __name__ == "__main__":
    out = asyncio.run(main(sys.argv[1], sys.argv[2]))
    print(json.dumps(out), flush=True)
