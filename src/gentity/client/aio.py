"""The asyncio client: ``AsyncClient``, method for method the twin of ``Client``."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import httpx

from gentity import models
from gentity.client import base, calls, files
from gentity.client.errors import ApiError
from gentity.client.sse import SSEDecoder
from gentity.client.streams import AsyncEventStream, AsyncLogStream
from gentity.client.terminal import PendingTerminal, open_async_terminal

T = TypeVar("T")
R = TypeVar("R")


class AsyncClient:
    """An asyncio client for the Gentity REST API; the same methods as
    :class:`~gentity.client.Client`, awaited.

    ``base_url`` and ``token`` default to ``GENTITY_API_URL`` / ``GENTITY_TOKEN``, then to what
    ``gentity login`` saved (see :mod:`gentity.client.config`). ``transport`` is handed to
    httpx, so tests can pass ``httpx.MockTransport``. Every failure raises
    :class:`~gentity.client.ApiError` (:class:`~gentity.client.ApiConnectionError` when the
    server cannot be reached).

    Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = base.DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.token = base.resolve(base_url, token)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": base.USER_AGENT},
        )
        self.tokens = AsyncTokens(self)
        self.instances = AsyncInstances(self)

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=base.request_headers(self.token),
                timeout=base.timeout_for(call),
            )
        except httpx.TransportError as exc:
            raise base.connection_error(exc, self.base_url) from exc
        return base.finish(call, response)

    # --- account ---------------------------------------------------------------------------

    async def catalog(self) -> builtins.list[models.Agent]:
        """The agents this server can run, with their models (public, no token needed)."""
        return await self._send(calls.catalog())

    async def login(self, email: str, password: str) -> models.UserInfo:
        """Sign in with a password. The client then authenticates with the session cookie
        instead of any token it had, until :meth:`logout`."""
        user = await self._send(calls.login(email, password))
        self.token = None
        return user

    async def logout(self) -> None:
        """End the session :meth:`login` opened (server-side too)."""
        await self._send(calls.logout())
        self._http.cookies.clear()

    async def me(self) -> models.UserInfo:
        """Who the token or session belongs to."""
        return await self._send(calls.me())

    # --- shortcuts for the instance calls people use most ------------------------------------

    async def logs(self, instance_id: str, lines: int = 200) -> builtins.list[models.LogLine]:
        """Same as :meth:`AsyncInstances.logs`."""
        return await self.instances.logs(instance_id, lines)

    def follow_logs(
        self,
        instance_id: str,
        *,
        lines: int | None = None,
        last_event_id: str | None = None,
        max_reconnects: int = base.DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float = base.DEFAULT_RECONNECT_DELAY,
    ) -> AsyncLogStream:
        """Same as :meth:`AsyncInstances.follow_logs`."""
        return self.instances.follow_logs(
            instance_id,
            lines=lines,
            last_event_id=last_event_id,
            max_reconnects=max_reconnects,
            reconnect_delay=reconnect_delay,
        )

    async def events(
        self, instance_id: str, *, limit: int | None = None, before: int | None = None
    ) -> models.InstanceEventList:
        """Same as :meth:`Instances.events`."""
        return await self.instances.events(instance_id, limit=limit, before=before)

    def follow_events(
        self,
        instance_id: str,
        *,
        limit: int | None = None,
        last_event_id: str | None = None,
        max_reconnects: int = base.DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float = base.DEFAULT_RECONNECT_DELAY,
    ) -> AsyncEventStream:
        """Same as :meth:`Instances.follow_events`."""
        return self.instances.follow_events(
            instance_id,
            limit=limit,
            last_event_id=last_event_id,
            max_reconnects=max_reconnects,
            reconnect_delay=reconnect_delay,
        )

    def attach(
        self,
        instance_id: str,
        *,
        shell: bool = False,
        cols: int | None = None,
        rows: int | None = None,
    ) -> PendingTerminal:
        """Same as :meth:`AsyncInstances.attach`."""
        return self.instances.attach(instance_id, shell=shell, cols=cols, rows=rows)

    async def exec(
        self,
        instance_id: str,
        command: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the command's, enforced by the server)
    ) -> models.ExecResult:
        """Same as :meth:`AsyncInstances.exec`."""
        return await self.instances.exec(
            instance_id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout
        )

    async def list_files(self, instance_id: str, path: str | None = None) -> models.FileList:
        """Same as :meth:`AsyncInstances.list_files`."""
        return await self.instances.list_files(instance_id, path)

    async def download(self, instance_id: str, path: str) -> bytes:
        """Same as :meth:`AsyncInstances.download`."""
        return await self.instances.download(instance_id, path)

    async def download_to(self, instance_id: str, path: str, local_file: files.Target) -> int:
        """Same as :meth:`AsyncInstances.download_to`."""
        return await self.instances.download_to(instance_id, path, local_file)

    async def upload(self, instance_id: str, path: str, data: files.Source) -> models.FileWritten:
        """Same as :meth:`AsyncInstances.upload`."""
        return await self.instances.upload(instance_id, path, data)

    async def delete_file(self, instance_id: str, path: str, *, recursive: bool = False) -> None:
        """Same as :meth:`AsyncInstances.delete_file`."""
        await self.instances.delete_file(instance_id, path, recursive=recursive)

    # --- lifetime ----------------------------------------------------------------------------

    async def ports(self, instance_id: str) -> builtins.list[models.Port]:
        """Same as :meth:`Instances.ports`."""
        return await self.instances.ports(instance_id)

    async def set_port_public(
        self, instance_id: str, port: int, public: bool = True
    ) -> models.Port:
        """Same as :meth:`Instances.set_port_public`."""
        return await self.instances.set_port_public(instance_id, port, public)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncTokens:
    """``client.tokens``: the caller's API tokens."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[models.TokenRecord]:
        """Active tokens, newest first."""
        return await self._client._send(calls.list_tokens())

    async def create(self, name: str) -> models.TokenCreated:
        """Mint a token. ``.token`` holds the plaintext: the only time the server shows it."""
        return await self._client._send(calls.create_token(name))

    async def revoke(self, token_id: str) -> None:
        await self._client._send(calls.revoke_token(token_id))


class AsyncInstances:
    """``client.instances``: create, inspect, drive and destroy instances."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[models.Instance]:
        return await self._client._send(calls.list_instances())

    async def get(self, instance_id: str) -> models.Instance:
        return await self._client._send(calls.get_instance(instance_id))

    async def create(
        self,
        agent_type: str,
        model_provider: str,
        model_name: str,
        api_key: str | None = None,
        name: str | None = None,
        region: str | None = None,
        env: Mapping[str, str] | None = None,
        repo: str | None = None,
        auto_stop_minutes: int | None = None,
        restart_policy: str | None = None,
        wait: bool = True,
    ) -> models.InstanceCreated:
        """Create an instance; blocks until its machine has started. ``env`` is extra
        environment for the agent (kept encrypted, never shown back); ``repo`` an https git URL
        cloned into its working directory on first start; ``auto_stop_minutes`` stops it after
        that many minutes without activity (0: never; by default the server's setting);
        ``restart_policy`` ``always`` (the server's default), ``on-failure`` or ``never``. With
        ``wait=False`` it answers as soon as the instance exists (status ``provisioning``) while
        the start goes on: follow its logs and events to see it run."""
        return await self._client._send(
            calls.create_instance(
                agent_type,
                model_provider,
                model_name,
                api_key,
                name,
                region,
                env,
                repo,
                auto_stop_minutes,
                wait,
                restart_policy,
            )
        )

    async def start(self, instance_id: str) -> None:
        await self._client._send(calls.instance_action(instance_id, models.InstanceAction.START))

    async def stop(self, instance_id: str) -> None:
        await self._client._send(calls.instance_action(instance_id, models.InstanceAction.STOP))

    async def restart(self, instance_id: str) -> None:
        await self._client._send(calls.instance_action(instance_id, models.InstanceAction.RESTART))

    async def delete(self, instance_id: str) -> None:
        """Destroy the machine and its volume."""
        await self._client._send(calls.delete_instance(instance_id))

    async def logs(self, instance_id: str, lines: int = 200) -> builtins.list[models.LogLine]:
        """The last ``lines`` log records (the server caps it at 1000), oldest first."""
        return await self._client._send(calls.logs(instance_id, lines))

    def follow_logs(
        self,
        instance_id: str,
        *,
        lines: int | None = None,
        last_event_id: str | None = None,
        max_reconnects: int = base.DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float = base.DEFAULT_RECONNECT_DELAY,
    ) -> AsyncLogStream:
        """Log records as they are written, until you stop iterating.

        The stream starts with the last ``lines`` records (the server's default is 200), or
        right after ``last_event_id`` when given (an id the server sent earlier).

        A dropped connection is re-opened after a short, growing delay with the last event id
        as ``Last-Event-ID``, so no line is repeated or skipped; after ``max_reconnects``
        failed attempts in a row it raises :class:`~gentity.client.ApiConnectionError`.
        Cancelling the task, or closing the stream (``aclose()``, or ``async with`` around the
        loop to ``break`` early), closes the connection. The iteration ends by itself when the
        instance is deleted.
        """
        state = base.FollowState(
            self._client.base_url,
            last_event_id,
            max_reconnects,
            reconnect_delay,
            what="log stream",
            parse=base.log_line,
            replay=None if lines is None else {"lines": lines},
        )
        return AsyncLogStream(self._follow(calls.logs_path(instance_id), state), state)

    async def _follow(self, path: str, state: base.FollowState[R]) -> AsyncGenerator[R, None]:
        client = self._client
        http = client._http
        while True:
            try:
                async with http.stream(
                    "GET",
                    path,
                    params=state.params(),
                    headers={**base.request_headers(client.token), **state.headers()},
                    timeout=base.stream_timeout(http.timeout),
                ) as response:
                    if response.is_error or response.is_redirect:
                        await response.aread()
                        try:
                            base.raise_for_status(response)
                        except ApiError as error:
                            if state.on_error_answer(error):
                                return
                    else:
                        base.check_event_stream(response)
                        state.on_open()
                        decoder = SSEDecoder()
                        async for line in response.aiter_lines():
                            state.on_line()
                            event = decoder.feed(line)
                            record = state.on_event(event) if event else None
                            if record is not None:
                                yield record
                                if state.finished:
                                    return
            except httpx.TransportError as exc:
                state.on_transport_error(exc)
            await asyncio.sleep(state.next_delay())

    async def events(
        self, instance_id: str, *, limit: int | None = None, before: int | None = None
    ) -> models.InstanceEventList:
        """A page of the instance's status changes, newest first: ``limit`` of them (the
        server's default is 50, at most 200), older than event id ``before`` when given. The
        page's ``next_before`` is the ``before`` of the next, older page (None on the last).
        The history stays readable after the instance is destroyed."""
        return await self._client._send(calls.events(instance_id, limit, before))

    def follow_events(
        self,
        instance_id: str,
        *,
        limit: int | None = None,
        last_event_id: str | None = None,
        max_reconnects: int = base.DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float = base.DEFAULT_RECONNECT_DELAY,
    ) -> AsyncEventStream:
        """Status changes as they happen, oldest first, until the instance is destroyed (the
        iteration ends after its ``destroyed`` event) or you stop iterating.

        The stream starts with the ``limit`` most recent events (the server's default is 50),
        or right after ``last_event_id`` when given. Reconnects, closing and errors work as
        for :meth:`follow_logs`.
        """
        state = base.FollowState(
            self._client.base_url,
            last_event_id,
            max_reconnects,
            reconnect_delay,
            what="event stream",
            parse=base.instance_event,
            replay=None if limit is None else {"limit": limit},
            last=base.is_destroyed,
        )
        return AsyncEventStream(self._follow(calls.events_path(instance_id), state), state)

    def attach(
        self,
        instance_id: str,
        *,
        shell: bool = False,
        cols: int | None = None,
        rows: int | None = None,
    ) -> PendingTerminal:
        """Open the instance's terminal (a WebSocket): ``async with client.attach(id) as t:``,
        or ``t = await client.attach(id)`` and ``await t.close()`` yourself.

        By default it joins the agent's own session (shared with other viewers; leaving does
        not stop the agent). ``shell=True`` opens a fresh shell for this connection instead.
        ``cols``/``rows`` set the size the session starts with.
        """
        client = self._client
        return PendingTerminal(
            lambda: open_async_terminal(
                client.base_url,
                calls.terminal_path(instance_id, shell=shell, cols=cols, rows=rows),
                base.credential_headers(client.token, client._http.cookies),
                base.USER_AGENT,
            )
        )

    async def exec(
        self,
        instance_id: str,
        command: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the command's, enforced by the server)
    ) -> models.ExecResult:
        """The async twin of :meth:`gentity.client.sync.Instances.exec`."""
        call = calls.exec_command(instance_id, command, cwd, env, stdin, timeout)
        return await self._client._send(call)

    async def exec_stream(
        self,
        instance_id: str,
        command: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the command's, enforced by the server)
    ) -> AsyncIterator[base.ExecOutput | models.ExecExit]:
        """The async twin of :meth:`gentity.client.sync.Instances.exec_stream`: await it for
        the iterator (a refusal raises then); closing it early (``aclose``) kills the
        command."""
        client = self._client
        http = client._http
        request = http.build_request(
            "POST",
            calls.exec_path(instance_id),
            params={"stream": 1},
            json=calls.exec_body(command, cwd, env, stdin, timeout),
            headers={**base.request_headers(client.token), **base.stream_headers(None)},
            timeout=base.stream_timeout(http.timeout),
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise base.connection_error(exc, client.base_url) from exc
        try:
            if response.is_error or response.is_redirect:
                await response.aread()
                base.raise_for_status(response)
            base.check_event_stream(response)
        except BaseException:
            await response.aclose()
            raise
        return self._exec_events(response)

    async def _exec_events(
        self, response: httpx.Response
    ) -> AsyncGenerator[base.ExecOutput | models.ExecExit, None]:
        try:
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                item = base.exec_event(event) if event else None
                if item is not None:
                    yield item
                    if isinstance(item, models.ExecExit):
                        return
        except httpx.TransportError as exc:
            raise base.connection_error(exc, self._client.base_url) from exc
        finally:
            await response.aclose()
        raise ApiError(502, "the exec stream ended before the command did")

    # --- files -------------------------------------------------------------------------------

    async def list_files(self, instance_id: str, path: str | None = None) -> models.FileList:
        """The entries of a directory in the running instance: its working directory by
        default; a relative ``path`` starts there, an absolute one must be in its home."""
        async with self._get_file(instance_id, path) as response:
            if not files.is_listing(response):
                raise files.not_a_directory(path)
            await response.aread()
            return files.listing(response)

    async def download(self, instance_id: str, path: str) -> bytes:
        """A file of the running instance, whole in memory (see :meth:`download_to` for big
        ones)."""
        buffer = io.BytesIO()
        await self.download_to(instance_id, path, buffer)
        return buffer.getvalue()

    async def download_to(self, instance_id: str, path: str, local_file: files.Target) -> int:
        """Stream a file of the running instance into ``local_file`` (a local path, made or
        replaced, or a binary file object); returns the number of bytes written. A transfer
        cut short raises :class:`~gentity.client.ApiConnectionError`."""
        async with self._get_file(instance_id, path) as response:
            if files.is_listing(response):
                raise files.not_a_file(path)
            out, opened = files.open_target(local_file)
            written = 0
            try:
                async for chunk in response.aiter_bytes():
                    await asyncio.to_thread(out.write, chunk)
                    written += len(chunk)
            except httpx.TransportError as exc:
                raise base.connection_error(exc, self._client.base_url) from exc
            finally:
                if opened:
                    out.close()
            return written

    @contextlib.asynccontextmanager
    async def _get_file(self, instance_id: str, path: str | None) -> AsyncIterator[httpx.Response]:
        client = self._client
        try:
            async with client._http.stream(
                "GET",
                files.files_path(instance_id),
                params=files.params(path),
                headers=base.request_headers(client.token),
                timeout=base.stream_timeout(client._http.timeout),
            ) as response:
                if response.is_error or response.is_redirect:
                    await response.aread()
                    base.raise_for_status(response)
                yield response
        except httpx.TransportError as exc:
            raise base.connection_error(exc, client.base_url) from exc

    async def upload(self, instance_id: str, path: str, data: files.Source) -> models.FileWritten:
        """Write a file in the running instance (parents made, replaced whole once all of it
        arrived): ``data`` is bytes, a local file by ``pathlib.Path``, or a binary file object,
        which is streamed."""
        client = self._client
        content, file, opened = files.pieces(data)
        headers = base.request_headers(client.token)
        try:
            if file is not None and (size := files.size_of(file)) is not None:
                headers["Content-Length"] = str(size)
            response = await client._http.request(
                "PUT",
                files.files_path(instance_id),
                params={"path": path},
                content=content if file is None else files.aread_pieces(file),
                headers=headers,
                timeout=base.stream_timeout(client._http.timeout),
            )
        except httpx.TransportError as exc:
            raise base.connection_error(exc, client.base_url) from exc
        finally:
            if file is not None and opened:
                file.close()
        base.raise_for_status(response)
        return files.written(response)

    async def delete_file(self, instance_id: str, path: str, *, recursive: bool = False) -> None:
        """Delete a file, a link or an empty directory in the running instance (a directory
        and everything in it with ``recursive``)."""
        await self._client._send(files.delete_call(instance_id, path, recursive))

    async def ports(self, instance_id: str) -> builtins.list[models.Port]:
        """The TCP ports something listens on inside the running instance, lowest first,
        each with its preview URL (``<port>-<subdomain>.<host>``) and whether it is public.
        A 409 ApiError when the instance is not running."""
        return await self._client._send(calls.ports(instance_id))

    async def set_port_public(
        self, instance_id: str, port: int, public: bool = True
    ) -> models.Port:
        """Open a port's preview to anyone with its URL (``public=False``: the owner's only
        again, the default). Kept while the instance lives, whether or not anything listens."""
        return await self._client._send(calls.set_port_public(instance_id, port, public))
