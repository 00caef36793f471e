"""Actions (retry, cancel, pause, resume, dlq retry) exist only with
--allow-actions, and then only with the token in a header; each does
what its queuectl command does to the store."""

from __future__ import annotations

import pytest
from web_helpers import TOKEN, Client, new_job, run_to_the_end

from queuectl_core.app import App
from queuectl_core.models import ExecResult, JobState

ACTIONS = [("/api/job/retry?id=dead-1", None), ("/api/job/cancel?id=wait-1", None),
           ("/api/queues/default/pause", None), ("/api/queues/default/resume", None),
           ("/api/dlq/retry", {"all": True})]


def _dead_and_waiting(app: App) -> None:
    app.ledger.enqueue([new_job("dead-1", "exit 1")])
    run_to_the_end(app, "dead-1", ExecResult(exit_code=1, error="command exited with code 1"))
    app.ledger.enqueue([new_job("wait-1", run_at=4_102_444_800_000)])  # 2100


@pytest.mark.parametrize(("path", "body"), ACTIONS)
def test_a_read_only_server_refuses_every_action(app: App, client: Client, path: str,
                                                 body: object) -> None:
    _dead_and_waiting(app)
    answer = client(token=TOKEN).post(path, json=body, headers={"X-Queuectl-Token": TOKEN})
    assert answer.status_code == 403 and "--allow-actions" in answer.json()["detail"]


def test_actions_without_the_right_token_change_nothing(app: App, client: Client) -> None:
    _dead_and_waiting(app)
    web = client(token=TOKEN, allow_actions=True)
    for path, body in ACTIONS:
        for headers in ({}, {"X-Queuectl-Token": "wrong-token-0123456789"},
                        {"X-Queuectl-Token": TOKEN[:-1]}, {"Authorization": "Bearer nope"}):
            answer = web.post(path, json=body, headers=headers)
            assert answer.status_code == 401, (path, headers, answer.text)
    assert app.ledger.get("dead-1").state is JobState.DEAD  # type: ignore[union-attr]
    assert app.ledger.get("wait-1").state is JobState.PENDING  # type: ignore[union-attr]
    assert app.ledger.paused_queues() == []


def test_actions_with_the_token_do_what_the_commands_do(app: App, client: Client) -> None:
    _dead_and_waiting(app)
    web = client(token=TOKEN, allow_actions=True)
    key = {"X-Queuectl-Token": TOKEN}
    retried = web.post("/api/job/retry", params={"id": "dead-1"}, headers=key).json()
    assert retried["ok"] and retried["jobs"][0]["state"] == "pending"
    again = web.post("/api/job/retry", params={"id": "dead-1"}, headers=key)
    assert again.status_code == 409 and "not dead" in again.json()["detail"]
    assert web.post("/api/job/retry", params={"id": "nope"}, headers=key).status_code == 404
    cancelled = web.post("/api/job/cancel", params={"id": "wait-1"},
                         headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert cancelled["message"] == "Cancelled job wait-1."
    assert app.ledger.get("wait-1").state is JobState.CANCELLED  # type: ignore[union-attr]
    assert web.post("/api/queues/default/pause", headers=key).json()["ok"]
    assert app.ledger.paused_queues() == ["default"]
    assert web.post("/api/queues/default/resume", headers=key).json()["ok"]
    assert app.ledger.paused_queues() == []
    assert web.post("/api/queues/bad%20name/pause", headers=key).status_code == 422


def test_dlq_retry_takes_listed_ids_or_all(app: App, client: Client) -> None:
    for name in ("d1", "d2", "d3"):
        app.ledger.enqueue([new_job(name, "exit 1")])
        run_to_the_end(app, name, ExecResult(exit_code=1))
    web = client(token=TOKEN, allow_actions=True)
    key = {"X-Queuectl-Token": TOKEN}
    some = web.post("/api/dlq/retry", json={"ids": ["d1", "nope"]}, headers=key).json()
    assert some["ok"] is False and [j["id"] for j in some["jobs"]] == ["d1"]
    assert "no job with id 'nope'" in some["message"]
    rest = web.post("/api/dlq/retry", json={"all": True}, headers=key).json()
    assert sorted(j["id"] for j in rest["jobs"]) == ["d2", "d3"]
    assert app.ledger.counts()[JobState.DEAD] == 0
    assert web.post("/api/dlq/retry", json={}, headers=key).status_code == 422
