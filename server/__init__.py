"""buildplatform: the gRPC system of record of the app-building platform.

Layers, with one direction of dependency (rpc -> domain, store; store -> domain):
  server.rpc     transport: servicers, wire <-> row conversion, error mapping
  server.domain  rules with no I/O: the build state machine, validation, errors
  server.store   PostgreSQL: models, queries, LISTEN/NOTIFY fan-out
"""
