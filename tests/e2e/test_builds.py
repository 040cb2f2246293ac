"""BuildService: CRUD, list filters, the status machine, review gates and
concurrent moves. (WatchBuild, logs and events have their own tests.)"""

from __future__ import annotations

import uuid

import grpc
import pytest
from buildplatform.v1 import app_spec_pb2, project_pb2, user_pb2
from buildplatform.v1 import build_pb2 as pb
from google.protobuf import struct_pb2

from server.domain.limits import MAX_KEPT_REVIEWS, MAX_REVIEW_COMMENT_CHARS
from tests.e2e.expect import code_of, failure, invalid, race
from tests.support import mask

S = pb.BuildStatus
PENDING, INITIALIZING, RUNNING, PAUSED = S.Value("BUILD_STATUS_PENDING"), S.Value("BUILD_STATUS_INITIALIZING"), S.Value("BUILD_STATUS_RUNNING"), S.Value("BUILD_STATUS_PAUSED")
DESIGN, FEATURE = S.Value("BUILD_STATUS_AWAITING_DESIGN_REVIEW"), S.Value("BUILD_STATUS_AWAITING_FEATURE_REVIEW")
COMPLETED, FAILED, CANCELLED = S.Value("BUILD_STATUS_COMPLETED"), S.Value("BUILD_STATUS_FAILED"), S.Value("BUILD_STATUS_CANCELLED")
APPROVE, REQUEST_CHANGES, REJECT = pb.REVIEW_DECISION_APPROVE, pb.REVIEW_DECISION_REQUEST_CHANGES, pb.REVIEW_DECISION_REJECT

# How to reach each status from PENDING with TransitionBuild.
PATH = {
    PENDING: [],
    INITIALIZING: [INITIALIZING],
    RUNNING: [INITIALIZING, RUNNING],
    PAUSED: [INITIALIZING, RUNNING, PAUSED],
    DESIGN: [INITIALIZING, RUNNING, DESIGN],
    FEATURE: [INITIALIZING, RUNNING, FEATURE],
    COMPLETED: [INITIALIZING, RUNNING, COMPLETED],
    FAILED: [FAILED],
    CANCELLED: [CANCELLED],
}
# The contract's table (build.proto), written out independently of the server's.
ALLOWED = {
    PENDING: {INITIALIZING, CANCELLED, FAILED},
    INITIALIZING: {RUNNING, CANCELLED, FAILED},
    RUNNING: {PAUSED, DESIGN, FEATURE, COMPLETED, CANCELLED, FAILED},
    PAUSED: {RUNNING, CANCELLED, FAILED},
    DESIGN: {CANCELLED, FAILED},  # RUNNING only through ReviewBuild
    FEATURE: {CANCELLED, FAILED},
    COMPLETED: set(),
    FAILED: set(),
    CANCELLED: set(),
}
NAME = S.Name


def move(api, build_id: str, status: int, reason: str = "", etag: str = "") -> pb.Build:
    return api.builds.TransitionBuild(pb.TransitionBuildRequest(id=build_id, status=status, reason=reason, etag=etag)).build


def walk(api, build: pb.Build, status: int) -> pb.Build:
    for step in PATH[status]:
        build = move(api, build.id, step)
    return build


def get(api, build_id: str) -> pb.Build:
    return api.builds.GetBuild(pb.GetBuildRequest(id=build_id)).build



def new_user(api) -> user_pb2.User:
    clerk = f"clerk_{uuid.uuid4().hex[:12]}"
    return api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email="b@example.com"))).user


def new_project(api, user_id: str) -> project_pb2.Project:
    return api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user_id, name="p"))).project


# --- CreateBuild -----------------------------------------------------------------


def test_created_build_is_pending_without_start_or_finish_time(build, user, project):
    assert build.status == PENDING
    assert (build.user_id, build.project_id) == (user.id, project.id)
    assert not build.HasField("start_time") and not build.HasField("finish_time")
    assert build.reviews == [] and build.status_reason == ""


def test_create_build_ignores_output_only_status(api, user, project):
    build = api.builds.CreateBuild(
        pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=project.id, app_spec="x", status=COMPLETED))
    ).build
    assert build.status == PENDING


