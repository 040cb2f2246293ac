"""The service core: every RPC as a plain async function, whatever the transport.

One module per service (`users`, `projects`, `builds`, `feeds` for logs and
events, `chat_sessions`, `app_specs`), each function taking the injected
`Deps`, the calling `Principal` and the protobuf request, and returning the
protobuf response or raising a domain error. Nothing here imports grpc: the
gRPC transport (`server.rpc`) and the HTTP transport (`server.http`) are two
thin adapters over these functions. Each service's converters
(wire <-> typed row) sit beside it in `<service>_wire.py`.

Dependencies run one way: transport -> core -> domain (rules, no I/O) and
store (locks, reads and writes; it picks its own pool).
"""
