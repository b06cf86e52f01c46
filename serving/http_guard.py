"""uvicorn's h11 protocol with limits that slow or stalled clients cannot get around.

uvicorn (0.54, h11) has no header or body read timeout: a client that sends its
headers and half a body, then stalls, holds its connection (and, with
`limit_concurrency`, a slot that turns everyone else away with 503) until it
goes. Here, per connection:

- the request line and headers must arrive within `header_timeout` seconds of
  the connection opening or of the first byte of a new request on a kept-alive
  connection (h11 caps their size at 16 KiB);
- the body must arrive within `body_timeout` seconds of the end of the headers;
- a response the client does not read must drain within `write_timeout`;
- an idle kept-alive connection is closed after `keep_alive` seconds (uvicorn).

Past a deadline the server answers 408 (when no response has started) and
closes the connection. Above `max_connections` open connections, the server
closes (every `evict_after` seconds, and whenever one connects) the client that
has sent nothing for longest while sending a request (for at least
`evict_after`: it is stalled, not slow), else the longest-idle kept-alive
connection (likewise), until it is back under the limit; a connection that
finds 2 x `max_connections` open and none of them closable is refused with
503. Connections whose request is in and being answered are never closed. So
stalled clients are the first to go, a burst of real clients is let in, and a
legitimate request finds room as long as the server is not busy with real work.
"""

import json
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _raw_response(status, reason, message):
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(*, max_connections=64, header_timeout=10.0, body_timeout=30.0, write_timeout=30.0,
                     evict_after=0.05, metrics=None):
    """An H11Protocol subclass for `uvicorn.Config(http=...)` with these limits."""

    def count(reason):
        if metrics is not None:
            metrics.connection_closed(reason)

    hard_limit = 2 * max_connections

    class GuardedH11Protocol(H11Protocol):
        _sweep = None          # class-wide: the pending sweep of connections over the limit
        _refused = False
        _closing = False
        _phase = None          # "header" or "body" while the client is sending a request
        _phase_since = 0.0
        _last_data = 0.0       # when the client last sent bytes
        _idle_since = None     # kept-alive, between requests
        _timer = None
        _write_timer = None

        # -- connection admission ------------------------------------------------
        def connection_made(self, transport):
            live = self._live()
            if len(live) >= hard_limit and not self._make_room(live):
                self._refused = True
                self.transport = transport
                count("refused")
                transport.write(_raw_response(503, "Service Unavailable",
                                              f"the server has {max_connections} connections open"))
                transport.close()
                return
            super().connection_made(transport)
            self._last_data = time.monotonic()
            self._enter("header")
            if len(live) + 1 > max_connections:
                self._make_room(self._live())
                self._schedule_sweep()

        def _live(self):
            return [c for c in self.connections if not getattr(c, "_closing", False)]

        def _schedule_sweep(self):
            cls = type(self)
            if cls._sweep is None:
                cls._sweep = self.loop.call_later(evict_after, self._sweep_over_limit)

        def _sweep_over_limit(self):
            type(self)._sweep = None
            live = self._live()
            while len(live) > max_connections and self._make_room(live):
                live = self._live()
            if len(live) > max_connections:
                self._schedule_sweep()

        @staticmethod
        def _make_room(live):
            now = time.monotonic()
            readers = [c for c in live if c._phase and now - c._last_data >= evict_after]
            if readers:
                min(readers, key=lambda c: c._last_data)._drop(
                    "evicted", "request not received in time: the server is at its connection limit")
                return True
            idle = [c for c in live if c._idle_since is not None and now - c._idle_since >= evict_after]
            if idle:
                min(idle, key=lambda c: c._idle_since)._drop("evicted")
                return True
            return False

        # -- request phases --------------------------------------------------------
        def _enter(self, phase):
            if self._phase == phase:
                return
            self._cancel_timer()
            self._phase, self._phase_since = phase, time.monotonic()
            self._idle_since = None
            if phase is not None:
                timeout = header_timeout if phase == "header" else body_timeout
                self._timer = self.loop.call_later(timeout, self._expired, phase)

        def _cancel_timer(self):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _update_phase(self):
            if self._closing or self.transport is None or self.transport.is_closing():
                return
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._enter("body")
            elif state is h11.IDLE:
                if self._phase == "header" or self.conn.trailing_data[0]:
                    self._enter("header")       # a request has begun (or the connection is new)
                elif self._phase is not None or self._idle_since is None:
                    self._enter(None)
                    self._idle_since = time.monotonic()
            else:                                # DONE: the request is in; the app has it
                self._enter(None)

        def _expired(self, phase):
            self._timer = None
            if self._phase == phase and not self._closing:
                what = "request headers" if phase == "header" else "request body"
                limit = header_timeout if phase == "header" else body_timeout
                self._drop(f"{phase}_timeout", f"{what} not received within {limit:g} s")

        def _drop(self, reason, message=None):
            """Close this connection; a client still sending its request gets 408 first."""
            if self._closing:
                return
            self._closing = True
            self._cancel_timer()
            count(reason)
            cycle = self.cycle
            started = cycle is not None and cycle.response_started
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True        # the app's receive() now says http.disconnect
                cycle.message_event.set()
            if message and not started and not self.transport.is_closing():
                self.transport.write(_raw_response(408, "Request Timeout", message))
            self.transport.close()

        # -- uvicorn hooks -----------------------------------------------------------
        def data_received(self, data):
            if self._refused or self._closing:
                return
            self._last_data = time.monotonic()
            super().data_received(data)
            self._update_phase()

        def on_response_complete(self):
            super().on_response_complete()
            self._update_phase()

        def connection_lost(self, exc):
            self._closing = True
            self._cancel_timer()
            if self._write_timer is not None:
                self._write_timer.cancel()
            super().connection_lost(exc)

        def pause_writing(self):
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(write_timeout, self._write_expired)

        def resume_writing(self):
            super().resume_writing()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _write_expired(self):
            self._write_timer = None
            if self.flow is not None and self.flow.write_paused:
                self._drop("write_timeout")
                self.flow.resume_writing()       # release the app waiting to write

    return GuardedH11Protocol
