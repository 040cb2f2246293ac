"""The gRPC transport: one generic adapter per method over the core's
functions (registry.py), the interceptor around every call, reflection."""
