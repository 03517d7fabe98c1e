"""An async micro-batcher: concurrent requests share one batched model call.

Each request submits its items to a queue; one worker task takes the first waiting item, then
keeps taking items until it has `max_batch` or `max_wait_ms` has passed, runs the batch function
once in a worker thread (the event loop stays free), and hands each request its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class BatcherConfig:
    max_batch: int = 16  # items per model call
    max_wait_ms: float = 5.0  # how long the first item waits for company


class MicroBatcher:
    """Batches calls to `fn(items: list) -> sequence of results, one per item`.

    `fn` runs in a thread under `lock` (shared between batchers that use the same model, so one
    model never runs two batches at once). `calls` counts batches and `batch_sizes` records them.
    """

    def __init__(
        self,
        fn: Callable[[list], Sequence[Any]],
        config: BatcherConfig | None = None,
        lock: threading.Lock | None = None,
    ):
        self.fn = fn
        self.config = config or BatcherConfig()
        self.lock = lock or threading.Lock()
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)

    def _ensure_worker(self) -> asyncio.Queue:
        # Started lazily on the loop that serves requests (a test client may run its own loop).
        loop = asyncio.get_running_loop()
        if self._worker is None or self._loop is not loop or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        return self._queue

    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Queue `items` and wait for their results, in order."""
        queue = self._ensure_worker()
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            fut = loop.create_future()
            queue.put_nowait((item, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def submit(self, item: Any) -> Any:
        return (await self.submit_many([item]))[0]

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.config.max_wait_ms / 1000
            while len(batch) < self.config.max_batch:
                # Take what is already queued without waiting, then wait out the deadline.
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.done()]  # skip requests that gave up
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                results = await asyncio.to_thread(self._call, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except Exception as e:  # every waiting request sees the model's error
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), r in zip(live, results):
                if not fut.done():
                    fut.set_result(r)

    def _call(self, items: list) -> Sequence[Any]:
        with self.lock:
            return self.fn(items)

    async def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._worker
        self._worker = None
