"""A call over TLS with a bearer token: the five newest builds.
Run: BUILDPLATFORM_TOKEN=... python tls_call.py builds.internal:443 ca.pem
"""

import os
import sys

import grpc
from buildplatform.v1 import build_pb2, build_pb2_grpc

address, ca_file = sys.argv[1], sys.argv[2]
with open(ca_file, "rb") as ca:
    tls = grpc.ssl_channel_credentials(root_certificates=ca.read())
# The token goes with every call, as `authorization: Bearer <token>` metadata.
token = grpc.access_token_call_credentials(os.environ["BUILDPLATFORM_TOKEN"])
with grpc.secure_channel(address, grpc.composite_channel_credentials(tls, token)) as channel:
    builds = build_pb2_grpc.BuildServiceStub(channel)
    response = builds.ListBuilds(build_pb2.ListBuildsRequest(page_size=5))
    for build in response.builds:
        print(build.id, build_pb2.BuildStatus.Name(build.status))
