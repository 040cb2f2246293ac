"""The HTTP transport: every service of the gRPC port, over HTTP/1.1, with
the Connect protocol (unary and server streams, JSON and binary), gRPC-Web,
and plain JSON POST; plus /healthz, /readyz, CORS and the browser pages'
hook (docs/http.md).

  registry.py   the adapter: each RPC's core Endpoint, from the descriptors
  calls.py      around each call: request id, admission, deadline,
                authentication, error mapping, access log
  codecs.py     binary and JSON for google.protobuf messages
  log_download.py  GET /builds/{id}/logs.txt: a build's log as text, with
                ReadBuildLogText's credentials, rule and bytes
  app.py        the ASGI application: health, CORS, pages, then the RPCs
  server.py     uvicorn in this process's event loop

No grpc here: what both transports share is in server.transport.
"""