def test_create_build_from_an_app_spec_copies_its_content(api, user, project):
    spec = api.specs.CreateAppSpec(
        app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# from spec"))
    ).app_spec
    build = api.builds.CreateBuild(pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=project.id, app_spec_id=spec.id))).build
    assert (build.app_spec, build.app_spec_id) == ("# from spec", spec.id)


def test_create_build_keeps_optional_fields(api, user, project):
    request = pb.Build(user_id=user.id, project_id=project.id, app_spec="x", sandbox_id="sbx-1", output_url="https://o", artifact_key="k")
    request.progress.update({"features": [{"name": "login", "done": False}]})
    build = api.builds.CreateBuild(pb.CreateBuildRequest(build=request)).build
    assert (build.sandbox_id, build.output_url, build.artifact_key) == ("sbx-1", "https://o", "k")
    assert build.progress == request.progress


def test_create_build_without_app_spec_or_app_spec_id_is_invalid_argument(api, user, project):
    invalid(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=project.id)), "build.app_spec")


def test_create_build_with_malformed_ids_names_each_field(api):
    got = invalid(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id="u", project_id="p", app_spec="x")), "build.user_id")
    assert "build.project_id" in got.violations


def test_create_build_in_unknown_project_is_not_found(api, user):
    got = failure(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id="c" + "f" * 24, app_spec="x")))
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_create_build_for_unknown_user_is_not_found(api, project):
    got = failure(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id="c" + "g" * 24, project_id=project.id, app_spec="x")))
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_create_build_in_another_users_project_is_failed_precondition(api, user):
    foreign = new_project(api, new_user(api).id)
    got = failure(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=foreign.id, app_spec="x")))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "PROJECT_OWNER_MISMATCH"


def test_create_build_from_another_projects_app_spec_is_failed_precondition(api, user, project):
    elsewhere = new_project(api, user.id)
    spec = api.specs.CreateAppSpec(
        app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=elsewhere.id, content="x"))
    ).app_spec
    got = failure(api.builds.CreateBuild, pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=project.id, app_spec_id=spec.id)))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "APP_SPEC_PROJECT_MISMATCH"


def test_create_build_from_unknown_app_spec_is_not_found(api, user, project):
    got = failure(
        api.builds.CreateBuild,
        pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=project.id, app_spec_id="c" + "h" * 24)),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND


# --- GetBuild / ListBuilds ---------------------------------------------------------


def test_get_unknown_build_is_not_found(api):
    assert code_of(api.builds.GetBuild, pb.GetBuildRequest(id="c" + "i" * 24)) == grpc.StatusCode.NOT_FOUND


def test_list_builds_filters_by_project_newest_first(api, user, project, make_build):
    mine = [make_build().id for _ in range(3)]
    other = new_project(api, user.id)
    api.builds.CreateBuild(pb.CreateBuildRequest(build=pb.Build(user_id=user.id, project_id=other.id, app_spec="x")))
    listed = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id)).builds
    assert [b.id for b in listed] == list(reversed(mine))
    assert len(api.builds.ListBuilds(pb.ListBuildsRequest(user_id=user.id)).builds) == 4


def test_list_builds_filters_by_a_set_of_statuses(api, project, make_build):
    pending, running, failed = make_build(), walk(api, make_build(), RUNNING), walk(api, make_build(), FAILED)
    listed = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id, statuses=[RUNNING, FAILED])).builds
    assert {b.id for b in listed} == {running.id, failed.id}
    only_pending = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id, statuses=[PENDING])).builds
    assert [b.id for b in only_pending] == [pending.id]


def test_list_builds_pages_stay_correct_while_builds_are_created(api, project, make_build):
    before = [make_build().id for _ in range(7)]
    seen: list[str] = []
    token = ""
    while True:
        page = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id, page_size=3, page_token=token))
        seen += [b.id for b in page.builds]
        make_build()
        make_build()
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(before))


def test_list_builds_token_is_valid_for_the_same_statuses_in_any_order(api, project, make_build):
    for _ in range(3):
        walk(api, make_build(), RUNNING)
    first = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id, statuses=[RUNNING, FAILED], page_size=2))
    rest = api.builds.ListBuilds(
        pb.ListBuildsRequest(project_id=project.id, statuses=[FAILED, RUNNING], page_size=2, page_token=first.next_page_token)
    )
    assert len(first.builds) == 2 and len(rest.builds) == 1


