"""Wire models: the JSON shapes of the REST API, camelCase on the wire.

Shared by the server, the SDK and the CLI. Request models reject unknown fields so a typo is a
400 naming the field instead of being silently ignored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
)
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema

# C0 and C1 controls (NUL, escapes, newlines, DEL, ...), Unicode line separators and the bidi
# overrides that make a name display as something else ("trojan source").
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROLS}]")


def _plain_text(value: str) -> str:
    """Names end up in terminals, logs and pages: refuse what would act rather than print."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _in_utc(value: datetime) -> datetime:
    """Stored in UTC: a date that has no UTC equivalent (9999-12-31T23:59:59-14:00) is a 400."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a date before the year 10000 in UTC") from None


class _PlainTextSchema:
    """Says in the JSON schema what ``_plain_text`` refuses, so clients can know it too."""

    PATTERN = f"^[^{_CONTROLS}]*$"

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema: dict[str, Any] = handler(schema)
        json_schema["pattern"] = self.PATTERN
        return json_schema


PlainText = Annotated[str, AfterValidator(_plain_text), _PlainTextSchema()]
"""A user-chosen string (a name, an email): no control characters."""


class WireModel(BaseModel):
    """A response shape: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(WireModel):
    """A request body: unknown fields are errors (pydantic never turns a number into a string)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Ok(BaseModel):
    ok: Literal[True] = True


# --- catalog -------------------------------------------------------------------------------


class AgentModel(WireModel):
    provider: str
    name: str
    label: str


class Agent(WireModel):
    id: str
    name: str
    description: str
    default_cpus: int
    default_memory_mb: int
    default_volume_gb: int
    models: list[AgentModel]
    requires_api_key: bool
    """False for agents such as ``shell`` that call no model."""


class AgentCatalog(WireModel):
    agents: list[Agent]


class Region(WireModel):
    """A place where instances can run; ``code`` is what a create's ``region`` names."""

    code: str
    label: str


class RegionList(WireModel):
    regions: list[Region]


# --- accounts and tokens -------------------------------------------------------------------


class UserInfo(WireModel):
    id: str
    email: str
    is_admin: bool
    created_at: datetime


class LoginRequest(RequestModel):
    email: PlainText = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class SignupRequest(LoginRequest):
    pass


class SessionInfo(WireModel):
    id: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    user_agent: str | None
    address: str | None
    current: bool


class SessionList(WireModel):
    sessions: list[SessionInfo]


class TokenRecord(WireModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None


class TokenList(WireModel):
    tokens: list[TokenRecord]


class TokenCreateRequest(RequestModel):
    name: PlainText = Field(min_length=1, max_length=100)
    expires_at: Annotated[AwareDatetime, AfterValidator(_in_utc)] | None = None


class TokenCreated(WireModel):
    token: str
    record: TokenRecord


# --- instances -----------------------------------------------------------------------------


class InstanceStatus(StrEnum):
    """Where an instance is in its life. Transitions are in ``server.services.transitions``."""

    PROVISIONING = "provisioning"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    ERROR = "error"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class RestartPolicy(StrEnum):
    """What happens when an instance's agent, guest daemon or machine stops by itself."""

    ALWAYS = "always"
    """Restart the agent whenever it exits, and the machine whenever it dies (with back-off)."""
    ON_FAILURE = "on-failure"
    """Restart the agent when it exits with a failure; a dead machine is restarted too."""
    NEVER = "never"
    """Restart nothing: the instance goes to ``error`` with the reason."""


class AgentState(StrEnum):
    """What the agent inside a running instance is doing, as its guest reports it."""

    INSTALLING = "installing"
    """Its CLI is being installed (first use of this agent on this host)."""
    STARTING = "starting"
    """Its process runs but is not waiting for input yet."""
    READY = "ready"
    """Up and waiting for input, by the catalog's readiness rule for the agent."""
    CRASHED = "crashed"
    """It failed (install, start or a failing exit) and is not restarted."""
    BACKOFF = "backoff"
    """It exited; it is restarted after a delay that grows while it keeps crashing."""
    EXITED = "exited"
    """It exited cleanly and is not restarted."""


class AgentHealth(WireModel):
    """The agent's health inside a running instance."""

    state: AgentState
    restarts: int
    last_exit_code: int | None
    """The last exit code (128 + the signal number when a signal ended it)."""
    last_exit_at: datetime | None
    ready_at: datetime | None
    """When the current run became ready (null while not ready)."""


class Instance(WireModel):
    id: str
    name: str
    subdomain: str
    agent_type: str
    model_provider: str
    model_name: str
    region: str | None = None
    status: InstanceStatus
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    agent: AgentHealth | None = None
    """The agent's health while the instance runs; null otherwise or when its guest does
    not answer in time."""


class InstanceList(WireModel):
    instances: list[Instance]


#: Limits of a create request's ``env``: how many variables, and their names and values
#: together (they travel in the guest's config and are stored encrypted).
MAX_ENV_VARS = 64
MAX_ENV_BYTES = 32 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _env(value: dict[str, str]) -> dict[str, str]:
    """Names as a shell writes them; values a program's environment can hold."""
    for name, text in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name[:128]!r} is not an environment variable name")
        if "\x00" in text:
            raise ValueError(f"the value of {name} contains a NUL character")
    if sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > MAX_ENV_BYTES:
        raise ValueError(f"names and values must not exceed {MAX_ENV_BYTES} bytes in all")
    return value


class InstanceCreateRequest(RequestModel):
    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    agent_type: PlainText = Field(min_length=1, max_length=64)
    model_provider: PlainText = Field(min_length=1, max_length=64)
    model_name: PlainText = Field(min_length=1, max_length=128)
    api_key: str | None = Field(default=None, min_length=1, max_length=4096)
    region: PlainText | None = Field(default=None, min_length=1, max_length=64)
    env: Annotated[dict[str, str], AfterValidator(_env)] | None = Field(
        default=None, max_length=MAX_ENV_VARS
    )
    """Extra environment for the agent. Stored encrypted, like ``apiKey``; never shown back."""
    repo: PlainText | None = Field(default=None, min_length=1, max_length=2048)
    """A git repository (``https://``) cloned into the working directory on first start."""
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    """Whether the agent and the machine are restarted when they stop by themselves."""


class InstanceCreated(WireModel):
    id: str
    subdomain: str
    status: InstanceStatus


class InstanceAction(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"


class InstanceActionRequest(RequestModel):
    action: InstanceAction


class LogLine(WireModel):
    timestamp: str
    level: str
    message: str


class LogList(WireModel):
    logs: list[LogLine]


class InstanceEvent(WireModel):
    """One status change of an instance: when, from what, to what, why, and who asked."""

    id: int
    """Increasing: a ``before`` cursor for the next page, and the SSE event id when following."""
    time: datetime
    from_status: InstanceStatus | None = Field(alias="from")
    """Null for the first event, the creation."""
    to_status: InstanceStatus = Field(alias="to")
    reason: str
    actor: str
    """``token:<api token id>`` or ``session:<session id>`` for a user's request,
    ``reconciler`` when the server settled an interrupted or failed machine, ``system``
    otherwise."""


class InstanceEventList(WireModel):
    events: list[InstanceEvent]
    """Newest first."""
    next_before: int | None
    """Pass as ``before`` for the next (older) page; null on the last page."""
