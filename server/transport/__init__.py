"""What every transport (server/rpc: gRPC, server/http: Connect, gRPC-Web and
JSON) does the same way around the core, written once:

  status.py   the one map from domain errors to google.rpc.Status, with details
  calls.py    admission limits and the drain at shutdown (one `Calls` per
              process, shared by the transports), the request id, how a
              call's error is settled, and the access log line

No grpc and no HTTP library here: each transport turns a google.rpc.Status
into its own wire form (grpc-status trailers, a Connect error).
"""