def test_list_builds_token_reused_with_other_statuses_is_invalid_argument(api, project, make_build):
    for _ in range(2):
        make_build()
    token = api.builds.ListBuilds(pb.ListBuildsRequest(project_id=project.id, page_size=1)).next_page_token
    assert token
    invalid(api.builds.ListBuilds, pb.ListBuildsRequest(project_id=project.id, statuses=[PENDING], page_token=token), "page_token")


def test_list_builds_with_unspecified_status_filter_is_invalid_argument(api):
    invalid(api.builds.ListBuilds, pb.ListBuildsRequest(statuses=[RUNNING, S.Value("BUILD_STATUS_UNSPECIFIED")]), "statuses[1]")


# --- UpdateBuild -------------------------------------------------------------------


def test_update_build_changes_only_masked_fields(api, build):
    request = pb.Build(id=build.id, sandbox_id="sbx-9", output_url="https://ignored")
    request.progress.update({"done": 3, "total": 5})
    updated = api.builds.UpdateBuild(pb.UpdateBuildRequest(build=request, update_mask=mask("sandbox_id", "progress"))).build
    assert updated.sandbox_id == "sbx-9"
    assert updated.progress == request.progress
    assert not updated.HasField("output_url")
    assert updated.status == PENDING and updated.etag != build.etag


def test_update_build_app_spec_while_pending(api, build):
    updated = api.builds.UpdateBuild(pb.UpdateBuildRequest(build=pb.Build(id=build.id, app_spec="# v2"), update_mask=mask("app_spec"))).build
    assert updated.app_spec == "# v2"


def test_update_build_app_spec_after_start_is_failed_precondition(api, build):
    started = walk(api, build, INITIALIZING)
    got = failure(api.builds.UpdateBuild, pb.UpdateBuildRequest(build=pb.Build(id=build.id, app_spec="# v2"), update_mask=mask("app_spec")))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert get(api, build.id) == started


def test_update_build_mask_naming_status_is_invalid_argument(api, build):
    invalid(
        api.builds.UpdateBuild,
        pb.UpdateBuildRequest(build=pb.Build(id=build.id, status=COMPLETED), update_mask=mask("progress", "status")),
        "update_mask.paths[1]",
    )
    assert get(api, build.id) == build


@pytest.mark.parametrize("path", ["user_id", "project_id", "app_spec_id", "reviews", "start_time", "etag"])
def test_update_build_mask_naming_an_immutable_field_is_invalid_argument(api, build, path):
    invalid(api.builds.UpdateBuild, pb.UpdateBuildRequest(build=pb.Build(id=build.id), update_mask=mask(path)), "update_mask.paths[0]")


def test_update_build_mask_naming_an_unknown_field_is_invalid_argument(api, build):
    invalid(api.builds.UpdateBuild, pb.UpdateBuildRequest(build=pb.Build(id=build.id), update_mask=mask("colour")), "update_mask.paths[0]")


def test_update_build_with_stale_etag_is_aborted(api, build):
    move(api, build.id, INITIALIZING)
    got = failure(
        api.builds.UpdateBuild,
        pb.UpdateBuildRequest(build=pb.Build(id=build.id, sandbox_id="s", etag=build.etag), update_mask=mask("sandbox_id")),
    )
    assert got.code == grpc.StatusCode.ABORTED


def test_update_of_unknown_build_is_not_found(api):
    got = failure(api.builds.UpdateBuild, pb.UpdateBuildRequest(build=pb.Build(id="c" + "j" * 24, sandbox_id="s"), update_mask=mask("sandbox_id")))
    assert got.code == grpc.StatusCode.NOT_FOUND


# --- DeleteBuild -------------------------------------------------------------------


def test_delete_build_then_get_is_not_found(api, build):
    api.builds.DeleteBuild(pb.DeleteBuildRequest(id=build.id))
    assert code_of(api.builds.GetBuild, pb.GetBuildRequest(id=build.id)) == grpc.StatusCode.NOT_FOUND


def test_delete_build_with_stale_etag_is_aborted(api, build):
    move(api, build.id, INITIALIZING)
    assert code_of(api.builds.DeleteBuild, pb.DeleteBuildRequest(id=build.id, etag=build.etag)) == grpc.StatusCode.ABORTED
    assert get(api, build.id).status == INITIALIZING


