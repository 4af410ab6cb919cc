"""Every REST call the SDK makes, described once and sent by both the sync and async client.

A :class:`Call` says what to send and how to read the answer; the clients only do the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from gentity import models

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: ``POST /api/instances`` blocks until the machine is started, which can take minutes (a
#: first install among them): as long as the server allows.
CREATE_TIMEOUT = float(models.CREATE_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    timeout: float | None = None
    """Overrides the client's timeout for slow calls; None keeps it."""


def _model(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _ok(_: Any) -> None:
    return None


def _seg(value: str) -> str:
    # Ids come from users; quote them so "../tokens" cannot walk to another route.
    return quote(value, safe="")


def catalog() -> Call[list[models.Agent]]:
    return Call(
        "GET", "/api/catalog/agents", lambda d: models.AgentCatalog.model_validate(d).agents
    )


def login(email: str, password: str) -> Call[models.UserInfo]:
    body = {"email": email, "password": password}
    return Call("POST", "/api/auth/login", _model(models.UserInfo), json=body)


def logout() -> Call[None]:
    return Call("POST", "/api/auth/logout", _ok)


def me() -> Call[models.UserInfo]:
    return Call("GET", "/api/auth/me", _model(models.UserInfo))


def list_tokens() -> Call[list[models.TokenRecord]]:
    return Call("GET", "/api/tokens", lambda d: models.TokenList.model_validate(d).tokens)


def create_token(name: str) -> Call[models.TokenCreated]:
    return Call("POST", "/api/tokens", _model(models.TokenCreated), json={"name": name})


def revoke_token(token_id: str) -> Call[None]:
    return Call("DELETE", f"/api/tokens/{_seg(token_id)}", _ok)


def list_instances() -> Call[list[models.Instance]]:
    return Call("GET", "/api/instances", lambda d: models.InstanceList.model_validate(d).instances)


def get_instance(instance_id: str) -> Call[models.Instance]:
    return Call("GET", f"/api/instances/{_seg(instance_id)}", _model(models.Instance))


def create_instance(
    agent_type: str,
    model_provider: str,
    model_name: str,
    api_key: str | None = None,
    name: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
    repo: str | None = None,
    auto_stop_minutes: int | None = None,
    wait: bool = True,
    restart_policy: str | None = None,
) -> Call[models.InstanceCreated]:
    # A plain dict, not models.InstanceCreateRequest: the server validates and answers with a
    # 400 naming the field, which is the one error path callers have to handle anyway.
    fields = {
        "name": name,
        "agentType": agent_type,
        "modelProvider": model_provider,
        "modelName": model_name,
        "apiKey": api_key,
        "region": region,
        "env": dict(env) if env is not None else None,
        "repo": repo,
        "autoStopMinutes": auto_stop_minutes,
        "restartPolicy": restart_policy,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    return Call(
        "POST",
        "/api/instances",
        _model(models.InstanceCreated),
        json=body,
        params=None if wait else {"wait": "0"},
        timeout=CREATE_TIMEOUT if wait else None,
    )


def instance_action(instance_id: str, action: models.InstanceAction) -> Call[None]:
    return Call(
        "POST",
        f"/api/instances/{_seg(instance_id)}/action",
        _ok,
        json={"action": action.value},
        timeout=CREATE_TIMEOUT,
    )


def delete_instance(instance_id: str) -> Call[None]:
    return Call("DELETE", f"/api/instances/{_seg(instance_id)}", _ok, timeout=CREATE_TIMEOUT)


def logs(instance_id: str, lines: int) -> Call[list[models.LogLine]]:
    return Call(
        "GET",
        logs_path(instance_id),
        lambda d: models.LogList.model_validate(d).logs,
        params={"lines": lines},
    )


def events(
    instance_id: str, limit: int | None = None, before: int | None = None
) -> Call[models.InstanceEventList]:
    query = {"limit": limit, "before": before}
    return Call(
        "GET",
        events_path(instance_id),
        _model(models.InstanceEventList),
        params={k: v for k, v in query.items() if v is not None},
    )


def events_path(instance_id: str) -> str:
    return f"/api/instances/{_seg(instance_id)}/events"


def logs_path(instance_id: str) -> str:
    return f"/api/instances/{_seg(instance_id)}/logs"


def terminal_path(
    instance_id: str, *, shell: bool = False, cols: int | None = None, rows: int | None = None
) -> str:
    query = {"shell": "1" if shell else None, "cols": cols, "rows": rows}
    params = urlencode({k: v for k, v in query.items() if v is not None})
    return f"/api/instances/{_seg(instance_id)}/terminal" + (f"?{params}" if params else "")


#: How much longer than the command's own timeout an exec call waits for its answer.
EXEC_GRACE = 30.0


def exec_body(
    command: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    stdin: str | None,
    timeout: float | None,
) -> dict[str, Any]:
    fields = {
        "command": list(command),
        "cwd": cwd,
        "env": dict(env) if env is not None else None,
        "stdin": stdin,
        "timeout": timeout,
    }
    return {k: v for k, v in fields.items() if v is not None}


def exec_command(
    instance_id: str,
    command: Sequence[str],
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
) -> Call[models.ExecResult]:
    return Call(
        "POST",
        exec_path(instance_id),
        _model(models.ExecResult),
        json=exec_body(command, cwd, env, stdin, timeout),
        timeout=(timeout or models.DEFAULT_EXEC_TIMEOUT) + EXEC_GRACE,
    )


def exec_path(instance_id: str) -> str:
    return f"/api/instances/{_seg(instance_id)}/exec"


def ports(instance_id: str) -> Call[list[models.Port]]:
    return Call(
        "GET",
        f"/api/instances/{_seg(instance_id)}/ports",
        lambda d: models.PortList.model_validate(d).ports,
    )


def set_port_public(instance_id: str, port: int, public: bool) -> Call[models.Port]:
    return Call(
        "PUT",
        f"/api/instances/{_seg(instance_id)}/ports/{int(port)}",
        _model(models.Port),
        json={"public": public},
    )
