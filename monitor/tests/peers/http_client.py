"""Drives a real MCP server over streamable HTTP (or SSE) with the official MCP client SDK (`mcp` on PyPI).

usage: http_client.py URL CALLS_JSON [sse]
(sse: the older SSE transport, `sse_client`, URL being the server's GET /sse endpoint)
MCP_HTTP_UDS: reach the server through this unix socket (URL gives path and Host header).
CALLS_JSON is a list of {"tool": name, "arguments": {...}}. Prints one JSON object: the tools
listed, the session id the server gave, and per call the JSON-RPC id the client used, the tool,
the arguments, whether the result was an error and its text.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


def next_request_id(session):
    """The id the SDK will put on its next request (it counts up from 1)."""
    d = getattr(session, "_dispatcher", None)
    n = getattr(d, "_next_id", None)
    if n is None:
        return getattr(session, "_request_id", None)
    return n + 1


async def main() -> None:
    url = sys.argv[1]
    calls = json.loads(sys.argv[2])
    out = {"calls": []}
    if sys.argv[3:] == ["sse"]:
        transport = sse_client(url)
    elif os.environ.get("MCP_HTTP_UDS"):
        import httpx2

        http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=os.environ["MCP_HTTP_UDS"]), timeout=httpx2.Timeout(30, read=300))
        transport = streamable_http_client(url, http_client=http)
    else:
        transport = streamable_http_client(url)
    async with transport as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server_info"] = init.server_info.model_dump(mode="json")
            tools = await session.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            for c in calls:
                rid = next_request_id(session)
                try:
                    res = await asyncio.wait_for(session.call_tool(c["tool"], c["arguments"]), 20)
                except BaseException as e:  # the server was killed mid-call: report, stop calling
                    out["calls"].append({"id": rid, "tool": c["tool"], "arguments": c["arguments"], "failed": repr(e)})
                    print(json.dumps(out), flush=True)
                    os._exit(0)
                text = " ".join(getattr(x, "text", "") for x in res.content)
                out["calls"].append({"id": rid, "tool": c["tool"], "arguments": c["arguments"], "is_error": bool(getattr(res, "is_error", getattr(res, "isError", False))), "text": text[:200]})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
