"""What a Fly machine runs: its config (image, bootstrap, volume, service) and where the
agent lives in it.

The machine config is visible to anyone with the API token, so it carries only the guest's
bootstrap (where to listen, the sha256 of its secret, echo the log to stdout); the secret and
the model API key travel later, inside the control plane's ``configure``, over the
authenticated TLS connection.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Final

from gentity.catalog import InstallStep
from gentity.guest.config import ENV_ECHO_LOG, ENV_LISTEN, ENV_SECRET_SHA256
from gentity.providers.compute.base import GuestLaunch, GuestLayout, MachineSpec
from gentity.providers.compute.fly.bundle import guest_zipapp

Json = dict[str, Any]

GUEST_PORT: Final = 8080
"""The guest listens here; Fly's proxy forwards ``<app>.fly.dev:443`` to it after TLS."""
HOME: Final = "/home/agent"
"""The agent's home and working directory: the volume, kept across stops and restarts."""
STATE: Final = f"{HOME}/.gentity"
"""On the volume: the instance's log and the agents the guest installed."""
LOG_FILE: Final = f"{STATE}/logs/instance.log"
BUNDLE_PATH: Final = "/opt/gentity/guest.pyz"
METADATA_KEY: Final = "gentity_instance"
"""Machine metadata naming the instance, so a machine can be found from the id alone."""
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def machine_config(
    spec: MachineSpec, volume_id: str, image: str | None, stock_image: str, secret_hash: str
) -> Json:
    """The machine's whole config. ``image`` is a guest image (``deploy/guest/Dockerfile``);
    None runs ``stock_image`` with the guest written into it as a zip application."""
    config: Json = {
        "image": image or stock_image,
        "guest": {"cpu_kind": "shared", "cpus": spec.cpus, "memory_mb": spec.memory_mb},
        "env": {ENV_LISTEN: f"tcp:0.0.0.0:{GUEST_PORT}", ENV_ECHO_LOG: "1"},
        "mounts": [{"volume": volume_id, "path": HOME}],
        "services": [
            {
                "protocol": "tcp",
                "internal_port": GUEST_PORT,
                "ports": [{"port": 443, "handlers": ["tls"]}],
                # The control plane starts and stops machines; the proxy must not.
                "autostart": False,
                "autostop": "off",
            }
        ],
        # A guest that crashes comes back (and is configured again by the next start);
        # a stop the control plane asked for is not undone.
        "restart": {"policy": "on-failure", "max_retries": 10},
        "metadata": {METADATA_KEY: spec.instance_id},
    }
    if secret_hash:
        config["env"][ENV_SECRET_SHA256] = secret_hash
    if image is None:
        bundle = base64.b64encode(guest_zipapp()).decode()
        config["files"] = [{"guest_path": BUNDLE_PATH, "raw_value": bundle, "mode": 0o444}]
        config["init"] = {"cmd": ["python3", BUNDLE_PATH]}
    return config


def with_secret_hash(config: Json, secret_hash: str) -> Json:
    """``config`` with the bootstrap naming this secret's hash."""
    return {**config, "env": {**config.get("env", {}), ENV_SECRET_SHA256: secret_hash}}


def layout(launch: GuestLaunch, *, preinstalled: bool) -> GuestLayout:
    """Where the agent lives in a Fly machine. With a guest image the agents are already on
    its PATH (``preinstalled``); on a stock image the guest installs the agent into the volume
    on its first boot."""
    extra_path: list[str] = []
    install: Json | None = None
    if launch.install is not None and not preinstalled:
        # One directory per version: a new pin installs anew, beside the old one.
        target = f"{STATE}/agents/{launch.install.cache_name(launch.agent)}"
        install = {
            "lockFile": f"{target}.lock",
            "marker": f"{target}/.installed",
            "commands": install_commands(target, launch.install),
            "env": {"PATH": DEFAULT_PATH, "HOME": HOME, "npm_config_cache": f"{STATE}/npm"},
            "package": launch.install.spec,
        }
        extra_path.append(f"{target}/bin")
    env = {
        "PATH": ":".join([*extra_path, DEFAULT_PATH]),
        "HOME": HOME,
        "USER": "root",
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "SHELL": "/bin/bash",
    }
    return GuestLayout(workdir=HOME, log_file=LOG_FILE, env=env, install=install)


def install_commands(target: str, step: InstallStep) -> list[list[str]]:
    """Install the agent's CLI under ``target`` (``target/bin`` then holds its commands)."""
    return step.commands(target, "python3")
