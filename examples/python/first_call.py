"""A first call: the five newest builds. Run: python first_call.py 127.0.0.1:50051"""

import sys

import grpc
from buildplatform.v1 import build_pb2, build_pb2_grpc

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
with grpc.insecure_channel(address) as channel:
    builds = build_pb2_grpc.BuildServiceStub(channel)
    response = builds.ListBuilds(build_pb2.ListBuildsRequest(page_size=5))
    for build in response.builds:
        print(build.id, build_pb2.BuildStatus.Name(build.status))
