"""Captures the real `tools/list` output of MCP servers with the official client SDK (`mcp`).

usage: capture.py OUT_DIR PEERS_DIR [EXTRA_DIR]

PEERS_DIR is what `cargo xtask setup` installs (target/mcp-peers: node_modules and a venv with
the SDK). EXTRA_DIR, optional, holds servers installed only for this capture (a node_modules and
a venv, see README.md). Each server below whose program is present is started, initialised and
asked for its tools (every page); OUT_DIR/benign/NAME.json gets the server's announced name and
version and its tools exactly as the SDK parsed them (aliases kept, unset fields left out).
Credentials some servers insist on at start-up are placeholders: tools/list never uses them.
"""
import asyncio
import json
import os
import subprocess
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import get_default_environment, stdio_client

# name → (program under a peers dir, arguments, extra environment)
SCRATCH = tempfile.mkdtemp(prefix="mcp-capture-")
# mcp-server-git wants a repository.
subprocess.run(["git", "init", "-q", SCRATCH], check=True)
SERVERS = {
    "server-filesystem": ("node_modules/.bin/mcp-server-filesystem", [SCRATCH], {}),
    "server-everything": ("node_modules/.bin/mcp-server-everything", [], {}),
    "server-memory": ("node_modules/.bin/mcp-server-memory", [], {"MEMORY_FILE_PATH": os.path.join(SCRATCH, "memory.jsonl")}),
    "server-sequential-thinking": ("node_modules/.bin/mcp-server-sequential-thinking", [], {}),
    "cyanheads-git-mcp-server": ("node_modules/.bin/git-mcp-server", [], {"MCP_TRANSPORT_TYPE": "stdio", "MCP_LOG_LEVEL": "error"}),
    "mcp-server-git": ("venv/bin/mcp-server-git", ["--repository", SCRATCH], {}),
    "mcp-server-time": ("venv/bin/mcp-server-time", ["--local-timezone", "UTC"], {}),
    "mcp-server-fetch": ("venv/bin/mcp-server-fetch", [], {}),
    "server-github": ("node_modules/.bin/mcp-server-github", [], {"GITHUB_PERSONAL_ACCESS_TOKEN": "placeholder"}),
    "server-gitlab": ("node_modules/.bin/mcp-server-gitlab", [], {"GITLAB_PERSONAL_ACCESS_TOKEN": "placeholder"}),
    "server-slack": ("node_modules/.bin/mcp-server-slack", [], {"SLACK_BOT_TOKEN": "placeholder", "SLACK_TEAM_ID": "T0"}),
    "server-brave-search": ("node_modules/.bin/mcp-server-brave-search", [], {"BRAVE_API_KEY": "placeholder"}),
    "server-google-maps": ("node_modules/.bin/mcp-server-google-maps", [], {"GOOGLE_MAPS_API_KEY": "placeholder"}),
    "server-postgres": ("node_modules/.bin/mcp-server-postgres", ["postgresql://127.0.0.1:1/none"], {}),
    "mcp-server-sqlite": ("venv/bin/mcp-server-sqlite", ["--db-path", os.path.join(SCRATCH, "capture.db")], {}),
    "mcp-server-sentry": ("venv/bin/mcp-server-sentry", ["--auth-token", "placeholder"], {}),
}


async def capture(cmd, args, env):
    params = StdioServerParameters(command=cmd, args=args, env={**get_default_environment(), **env}, cwd=SCRATCH)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools, cursor = [], None
            while True:
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            return {"server": init.server_info.name, "version": init.server_info.version, "tools": tools}


def main():
    out, dirs = sys.argv[1], [os.path.abspath(d) for d in sys.argv[2:]]
    os.makedirs(os.path.join(out, "benign"), exist_ok=True)
    for name, (prog, args, env) in SERVERS.items():
        found = [os.path.join(d, prog) for d in dirs if os.path.exists(os.path.join(d, prog))]
        if not found:
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        try:
            got = asyncio.run(asyncio.wait_for(capture(found[0], args, env), 60))
        except BaseException as e:  # one server that will not start does not stop the others
            print(f"{name}: failed: {e!r}", file=sys.stderr)
            continue
        with open(os.path.join(out, "benign", f"{name}.json"), "w") as f:
            json.dump(got, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"{name}: {len(got['tools'])} tools", file=sys.stderr)


main()
