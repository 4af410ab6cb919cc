"""The WebSocket protocol ``gentity serve`` gives uvicorn: its sans-I/O one, tuned for terminals.

Two things differ from uvicorn's own (``ws="websockets-sansio"``), both about what a terminal
does all day, small messages both ways and now and then a flood of output:

* Reading from the client pauses only once a message is already waiting for the app, not
  after every message. uvicorn turns the socket off and on again around each message (two
  ``epoll_ctl`` calls per keystroke); the bound on what queues up stays a message or two.
* permessage-deflate compresses at level 1 instead of zlib's default 6: terminal output
  compresses almost as well (within a few per cent) at about twice the speed, and on a
  flood of output compression is most of the server's work.

The negotiation (window sizes, context takeover) is uvicorn's, so what a browser sees is the
same either way.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

#: zlib level for permessage-deflate.
COMPRESSION_LEVEL: Final = 1


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the two changes above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # As uvicorn builds it (nothing has gone through it yet), with our level.
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        compress_settings={"memLevel": 5, "level": COMPRESSION_LEVEL},
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        self.read_paused = True  # so that uvicorn queues the message without pausing
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        # ``receive`` resumes reading once the app has taken everything queued.
        if not self.read_paused and self.queue.qsize() > 1:
            self.read_paused = True
            self.transport.pause_reading()
