"""The serving path's HTTP/1.1 client (pairshift.providers.http1) against raw servers that answer exactly what
each test needs: connections kept alive and reused, a request in one write, the stale-connection retry, the
framings (content-length, chunked, the close), gzip, timeouts, abandoned answers, proxies left to httpx."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from pairshift.providers import http1


class Server:
    """A raw HTTP server on 127.0.0.1: ``answer(request bytes, connection number)`` gives what to send: bytes,
    or a list of bytes (each its own write), floats (a pause, seconds) and None (close the connection); None
    alone closes it without answering. It records every request and the connection it came on."""

    def __init__(self, answer) -> None:
        self.answer, self.requests, self.connections = answer, [], 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(v for k, v in _headers(head) if k == "content-length"))
                body = await reader.readexactly(length)
                self.requests.append((head, body, number))
                out = self.answer(head + body, number)
                for part in out if isinstance(out, list) else [out]:
                    if part is None:
                        return
                    if isinstance(part, float):
                        await asyncio.sleep(part)
                    else:
                        writer.write(part)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode().split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines if ":" in line)]


def ok(body: bytes = b'{"ok": true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_a_connection_is_kept_alive_and_reused_and_a_request_is_one_json_post():
    async with Server(lambda request, n: ok()) as server:
        client = http1.Client()
        for _ in range(3):
            response = await client.post(server.url, json={"a": "é"}, headers={"authorization": "Bearer k"})
            assert response.status_code == 200 and json.loads(response.content) == {"ok": True}
        assert server.connections == 1
        head, body, _ = server.requests[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        headers = dict(_headers(head))
        assert headers["host"] == f"127.0.0.1:{server.port}" and headers["authorization"] == "Bearer k"
        assert headers["content-type"] == "application/json" and "accept-encoding" not in headers
        assert body == '{"a":"é"}'.encode()  # as httpx sends json=: compact UTF-8


async def test_a_pooled_connection_the_server_closed_is_replaced_and_the_request_sent_once_more():
    async with Server(lambda request, n: ok(b'{"n": %d}' % n)) as server:
        client = http1.Client()
        await client.post(server.url, json={}, headers={})
        conn = client._idle[("http", "127.0.0.1", server.port)][-1]
        conn.transport.close()  # as if the server's idle timeout closed it while it sat in the pool
        conn.closed = False  # ... and the client has not noticed yet
        response = await client.post(server.url, json={}, headers={})
        assert json.loads(response.content) == {"n": 2} and server.connections == 2


async def test_a_server_closing_without_an_answer_on_a_new_connection_is_an_error():
    async with Server(lambda request, n: None) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending an answer"):
            await http1.Client().post(server.url, json={}, headers={})


async def test_chunked_gzip_and_close_delimited_bodies():
    payload = json.dumps({"text": "x" * 1000}).encode()
    packed = gzip.compress(payload)

    def answer(request: bytes, n: int) -> list:
        if len(server.requests) == 1:  # chunked and gzip, then the connection stays for the next request
            return [
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n",
                b"%x\r\n%s\r\n" % (10, packed[:10]),
                0.01,
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed) - 10, packed[10:]),
            ]
        return [b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + payload[:10], 0.01, payload[10:], None]

    async with Server(answer) as server:
        client = http1.Client()
        assert (await client.post(server.url, json={}, headers={})).content == payload
        assert (await client.post(server.url, json={}, headers={})).content == payload
        assert server.connections == 1
        # the close-delimited answer ended the connection: it is not pooled
        assert not client._idle.get(("http", "127.0.0.1", server.port))


async def test_a_stream_is_read_as_it_arrives_and_its_connection_pooled_only_when_read_to_the_end():
    def answer(request: bytes, n: int) -> list:
        return [
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            b"7\r\ndata: 1\r\n",
            0.02,
            b"7\r\ndata: 2\r\n0\r\n\r\n",
        ]

    async with Server(answer) as server:
        client = http1.Client()
        origin = ("http", "127.0.0.1", server.port)
        async with client.stream("POST", server.url, json={}, headers={}) as response:
            assert response.status_code == 200
            parts = [part async for part in response.aiter_bytes()]
        assert parts == [b"data: 1", b"data: 2"] and len(client._idle[origin]) == 1
        async with client.stream("POST", server.url, json={}, headers={}) as response:
            async for _part in response.aiter_bytes():
                break  # abandoned mid-answer: the connection cannot carry another request
        assert not client._idle[origin] and server.connections == 1
        async with client.stream("POST", server.url, json={}, headers={}) as response:
            assert [p async for p in response.aiter_bytes()] == [b"data: 1", b"data: 2"]
        assert server.connections == 2


async def test_timeouts_and_connection_failures_are_httpx_errors():
    async with Server(lambda request, n: [1.0, ok()]) as server:
        with pytest.raises(httpx.ReadTimeout):
            await http1.Client().post(server.url, json={}, headers={}, timeout=0.05)
    with pytest.raises(httpx.ConnectError):
        await http1.Client().post("http://127.0.0.1:9/v1/x", json={}, headers={})
    with pytest.raises(httpx.LocalProtocolError, match="line break"):
        await http1.Client().post("http://127.0.0.1:9/v1/x", json={}, headers={"x-api-key": "k\r\nx: y"})


async def test_an_error_answer_keeps_its_status_headers_and_body():
    error = b'{"error": {"message": "slow down"}}'
    async with Server(
        lambda request, n: (
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: %d\r\n\r\n%s"
            % (len(error), error)
        )
    ) as server:
        async with http1.Client().stream("POST", server.url, json={}, headers={}) as response:
            assert response.status_code == 429 and response.headers["retry-after"] == "7"
            assert await response.aread() == error


async def test_an_origin_behind_a_proxy_goes_through_httpx(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "localhost")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"via": "httpx"})

    client = http1.Client()
    client._proxied = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    response = await client.post("http://api.example/v1/chat/completions", json={"a": 1}, headers={"k": "v"})
    assert response.json() == {"via": "httpx"} and seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {"a": 1}
    await client._proxied.aclose()


async def test_a_large_answer_read_slowly_pauses_reading_and_arrives_whole():
    body = bytes(range(256)) * 4096  # 1 MiB, over the high-water mark

    async with Server(lambda request, n: ok(body)) as server:
        client = http1.Client()
        async with client.stream("POST", server.url, json={}, headers={}) as response:
            await asyncio.sleep(0.05)  # the consumer is late: the answer piles up, reading pauses
            conn = response._conn
            assert conn is not None and conn.paused and conn.buffered < len(body)  # not all of it read
            got = b"".join([part async for part in response.aiter_bytes()])
        assert got == body and len(client._idle[("http", "127.0.0.1", server.port)]) == 1


async def test_a_stream_that_stalls_mid_answer_times_out_and_its_connection_is_dropped():
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n"
    async with Server(lambda request, n: [head, 5.0]) as server:
        client = http1.Client()
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", server.url, json={}, headers={}, timeout=0.1) as response:
                async for _part in response.aiter_bytes():
                    pass
        assert not client._idle.get(("http", "127.0.0.1", server.port))
        assert client._open._value == http1.MAX_CONNECTIONS  # its slot is free again


async def test_a_request_cancelled_while_waiting_frees_its_slot_and_drops_its_connection():
    async with Server(lambda request, n: [5.0, ok()]) as server:
        client = http1.Client()
        task = asyncio.create_task(client.post(server.url, json={}, headers={}))
        while not server.requests:  # the request is out; the answer is not coming soon
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._open._value == http1.MAX_CONNECTIONS
        assert not client._idle.get(("http", "127.0.0.1", server.port))


async def test_the_read_timeout_counts_from_the_last_bytes_and_follows_each_requests_timeout():
    # a head, then the body in pieces, each within the timeout of the bytes before it but the whole answer
    # well beyond it: no timeout (the timer is the connection's, moved on lazily, not one per wait)
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    parts = [head, 0.12, b"7\r\ndata: 1\r\n", 0.12, b"7\r\ndata: 2\r\n", 0.12, b"0\r\n\r\n"]
    answers = iter([parts, [ok(), 0.0], [0.3, ok()]])
    async with Server(lambda request, n: next(answers)) as server:
        client = http1.Client()
        async with client.stream("POST", server.url, json={}, headers={}, timeout=0.2) as response:
            assert b"".join([part async for part in response.aiter_bytes()]) == b"data: 1data: 2"
        # the same connection, first with a long timeout, then a short one: the short one applies
        assert (await client.post(server.url, json={}, headers={}, timeout=30.0)).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await client.post(server.url, json={}, headers={}, timeout=0.1)
        assert len(server.requests) == 3 and {n for _h, _b, n in server.requests} == {1}
