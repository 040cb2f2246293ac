"""Rules with no I/O: nothing here imports grpc or SQLAlchemy."""
