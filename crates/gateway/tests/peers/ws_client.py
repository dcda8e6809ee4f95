#!/usr/bin/python3
"""A real WebSocket client (python3-websockets): connects to the URL given, sends each
further argument and prints what comes back, one per line. With --hold N it keeps the
connection open N seconds before the last message (to span a gateway reload)."""
import asyncio, sys

import websockets


async def main():
    args = sys.argv[1:]
    hold = 0
    if args[0] == "--hold":
        hold = float(args[1])
        args = args[2:]
    url, msgs = args[0], args[1:]
    async with websockets.connect(url) as ws:
        for i, m in enumerate(msgs):
            if hold and i == len(msgs) - 1:
                await asyncio.sleep(hold)
            await ws.send(m)
            print(await ws.recv(), flush=True)


asyncio.run(main())
