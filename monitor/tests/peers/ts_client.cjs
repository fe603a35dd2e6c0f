// Drives an MCP server over stdio with the official TypeScript client SDK
// (@modelcontextprotocol/sdk, pinned in xtask/src/peers.rs), from a plain `node` process: an
// agent program no client list names.
//
// usage: NODE_PATH=<peers>/node_modules node ts_client.cjs CALLS_JSON -- SERVER_CMD [ARGS...]
// Prints one JSON object: the server's name, the tools listed, and per call the tool and whether
// the result was an error.
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

async function main() {
  const sep = process.argv.indexOf("--");
  const calls = JSON.parse(process.argv[2]);
  const [command, ...args] = process.argv.slice(sep + 1);
  const transport = new StdioClientTransport({ command, args, stderr: "ignore" });
  const client = new Client({ name: "ts-agent", version: "1.0.0" });
  await client.connect(transport);
  const out = { server_info: client.getServerVersion(), calls: [] };
  const tools = await client.listTools();
  out.tools = tools.tools.map((t) => t.name);
  for (const c of calls) {
    const r = await client.callTool({ name: c.tool, arguments: c.arguments });
    out.calls.push({ tool: c.tool, is_error: !!r.isError, text: (r.content || []).map((x) => x.text || "").join("") });
  }
  await client.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
