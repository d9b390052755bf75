#!/usr/bin/env python3
"""Opens N idle TLS keep-alive connections to a Gatehouse gateway, for benches/idle.sh.

Each connection completes a TLS handshake and one HTTP/1.1 request (with a session cookie
when one is given, so the request is proxied and the connection also holds its upstream
connection), reads the whole answer, then stays open and silent. Sources rotate over
127.0.1.1-127.0.1.250 and at most CONCURRENCY connections are opening at once, so no source
comes near the gateway's pre-authentication bound (32 per source).

Prints "ready N" on stdout once N connections are idle, then waits for a line on stdin
before closing them all (the caller measures the gateway's memory in between).
"""

import asyncio
import ssl
import sys

CONCURRENCY = 64
SOURCES = [f"127.0.1.{i}" for i in range(1, 251)]


async def open_one(i, port, host, cookie, ctx, gate, held):
    async with gate:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ctx,
            server_hostname=host,
            local_addr=(SOURCES[i % len(SOURCES)], 0),
        )
        head = f"GET /idle HTTP/1.1\r\nHost: {host}\r\n"
        if cookie:
            head += f"Cookie: __Host-gatehouse={cookie}\r\n"
        writer.write((head + "\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        held.append((reader, writer, status))


async def main():
    port, host, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    cookie = sys.argv[4] if len(sys.argv) > 4 else ""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    gate = asyncio.Semaphore(CONCURRENCY)
    held = []
    await asyncio.gather(*(open_one(i, port, host, cookie, ctx, gate, held) for i in range(n)))
    statuses = {}
    for _, _, status in held:
        code = status.split(b" ")[1].decode() if status.count(b" ") else "?"
        statuses[code] = statuses.get(code, 0) + 1
    print(f"ready {len(held)} statuses {statuses}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _, writer, _ in held:
        writer.close()


asyncio.run(main())