def test_delete_of_unknown_build_is_not_found(api):
    assert code_of(api.builds.DeleteBuild, pb.DeleteBuildRequest(id="c" + "k" * 24)) == grpc.StatusCode.NOT_FOUND


# --- TransitionBuild and CancelBuild ---------------------------------------------------


def test_a_build_runs_from_pending_to_completed(api, build):
    initializing = move(api, build.id, INITIALIZING)
    assert initializing.HasField("start_time") and not initializing.HasField("finish_time")
    running = move(api, build.id, RUNNING)
    assert running.start_time == initializing.start_time
    completed = move(api, build.id, COMPLETED)
    assert completed.status == COMPLETED
    assert completed.HasField("finish_time")
    assert completed.finish_time.ToDatetime() >= completed.start_time.ToDatetime()
    assert get(api, build.id) == completed


@pytest.mark.parametrize("current", list(ALLOWED), ids=NAME)
def test_transition_build_follows_the_documented_state_machine(api, make_build, current):
    for requested in [s for s in S.values() if s != S.Value("BUILD_STATUS_UNSPECIFIED")]:
        build = walk(api, make_build(), current)
        if requested in ALLOWED[current]:
            assert move(api, build.id, requested).status == requested
        else:
            got = failure(api.builds.TransitionBuild, pb.TransitionBuildRequest(id=build.id, status=requested))
            assert got.code == grpc.StatusCode.FAILED_PRECONDITION, (NAME(current), NAME(requested))
            assert got.metadata == {
                "current_status": NAME(current).removeprefix("BUILD_STATUS_"),
                "requested_status": NAME(requested).removeprefix("BUILD_STATUS_"),
            }
            assert get(api, build.id) == build  # a refused move writes nothing


def test_refused_transition_message_names_current_and_requested_status(api, build):
    got = failure(api.builds.TransitionBuild, pb.TransitionBuildRequest(id=build.id, status=COMPLETED))
    assert "PENDING" in got.message and "COMPLETED" in got.message
    assert got.reason == "INVALID_STATUS_TRANSITION"


@pytest.mark.parametrize("gate", [DESIGN, FEATURE], ids=NAME)
def test_transition_from_a_review_gate_to_running_is_failed_precondition(api, build, gate):
    waiting = walk(api, build, gate)
    got = failure(api.builds.TransitionBuild, pb.TransitionBuildRequest(id=build.id, status=RUNNING))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "ReviewBuild" in got.message
    assert get(api, build.id) == waiting


def test_transition_to_unspecified_status_is_invalid_argument(api, build):
    invalid(api.builds.TransitionBuild, pb.TransitionBuildRequest(id=build.id), "status")


def test_transition_of_unknown_build_is_not_found(api):
    assert code_of(api.builds.TransitionBuild, pb.TransitionBuildRequest(id="c" + "l" * 24, status=INITIALIZING)) == grpc.StatusCode.NOT_FOUND


def test_transition_with_stale_etag_is_aborted(api, build):
    move(api, build.id, INITIALIZING)
    got = failure(api.builds.TransitionBuild, pb.TransitionBuildRequest(id=build.id, status=RUNNING, etag=build.etag))
    assert got.code == grpc.StatusCode.ABORTED
    assert get(api, build.id).status == INITIALIZING


def test_transition_with_current_etag_succeeds(api, build):
    assert move(api, build.id, INITIALIZING, etag=build.etag).status == INITIALIZING


def test_failing_a_build_keeps_the_reason(api, build):
    failed = move(api, build.id, FAILED, reason="sandbox out of memory")
    assert (failed.status, failed.status_reason) == (FAILED, "sandbox out of memory")
    assert failed.HasField("finish_time")


def test_a_paused_build_resumes_running_with_its_start_time(api, build):
    running = walk(api, build, RUNNING)
    move(api, build.id, PAUSED)
    resumed = move(api, build.id, RUNNING)
    assert resumed.status == RUNNING and resumed.start_time == running.start_time


def test_cancel_of_pending_build_cancels_it_with_the_reason(api, build):
    cancelled = api.builds.CancelBuild(pb.CancelBuildRequest(id=build.id, reason="changed my mind")).build
    assert (cancelled.status, cancelled.status_reason) == (CANCELLED, "changed my mind")
    assert cancelled.HasField("finish_time")


