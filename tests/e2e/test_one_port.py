"""Several server processes can serve one port (REUSE_PORT=true, grpc.so_reuseport),
the way docs/operations.md says to use more than one core on a machine; without
it, a second server on a port in use refuses to start."""

from __future__ import annotations

from buildplatform.v1 import user_pb2

from tests.support import free_port, open_channel, running_server, stubs


def test_two_processes_serve_one_port_and_either_can_stop(database_url, user):
    port = free_port()
    address = f"127.0.0.1:{port}"
    with running_server(database_url, GRPC_ADDRESS=address, REUSE_PORT="true") as first:
        with running_server(database_url, GRPC_ADDRESS=address, REUSE_PORT="true") as second:
            assert first.port == second.port == port
            assert first.proc is not None and second.proc is not None
            assert first.proc.pid != second.proc.pid
            for _ in range(20):  # new connections, spread by the kernel over both
                with open_channel(address, token=first.token) as channel:
                    got = stubs(channel).users.GetUser(user_pb2.GetUserRequest(id=user.id), timeout=10).user
                    assert got.clerk_id == user.clerk_id
            # Both processes took calls (all 20 connections going to one of
            # them has a probability of about 2 in a million).
            for proc in (first, second):
                assert '"method": "/buildplatform.v1.UserService/GetUser"' in proc.log(), proc.log()
        # The second process stopped cleanly; the first still serves the port.
        for _ in range(5):
            with open_channel(address, token=first.token) as channel:
                assert stubs(channel).users.GetUser(user_pb2.GetUserRequest(id=user.id), timeout=10).user.id == user.id
