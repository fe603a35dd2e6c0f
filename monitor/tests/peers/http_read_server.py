"""A tiny MCP server (official Python SDK) on streamable HTTP with one tool that reads a file and
returns its first line: a server that touches files on request, for tests/http.rs.

usage: http_read_server.py PORT [json]   (json: application/json replies instead of SSE)
Environment: MCP_HTTP_HOST (address to listen on, default 127.0.0.1; ::1 for IPv6),
MCP_HTTP_UDS (a unix socket path to listen on instead of TCP)."""
import os
import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("http-reader")


@app.tool()
def read(path: str) -> str:
    """Read a file and return its first line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n")


if __name__ == "__main__":
    json_response = len(sys.argv) > 2 and sys.argv[2] == "json"
    host = os.environ.get("MCP_HTTP_HOST", "127.0.0.1")
    uds = os.environ.get("MCP_HTTP_UDS")
    if uds:
        import uvicorn

        uvicorn.run(app.streamable_http_app(json_response=json_response, host="127.0.0.1"), uds=uds, log_level="warning")
    else:
        app.run("streamable-http", host=host, port=int(sys.argv[1]), json_response=json_response)
