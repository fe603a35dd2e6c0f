"""An OTLP/HTTP trace receiver built on the official protobuf definitions (`opentelemetry-proto`
on PyPI): every POST /v1/traces must be `Content-Type: application/json` and parse, strictly
(no unknown field), into an ExportTraceServiceRequest with google.protobuf.json_format, after
the one deviation OTLP/JSON makes from the proto3 JSON mapping: trace and span ids are hex, not
base64 (the OpenTelemetry Collector decodes them the same way).

usage: otlp_receiver.py
Prints `PORT n` once listening on 127.0.0.1, then one JSON line per request: the parsed request
(json_format.MessageToDict, ids back in hex, their byte lengths in `_id_bytes`), or {"error": …}
for a request it refused (answered 400).
"""
import base64
import binascii
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_ids_to_base64(req):
    for rs in req.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for f in ID_FIELDS:
                    if f in span:
                        span[f] = base64.b64encode(binascii.unhexlify(span[f])).decode()


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"path {self.path}")
            if self.headers.get("Content-Type") != "application/json":
                raise ValueError(f"Content-Type {self.headers.get('Content-Type')}")
            raw = json.loads(body)
            hex_ids_to_base64(raw)
            msg = json_format.Parse(json.dumps(raw), ExportTraceServiceRequest(), ignore_unknown_fields=False)
        except Exception as e:  # anything the encoding got wrong
            emit({"error": repr(e), "body": body.decode(errors="replace")[:2000]})
            self.send_response(400)
            self.end_headers()
            return
        out = json_format.MessageToDict(msg)
        lengths = []
        for rs, prs in zip(msg.resource_spans, out.get("resourceSpans", [])):
            for ss, pss in zip(rs.scope_spans, prs.get("scopeSpans", [])):
                for span, pspan in zip(ss.spans, pss.get("spans", [])):
                    pspan["traceId"] = span.trace_id.hex()
                    pspan["spanId"] = span.span_id.hex()
                    lengths.append([len(span.trace_id), len(span.span_id)])
        out["_id_bytes"] = lengths
        emit(out)
        reply = json_format.MessageToJson(ExportTraceServiceResponse()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class Server(HTTPServer):
    def handle_error(self, request, client_address):
        # mcpmon's client reads the status line and hangs up: a reset while the reply is still
        # being written is no error of the request (those are caught and reported in do_POST).
        pass


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    sys.stdout.write(f"PORT {srv.server_address[1]}\n")
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
