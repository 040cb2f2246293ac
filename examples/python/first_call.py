"""A first call: the five newest builds.
Run: BUILDPLATFORM_TOKEN=$(cat .data/admin-token) python first_call.py 127.0.0.1:50051
"""

import os
import sys

import grpc
from buildplatform.v1 import build_pb2, build_pb2_grpc

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
# The token goes with every call as `authorization: Bearer <token>`. grpc sends
# call credentials only over a secure channel: plaintext to this machine counts
# as one with local credentials (over the network, use TLS: tls_call.py).
token = grpc.access_token_call_credentials(os.environ["BUILDPLATFORM_TOKEN"])
credentials = grpc.composite_channel_credentials(grpc.local_channel_credentials(), token)
with grpc.secure_channel(address, credentials) as channel:
    builds = build_pb2_grpc.BuildServiceStub(channel)
    response = builds.ListBuilds(build_pb2.ListBuildsRequest(page_size=5))
    for build in response.builds:
        print(build.id, build_pb2.BuildStatus.Name(build.status))
