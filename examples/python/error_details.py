"""An error's details: the google.rpc messages that say what was wrong.
Run: BUILDPLATFORM_TOKEN=$(cat .data/admin-token) python error_details.py 127.0.0.1:50051
"""

import os
import sys

import grpc
from buildplatform.v1 import project_pb2, project_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
token = grpc.access_token_call_credentials(os.environ["BUILDPLATFORM_TOKEN"])
credentials = grpc.composite_channel_credentials(grpc.local_channel_credentials(), token)
with grpc.secure_channel(address, credentials) as channel:
    projects = project_pb2_grpc.ProjectServiceStub(channel)
    try:
        # A project needs its user and a name: the answer names both fields.
        projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project()))
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)  # what a blocking stub raises is also the call
        print(error.code().name, error.details())
        status = rpc_status.from_call(error)  # the google.rpc.Status; None without details
        for detail in status.details if status else []:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):  # False for the other detail types
                for violation in bad_request.field_violations:
                    print(f"{violation.field}: {violation.description}")
