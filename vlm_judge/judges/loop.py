"""A private asyncio event loop in a daemon thread, for the synchronous judge client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LoopThread:
    """A private event loop in a daemon thread: the sync client keeps one connection pool across calls and works
    inside programs that already run a loop (notebooks, trainers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="judge-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()