@pytest.mark.parametrize("gate", [PAUSED, DESIGN, FEATURE], ids=NAME)
def test_cancel_of_a_paused_or_waiting_build_cancels_it(api, build, gate):
    walk(api, build, gate)
    assert api.builds.CancelBuild(pb.CancelBuildRequest(id=build.id)).build.status == CANCELLED


@pytest.mark.parametrize("terminal", [COMPLETED, FAILED, CANCELLED], ids=NAME)
def test_cancel_of_finished_build_is_failed_precondition(api, build, terminal):
    finished = walk(api, build, terminal)
    got = failure(api.builds.CancelBuild, pb.CancelBuildRequest(id=build.id))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.metadata["current_status"] == NAME(terminal).removeprefix("BUILD_STATUS_")
    assert get(api, build.id) == finished


def test_cancel_of_completed_build_is_failed_precondition(api, build):
    walk(api, build, COMPLETED)
    assert code_of(api.builds.CancelBuild, pb.CancelBuildRequest(id=build.id)) == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_with_stale_etag_is_aborted(api, build):
    move(api, build.id, INITIALIZING)
    assert code_of(api.builds.CancelBuild, pb.CancelBuildRequest(id=build.id, etag=build.etag)) == grpc.StatusCode.ABORTED


# --- ReviewBuild ---------------------------------------------------------------------


def review(api, build_id: str, decision: int, comment: str = "", reviewer: str = "ada@example.com", etag: str = "") -> pb.Build:
    return api.builds.ReviewBuild(
        pb.ReviewBuildRequest(id=build_id, decision=decision, comment=comment, reviewer=reviewer, etag=etag)
    ).build


def test_approving_the_design_resumes_running_and_records_the_review(api, build):
    walk(api, build, DESIGN)
    approved = review(api, build.id, APPROVE, "looks good")
    assert approved.status == RUNNING
    assert len(approved.reviews) == 1
    entry = approved.reviews[0]
    assert (entry.gate, entry.decision, entry.comment, entry.reviewer) == (DESIGN, APPROVE, "looks good", "ada@example.com")
    assert entry.create_time.seconds > 0
    assert not approved.HasField("finish_time")


def test_requesting_changes_to_a_feature_resumes_running(api, build):
    walk(api, build, FEATURE)
    changed = review(api, build.id, REQUEST_CHANGES, "make the button blue")
    assert changed.status == RUNNING
    assert (changed.reviews[0].gate, changed.reviews[0].decision) == (FEATURE, REQUEST_CHANGES)


def test_rejecting_at_review_cancels_the_build_with_the_comment(api, build):
    walk(api, build, DESIGN)
    rejected = review(api, build.id, REJECT, "wrong product")
    assert (rejected.status, rejected.status_reason) == (CANCELLED, "wrong product")
    assert rejected.HasField("finish_time")
    assert rejected.reviews[0].decision == REJECT


def test_review_history_is_kept_oldest_first(api, build):
    walk(api, build, DESIGN)
    review(api, build.id, REQUEST_CHANGES, "first")
    move(api, build.id, DESIGN)
    review(api, build.id, APPROVE, "second")
    move(api, build.id, FEATURE)
    done = review(api, build.id, APPROVE, "third")
    assert [(r.gate, r.comment) for r in done.reviews] == [(DESIGN, "first"), (DESIGN, "second"), (FEATURE, "third")]
    assert get(api, build.id).reviews == done.reviews


def test_a_build_sent_back_again_and_again_keeps_its_newest_reviews_and_stays_readable(api, build):
    """Comments of the largest size (20,000 four-byte characters), 60 rounds:
    every response carrying the build stays under a default client's 4 MiB."""
    walk(api, build, DESIGN)
    comment = "\U0001F600" * MAX_REVIEW_COMMENT_CHARS
    for round_ in range(60):
        review(api, build.id, REQUEST_CHANGES, f"{round_} {comment}"[:MAX_REVIEW_COMMENT_CHARS])
        move(api, build.id, DESIGN)
    kept = get(api, build.id).reviews
    assert len(kept) == MAX_KEPT_REVIEWS
    assert [r.comment.split(" ")[0] for r in kept] == [str(n) for n in range(60 - MAX_KEPT_REVIEWS, 60)]
    listed = api.builds.ListBuilds(pb.ListBuildsRequest(user_id=build.user_id)).builds
    assert [b.id for b in listed] == [build.id] and len(listed[0].reviews) == MAX_KEPT_REVIEWS


