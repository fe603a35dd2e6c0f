"""One MCP client session over several servers, with the official MCP client SDK (`mcp`).

usage: multi_client.py PLAN_JSON
PLAN_JSON: {"servers": {"NAME": [CMD, ARGS...], ...}, "calls": [{"server": NAME, "tool": T,
"arguments": {...}}, ...]}. All servers are children of this one process, as under a real MCP
client (one model context). Prints one JSON object: per call, the server, the JSON-RPC id the
client used, the tool, whether the result was an error, and the start of its text.
"""
import asyncio
import json
import sys
from contextlib import AsyncExitStack

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def next_request_id(session):
    """The id the SDK will put on its next request (it counts up from 1)."""
    d = getattr(session, "_dispatcher", None)
    n = getattr(d, "_next_id", None)
    if n is None:
        return getattr(session, "_request_id", None)
    return n + 1


async def main() -> None:
    plan = json.loads(sys.argv[1])
    out = {"calls": []}
    async with AsyncExitStack() as stack:
        sessions = {}
        for name, cmd in plan["servers"].items():
            read, write = await stack.enter_async_context(stdio_client(StdioServerParameters(command=cmd[0], args=cmd[1:])))
            s = await stack.enter_async_context(ClientSession(read, write))
            await s.initialize()
            await s.list_tools()
            sessions[name] = s
        for c in plan["calls"]:
            s = sessions[c["server"]]
            rid = next_request_id(s)
            res = await asyncio.wait_for(s.call_tool(c["tool"], c["arguments"]), 30)
            text = " ".join(getattr(x, "text", "") for x in res.content)
            out["calls"].append({"server": c["server"], "id": rid, "tool": c["tool"], "is_error": bool(getattr(res, "isError", False)), "text": text[:300]})
    print(json.dumps(out))


asyncio.run(main())
