"""Quickstart: create a build, write its log, and follow the log live until
the build ends. Run: BUILDPLATFORM_TOKEN=$(cat .data/admin-token) python quickstart.py 127.0.0.1:50051
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import grpc
from buildplatform.v1 import (
    build_log_pb2,
    build_log_pb2_grpc,
    build_pb2,
    build_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)


async def follow(
    logs: build_log_pb2_grpc.BuildLogServiceAsyncStub, build_id: str, caught_up: asyncio.Event
) -> None:
    """Print the log like `tail -f`: first the backlog, then a message with
    caught_up set, then live lines; the stream ends once the build has ended."""
    request = build_log_pb2.StreamBuildLogsRequest(build_id=build_id, follow=True)
    async for response in logs.StreamBuildLogs(request):
        for log in response.logs:
            print(
                log.sequence,
                build_log_pb2.LogLevel.Name(log.level).removeprefix("LOG_LEVEL_"),
                log.message,
            )
        if response.caught_up:
            print("-- caught up, now live --")
            caught_up.set()


async def main(address: str) -> None:
    # Plaintext to this machine, with the token on every call (see first_call.py).
    token = grpc.access_token_call_credentials(os.environ["BUILDPLATFORM_TOKEN"])
    credentials = grpc.composite_channel_credentials(grpc.local_channel_credentials(), token)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        projects = project_pb2_grpc.ProjectServiceStub(channel)
        builds = build_pb2_grpc.BuildServiceStub(channel)
        logs = build_log_pb2_grpc.BuildLogServiceStub(channel)

        clerk_id = f"quickstart-{uuid.uuid4()}"
        user = (
            await users.CreateUser(
                user_pb2.CreateUserRequest(
                    user=user_pb2.User(
                        clerk_id=clerk_id, email=f"{clerk_id}@example.com", name="Quickstart"
                    )
                )
            )
        ).user
        project = (
            await projects.CreateProject(
                project_pb2.CreateProjectRequest(
                    project=project_pb2.Project(user_id=user.id, name="Todo app")
                )
            )
        ).project
        build = (
            await builds.CreateBuild(
                build_pb2.CreateBuildRequest(
                    build=build_pb2.Build(
                        user_id=user.id, project_id=project.id, app_spec="# A todo app"
                    )
                )
            )
        ).build
        await logs.AppendBuildLogs(
            build_log_pb2.AppendBuildLogsRequest(
                build_id=build.id,
                entries=[
                    build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="queued")
                ],
            )
        )

        caught_up = asyncio.Event()
        following = asyncio.create_task(follow(logs, build.id, caught_up))
        await caught_up.wait()

        # Meanwhile the build agent runs the build and writes its log.
        for status in (build_pb2.BUILD_STATUS_INITIALIZING, build_pb2.BUILD_STATUS_RUNNING):
            await builds.TransitionBuild(
                build_pb2.TransitionBuildRequest(id=build.id, status=status)
            )
        await logs.AppendBuildLogs(
            build_log_pb2.AppendBuildLogsRequest(
                build_id=build.id,
                entries=[
                    build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="compiling"),
                    build_log_pb2.LogEntry(
                        level=build_log_pb2.LOG_LEVEL_TOOL, message="npm test: 12 passed"
                    ),
                ],
            )
        )
        await builds.TransitionBuild(
            build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED)
        )

        await following
        done = (await builds.GetBuild(build_pb2.GetBuildRequest(id=build.id))).build
        print(
            f"build {build.id} ended {build_pb2.BuildStatus.Name(done.status).removeprefix('BUILD_STATUS_')}"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
