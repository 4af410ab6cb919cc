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

#: How long a first start may spend installing the agent's CLI before the server gives up.
INSTALL_TIMEOUT_SECONDS = 15 * 60
#: How long ``POST /api/instances`` (and a start) may block: the install's limit plus the rest
#: of a start (machine, guest, agent), each bounded on its own. Clients wait this long.
CREATE_TIMEOUT_SECONDS = INSTALL_TIMEOUT_SECONDS + 5 * 60

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
    auto_stop_minutes: int = 0
    """Minutes without activity after which the instance is stopped; 0 never stops it."""
    auto_stop_at: datetime | None = None
    """When it stops if it stays idle (UTC), from the last activity the server knows of; null
    unless it runs with auto-stop on. Activity seen later moves it forward."""


class InstanceList(WireModel):
    instances: list[Instance]


#: The longest ``autoStopMinutes``: a week.
MAX_AUTO_STOP_MINUTES = 7 * 24 * 60

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
    auto_stop_minutes: Annotated[int, Field(strict=True, ge=0, le=MAX_AUTO_STOP_MINUTES)] | None = (
        None
    )
    """Stop the instance after this many minutes without activity (0: never). The server's
    ``GENTITY_AUTO_STOP_MINUTES`` when not given."""
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


class FileType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class FileEntry(WireModel):
    """One entry of a directory in an instance (a link is not followed: its own size)."""

    name: str
    type: FileType
    size: int
    modified_at: datetime


class FileList(WireModel):
    entries: list[FileEntry]
    """Sorted by name."""
    truncated: bool = False
    """True when the directory holds more entries than the listing's limit (10,000)."""


class FileWritten(WireModel):
    path: str
    """The absolute path written, as the instance sees it."""
    size: int


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


# --- exec ------------------------------------------------------------------------------------

#: Limits of an exec request: the command's arguments together, stdin, and the timeout.
MAX_EXEC_COMMAND_BYTES = 32 * 1024
MAX_EXEC_STDIN_BYTES = 1024 * 1024
DEFAULT_EXEC_TIMEOUT = 60.0
MAX_EXEC_TIMEOUT = 3600.0
#: Output kept of each of stdout and stderr; the rest is read and dropped (flagged truncated).
EXEC_OUTPUT_CAP = 1024 * 1024


def _command(value: list[str]) -> list[str]:
    if not value[0]:
        raise ValueError("the program (the first item) must not be empty")
    if any("\x00" in arg for arg in value):
        raise ValueError("arguments must not contain a NUL character")
    if sum(len(arg.encode()) for arg in value) > MAX_EXEC_COMMAND_BYTES:
        raise ValueError(f"the arguments must not exceed {MAX_EXEC_COMMAND_BYTES} bytes in all")
    return value


def _cwd(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if not value.startswith("/"):
        parts = [p for p in value.split("/") if p not in ("", ".")]
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                raise ValueError("a relative cwd must stay within the working directory")
    return value


def _stdin(value: str) -> str:
    if len(value.encode(errors="surrogatepass")) > MAX_EXEC_STDIN_BYTES:
        raise ValueError(f"must not exceed {MAX_EXEC_STDIN_BYTES} bytes")
    return value


class ExecRequest(RequestModel):
    """A command to run in a running instance, beside its agent."""

    command: Annotated[list[str], AfterValidator(_command)] = Field(min_length=1, max_length=4096)
    """The program and its arguments (no shell: use ``["sh", "-c", "..."]`` for one)."""
    cwd: Annotated[str, AfterValidator(_cwd)] | None = Field(
        default=None, min_length=1, max_length=4096
    )
    """Where it runs: relative to the agent's working directory (the default), or absolute."""
    env: Annotated[dict[str, str], AfterValidator(_env)] | None = Field(
        default=None, max_length=MAX_ENV_VARS
    )
    """Added to the agent's environment."""
    stdin: Annotated[str, AfterValidator(_stdin)] | None = None
    """Text for its standard input (UTF-8); it then sees the end of its input."""
    timeout: float | None = Field(default=None, gt=0, le=MAX_EXEC_TIMEOUT, strict=True)
    """Seconds before its whole process tree is killed (default 60)."""


class ExecExit(WireModel):
    """How a command ended: the ``exit`` event of a streamed exec."""

    exit_code: int | None
    """Null when a signal ended it."""
    signal: str | None
    """The signal's name (``SIGKILL``) when one ended it."""
    timed_out: bool
    """It ran past its timeout and was killed (``signal`` is then ``SIGKILL``)."""
    truncated: bool
    """Either stream went past the cap and was cut."""
    stdout_truncated: bool
    stderr_truncated: bool


class ExecResult(ExecExit):
    """How a command ended and what it printed (UTF-8, invalid bytes replaced)."""

    stdout: str
    stderr: str


# --- preview ports -------------------------------------------------------------------------


class Port(WireModel):
    """A TCP port inside an instance and its preview URL."""

    port: int
    url: str | None
    """``<scheme>://<port>-<subdomain>.<host>/``; null when the server is reached by an IP
    address, which cannot have subdomains (set ``GENTITY_PUBLIC_URL``)."""
    public: bool
    """True: anyone with the URL gets through; false: only the owner (the default)."""


class PortList(WireModel):
    ports: list[Port]
    """The ports something listens on inside the instance, lowest first."""


class PortUpdateRequest(RequestModel):
    public: bool
