"""A bounded pool of worker *processes* with a hard per-item timeout (used by math_reward_batch).

Why processes and not signal.alarm: alarms work only in the main thread and cannot interrupt big-integer C
code (Math-Verify issues #63 and #65). Why subprocess + JSON and not multiprocessing: spawn and forkserver
re-import the caller's __main__ (a flat training script would run again in every worker), and fork is
unsafe from a multi-threaded trainer. A stuck worker is killed and replaced.

A worker is `python -c ...` that puts the repository root (found from this file, so any cwd works) on
sys.path, imports this module and serves requests {"mod", "fn", "args"}: it imports `mod` by name and
replies with fn(*args). Before it reports ready it imports the math modules (sympy, mpmath), so that no
item's timeout pays for that start-up.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque

_POOL: list[dict] = []
_POOL_LOCK = threading.Lock()
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder holding verifier/
_PRELOAD = ("verifier.answer", "verifier.compare")                     # the slow imports (sympy, mpmath)


def _serve() -> None:
    """Worker main loop: one JSON request per line on stdin -> one JSON reply per line."""
    for name in _PRELOAD:
        importlib.import_module(name)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                                 # stray prints must not corrupt the protocol channel
    out.write(b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
            fn = getattr(importlib.import_module(msg["mod"]), msg["fn"])
            reply = {"ok": True, "result": fn(*msg["args"])}
        except Exception as e:                    # noqa: BLE001 — a failed item scores the default
            reply = {"ok": False, "error": repr(e)[:200]}
        out.write(json.dumps(reply).encode() + b"\n")


def _spawn_worker() -> dict:
    code = f"import sys; sys.path.insert(0, {_ROOT!r}); from verifier import pool; pool._serve()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, close_fds=True)
    return {"proc": proc, "ready": False, "buf": b"", "born": time.monotonic()}


def _kill_worker(w: dict) -> None:
    try:
        w["proc"].kill()
        w["proc"].wait(timeout=5)
    except Exception:
        pass


@atexit.register
def _shutdown_pool() -> None:
    for w in _POOL:
        _kill_worker(w)
    _POOL.clear()


def _replace(k: int) -> None:
    _kill_worker(_POOL[k])
    _POOL[k] = _spawn_worker()


def _pool_map(mod: str, fn: str, arglist, workers: int = 2, timeout: float = 3.0, default=0.0,
              startup_timeout: float = 60.0) -> list:
    """[mod.fn(*args) for args in arglist] on worker processes; `default` for a timeout, crash or error."""
    results, todo, busy, failures = [default] * len(arglist), deque(range(len(arglist))), {}, 0
    with _POOL_LOCK:
        while len(_POOL) < workers:
            _POOL.append(_spawn_worker())
        while (todo or busy) and failures <= 3 * workers:    # workers that cannot start: give up, not spin
            pool = _POOL[:workers]
            for k, w in enumerate(pool):                       # busy: pool index -> (item, deadline)
                if w["ready"] and k not in busy and todo:
                    i = todo.popleft()
                    busy[k] = (i, time.monotonic() + timeout)
                    _send(w, {"mod": mod, "fn": fn, "args": list(arglist[i])})
            waiting = {w["proc"].stdout.fileno(): k for k, w in enumerate(pool) if k in busy or not w["ready"]}
            deadlines = [d for _, d in busy.values()] + [w["born"] + startup_timeout for w in pool if not w["ready"]]
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, min(deadlines) - time.monotonic()))
            for fd in ready:
                failures += _receive(pool, waiting[fd], busy, results)
            now = time.monotonic()
            for k, w in enumerate(_POOL[:workers]):
                if k in busy and busy[k][1] <= now:            # timed out: the item keeps `default`
                    busy.pop(k)
                    _replace(k)
                elif not w["ready"] and now > w["born"] + startup_timeout:
                    failures += 1
                    _replace(k)
    return results


def _send(w: dict, msg: dict) -> None:
    try:
        w["proc"].stdin.write(json.dumps(msg).encode() + b"\n")
        w["proc"].stdin.flush()
    except OSError:
        pass                                       # a dead worker shows up as EOF when its reply is read


def _receive(pool: list, k: int, busy: dict, results: list) -> int:
    """Read what worker k sent: its ready line or a reply. Returns 1 when a worker died before it was ready."""
    w, chunk = pool[k], os.read(pool[k]["proc"].stdout.fileno(), 1 << 16)
    if not chunk:                                  # died: crash, os._exit, OOM kill
        failed = int(k not in busy)
        busy.pop(k, None)
        _replace(k)
        return failed
    w["buf"] += chunk
    while b"\n" in w["buf"]:
        line, w["buf"] = w["buf"].split(b"\n", 1)
        reply = json.loads(line)
        if not w["ready"]:
            w["ready"] = True
        elif k in busy:
            i, _ = busy.pop(k)
            if reply.get("ok"):
                results[i] = reply["result"]
    return 0
