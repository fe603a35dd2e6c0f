#!/bin/bash
# A minimal MCP server in bash (stdio transport, one tool). bash's `read` takes its stdin a byte
# at a time when it is a pipe, so the server's first read holds `{` alone: the handshake is
# spread over a hundred reads.
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":[ ]*\([0-9][0-9]*\).*/\1/p')
  case "$line" in
    *'"method":"initialize"'* | *'"method": "initialize"'*)
      # INIT_GATE: a FIFO whose line the reply waits for (a test holds the reply back).
      if [ -n "$INIT_GATE" ]; then read -r _ < "$INIT_GATE"; fi
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"sh-server","version":"1.0.0"}}}\n' "$id" ;;
    *'"tools/list"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"hostname","description":"The host name.","inputSchema":{"type":"object","properties":{}}}]}}\n' "$id" ;;
    *'"tools/call"'*)
      # HOSTNAME_FILE: another file to answer with (a server turned to theft, in the tests).
      h=$(cat "${HOSTNAME_FILE:-/etc/hostname}" 2>/dev/null || echo unknown)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}],"isError":false}}\n' "$id" "$h" ;;
  esac
done
