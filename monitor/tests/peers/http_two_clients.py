"""Two clients of one MCP server over streamable HTTP (official SDK), both sessions open at once,
their calls taking turns: A's first call, B's first call, A's second, … Each client numbers its
requests on its own, so both use the same JSON-RPC ids.

usage: http_two_clients.py URL CALLS_A_JSON CALLS_B_JSON
Prints {"a": {...}, "b": {...}}, each as http_client.py reports one client."""
import asyncio
import json
import sys
from contextlib import AsyncExitStack

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from http_client import next_request_id


async def main() -> None:
    url = sys.argv[1]
    plans = {"a": json.loads(sys.argv[2]), "b": json.loads(sys.argv[3])}
    out = {}
    async with AsyncExitStack() as stack:
        sessions = {}
        for name in plans:
            streams = await stack.enter_async_context(streamable_http_client(url))
            s = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
            await s.initialize()
            sessions[name] = s
            out[name] = {"calls": []}
        for i in range(max(len(p) for p in plans.values())):
            for name, plan in plans.items():
                if i >= len(plan):
                    continue
                c, s = plan[i], sessions[name]
                rid = next_request_id(s)
                res = await asyncio.wait_for(s.call_tool(c["tool"], c["arguments"]), 20)
                text = " ".join(getattr(x, "text", "") for x in res.content)
                out[name]["calls"].append({"id": rid, "tool": c["tool"], "arguments": c["arguments"], "is_error": bool(getattr(res, "is_error", False)), "text": text[:200]})
    print(json.dumps(out), flush=True)


asyncio.run(main())
