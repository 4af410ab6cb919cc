"""What the guest prepares before the agent's first start: config files seeded into the home,
the working directory, a repository to clone.

The catalog describes each agent's files as data (see ``catalog/agents.json``); the control
plane sends them in the guest config's ``prepare`` object with the values to fill in, and the
guest renders and writes them (:mod:`gentity.guest.prepare`). Rendering lives here, beside the
schema, so the catalog's tests render exactly what a guest would write.

Placeholders are ``{name}`` with a name of :data:`PLACEHOLDERS`; every other brace is text.
Standard library only.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

#: What a seed may refer to. The control plane gives the first three, the guest the others
#: (only it knows where the home and working directory are on its machine).
PLACEHOLDERS: Final = ("model", "provider", "api_key_suffix", "home", "workdir")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
# Text files are not escaped: a value that could end a quoted string or a line is refused.
_UNSAFE_IN_TEXT = re.compile(r"[\"'\\\x00-\x1f\x7f]")

#: Repository URL schemes the guest clones from (``file`` only when the control plane allows
#: it, for tests).
REPO_SCHEMES: Final = ("https", "file")
MAX_REPO_URL: Final = 2048


@dataclass(frozen=True)
class SeedFile:
    """A file to write under the agent's home when absent. ``content`` is a JSON value
    (written as JSON, placeholders filled in its strings and keys) or, for other formats, a
    text template."""

    path: str
    """Relative to the home, without ``..``."""
    content: object
    json: bool


@dataclass
class PreparePlan:
    """The guest config's ``prepare`` object; see :func:`parse_prepare_plan`."""

    files: list[SeedFile] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict, repr=False)
    """Placeholder values from the control plane (``api_key_suffix`` is part of a key)."""
    repo: str | None = None
    """A repository to clone into the empty working directory."""
    git_init: bool = False
    """Without ``repo``: make the empty working directory a new git repository."""

    def to_json(self) -> dict[str, object]:
        """The ``prepare`` object for the guest config."""
        return {
            "files": [
                {"path": f.path, "json" if f.json else "text": f.content} for f in self.files
            ],
            "values": dict(self.values),
            "repo": self.repo,
            "gitInit": self.git_init,
        }


def parse_seed_file(raw: object) -> SeedFile:
    """Validate ``{"path", "json": value}`` or ``{"path", "text": "template"}``; ValueError
    names the problem. Every placeholder must be one of :data:`PLACEHOLDERS`."""
    if not isinstance(raw, dict) or set(raw) not in ({"path", "json"}, {"path", "text"}):
        raise ValueError('a seed file must be {"path", "json"} or {"path", "text"}')
    path = raw["path"]
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or ".." in path.split("/")
        or posixpath.normpath(path) != path
    ):
        raise ValueError("a seed file's path must be relative to the home, without '..'")
    is_json = "json" in raw
    content = raw["json"] if is_json else raw["text"]
    if not is_json and not isinstance(content, str):
        raise ValueError(f"{path}: text must be a string")
    for name in _names_in(content):
        if name not in PLACEHOLDERS:
            raise ValueError(f"{path}: unknown placeholder {{{name}}}")
    return SeedFile(path=path, content=content, json=is_json)


def parse_prepare_plan(raw: object) -> PreparePlan:
    """Validate the ``prepare`` object (fields: files, values, repo, gitInit; all
    optional)."""
    if raw is None:
        return PreparePlan()
    if not isinstance(raw, dict):
        raise ValueError("prepare must be an object")
    files = raw.get("files", [])
    if not isinstance(files, list):
        raise ValueError("prepare.files must be a list")
    values = raw.get("values", {})
    if not isinstance(values, dict) or not all(
        k in PLACEHOLDERS and isinstance(v, str) for k, v in values.items()
    ):
        raise ValueError("prepare.values must map placeholder names to strings")
    repo = raw.get("repo")
    if repo is not None:
        check_repo_url(repo, REPO_SCHEMES)
    git_init = raw.get("gitInit", False)
    if not isinstance(git_init, bool):
        raise ValueError("prepare.gitInit must be true or false")
    try:
        parsed = [parse_seed_file(f) for f in files]
    except ValueError as exc:
        raise ValueError(f"prepare.files: {exc}") from None
    return PreparePlan(files=parsed, values=dict(values), repo=repo, git_init=git_init)


def check_repo_url(url: object, schemes: tuple[str, ...]) -> str:
    """``url`` if it is a repository URL the guest may clone: one of ``schemes``, a host for
    https, no credentials (they would be stored and logged with it). ValueError otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_REPO_URL:
        raise ValueError(f"repo must be a URL of at most {MAX_REPO_URL} characters")
    if _UNSAFE_IN_TEXT.search(url) or " " in url:
        raise ValueError("repo must not contain quotes, spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # a malformed port raises here
    except ValueError:
        raise ValueError("repo is not a valid URL") from None
    del port
    if parts.scheme not in schemes:
        raise ValueError(f"repo must be an {' or '.join(s + '://' for s in schemes)} URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("repo must not contain credentials")
    if parts.scheme == "https" and not parts.hostname:
        raise ValueError("repo must name a host")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ValueError("repo must be file:///absolute/path")
    return url


def render(seed: SeedFile, values: dict[str, str]) -> bytes:
    """The file's bytes with every placeholder filled in. ValueError when a value is missing,
    or would break a text file (a quote, backslash or line break)."""
    if seed.json:
        return (json.dumps(_fill_json(seed.content, values), indent=2) + "\n").encode()
    assert isinstance(seed.content, str)  # parse_seed_file checked it
    for name in _names_in(seed.content):
        if _UNSAFE_IN_TEXT.search(_value(values, name)):
            raise ValueError(f"{seed.path}: the value of {{{name}}} cannot go in a text file")
    return _fill(seed.content, values).encode()


def _fill_json(value: object, values: dict[str, str]) -> object:
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, list):
        return [_fill_json(v, values) for v in value]
    if isinstance(value, dict):
        return {_fill(k, values): _fill_json(v, values) for k, v in value.items()}
    return value


def _fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: _value(values, m.group(1)), text)


def _value(values: dict[str, str], name: str) -> str:
    if name not in values:
        raise ValueError(f"no value for {{{name}}}")
    return values[name]


def _names_in(value: object) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(_names_in(v) for v in value))
    if isinstance(value, dict):
        return set().union(*(_names_in(k) | _names_in(v) for k, v in value.items()))
    return set()
