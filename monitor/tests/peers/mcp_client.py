"""Drives a real MCP server over stdio with the official MCP client SDK (`mcp` on PyPI).

usage: mcp_client.py CALLS_JSON -- SERVER_CMD [ARGS...]
CALLS_JSON is a list of {"tool": name, "arguments": {...}}; a tool given as a list of names uses
the first one the server offers. Prints one JSON object: the tools listed and, per call, the
JSON-RPC id the client used, the tool, the arguments, and whether the result was an error.
"""
import asyncio
import ctypes
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def next_request_id(session):
    """The id the SDK will put on its next request (it counts up from 1)."""
    d = getattr(session, "_dispatcher", None)
    n = getattr(d, "_next_id", None)
    if n is None:
        n = getattr(session, "_request_id", None)
        return n
    return n + 1


async def main() -> None:
    # Pose as an MCP client program (e.g. MCP_CLIENT_COMM=claude) for the daemon's sniffing.
    comm = os.environ.get("MCP_CLIENT_COMM")
    if comm:
        ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
    sep = sys.argv.index("--")
    calls = json.loads(sys.argv[1])
    cmd = sys.argv[sep + 1 :]
    # MCP_SERVER_ENV (JSON object): variables added to the SDK's default server environment, as
    # a client config's `env` block does; MCP_SERVER_CWD: the server's working directory.
    env = None
    if os.environ.get("MCP_SERVER_ENV"):
        from mcp.client.stdio import get_default_environment

        env = {**get_default_environment(), **json.loads(os.environ["MCP_SERVER_ENV"])}
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env, cwd=os.environ.get("MCP_SERVER_CWD"))
    out = {"calls": []}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server_info"] = init.server_info.model_dump(mode="json")
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            out["tools"] = names
            # MCP_CLIENT_THINK_MS: a pause before the calls, as an agent waits on its model.
            await asyncio.sleep(int(os.environ.get("MCP_CLIENT_THINK_MS", "0")) / 1000)
            for c in calls:
                tool = c["tool"]
                if isinstance(tool, list):
                    tool = next(t for t in tool if t in names)
                rid = next_request_id(session)
                try:
                    res = await asyncio.wait_for(session.call_tool(tool, c["arguments"]), 20)
                except BaseException as e:  # the server was killed mid-call: report, stop calling
                    out["calls"].append({"id": rid, "tool": tool, "arguments": c["arguments"], "failed": repr(e)})
                    print(json.dumps(out), flush=True)
                    os._exit(0)
                text = " ".join(getattr(x, "text", "") for x in res.content)
                out["calls"].append({"id": rid, "tool": tool, "arguments": c["arguments"], "is_error": bool(getattr(res, "is_error", getattr(res, "isError", False))), "text": text[:200]})
    print(json.dumps(out))


asyncio.run(main())
