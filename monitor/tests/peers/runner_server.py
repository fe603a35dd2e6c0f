"""A tiny MCP server (official Python SDK) with one tool that runs a shell command line the way
many servers do: subprocess with a PATH search, so every PATH entry before the one holding `sh`
is a failed execve (ENOENT). Used by tests/precision.rs."""
import subprocess

from mcp.server.mcpserver import MCPServer

app = MCPServer("runner")


@app.tool()
def run(command: str) -> str:
    """Run a command line with sh."""
    p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=10)
    return f"exit {p.returncode}"


if __name__ == "__main__":
    app.run()
