"""PostgreSQL access. Never imports grpc; raises server.domain.errors."""