@pytest.mark.parametrize("current", [PENDING, RUNNING, PAUSED, COMPLETED], ids=NAME)
def test_review_of_a_build_not_awaiting_review_is_failed_precondition(api, build, current):
    before = walk(api, build, current)
    got = failure(api.builds.ReviewBuild, pb.ReviewBuildRequest(id=build.id, decision=APPROVE, reviewer="r"))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.metadata["current_status"] == NAME(current).removeprefix("BUILD_STATUS_")
    assert get(api, build.id) == before


def test_review_without_decision_is_invalid_argument(api, build):
    walk(api, build, DESIGN)
    invalid(api.builds.ReviewBuild, pb.ReviewBuildRequest(id=build.id, reviewer="r"), "decision")


def test_review_without_reviewer_is_invalid_argument(api, build):
    waiting = walk(api, build, DESIGN)
    invalid(api.builds.ReviewBuild, pb.ReviewBuildRequest(id=build.id, decision=APPROVE), "reviewer")
    assert get(api, build.id) == waiting


def test_review_with_stale_etag_is_aborted(api, build):
    waiting = walk(api, build, DESIGN)
    got = failure(api.builds.ReviewBuild, pb.ReviewBuildRequest(id=build.id, decision=APPROVE, reviewer="r", etag=build.etag))
    assert got.code == grpc.StatusCode.ABORTED
    assert review(api, build.id, APPROVE, etag=waiting.etag).status == RUNNING


def test_review_of_unknown_build_is_not_found(api):
    assert code_of(api.builds.ReviewBuild, pb.ReviewBuildRequest(id="c" + "m" * 24, decision=APPROVE, reviewer="r")) == grpc.StatusCode.NOT_FOUND


# --- concurrency ---------------------------------------------------------------------


def test_of_ten_concurrent_moves_from_running_exactly_one_wins(api, build):
    walk(api, build, RUNNING)
    targets = [COMPLETED if i % 2 else FAILED for i in range(10)]
    results = race(10, lambda i: move(api, build.id, targets[i], reason=f"mover {i}"))
    winners = [(i, r) for i, r in results if isinstance(r, pb.Build)]
    losers = [r for _, r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1 and len(losers) == 9
    index, winner = winners[0]
    assert winner.status == targets[index]
    final = get(api, build.id)
    assert (final.status, final.status_reason) == (targets[index], f"mover {index}")
    for loser in losers:
        assert loser.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert NAME(final.status).removeprefix("BUILD_STATUS_") in loser.details()


def test_of_concurrent_reviews_of_one_gate_exactly_one_is_recorded(api, build):
    walk(api, build, DESIGN)
    decisions = [APPROVE if i % 2 else REJECT for i in range(8)]
    results = race(8, lambda i: review(api, build.id, decisions[i], comment=f"r{i}"))
    winners = [(i, r) for i, r in results if isinstance(r, pb.Build)]
    assert len(winners) == 1
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for _, r in results if isinstance(r, grpc.RpcError))
    final = get(api, build.id)
    assert [r.comment for r in final.reviews] == [f"r{winners[0][0]}"]


def test_concurrent_updates_of_different_fields_lose_neither(api, build):
    def act(index: int) -> pb.Build:
        if index == 0:
            return move(api, build.id, INITIALIZING)
        request = pb.Build(id=build.id)
        field = ["sandbox_id", "output_url", "artifact_key"][index - 1]
        setattr(request, field, f"value-{index}")
        return api.builds.UpdateBuild(pb.UpdateBuildRequest(build=request, update_mask=mask(field))).build

    results = race(4, act)
    assert all(isinstance(r, pb.Build) for _, r in results)
    final = get(api, build.id)
    assert final.status == INITIALIZING
    assert (final.sandbox_id, final.output_url, final.artifact_key) == ("value-1", "value-2", "value-3")
    assert int(final.etag) == int(build.etag) + 4


def test_progress_with_nan_is_invalid_argument_naming_the_key(api, build):
    request = pb.Build(id=build.id)
    request.progress.fields["ratio"].CopyFrom(struct_pb2.Value(number_value=float("nan")))
    invalid(api.builds.UpdateBuild, pb.UpdateBuildRequest(build=request, update_mask=mask("progress")), "build.progress.ratio")
    assert get(api, build.id) == build
