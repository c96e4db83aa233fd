"""Run an emulator on its own event loop in a background thread (for tests and the `demo` command)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import DeviceSpec

T = TypeVar("T")


class EmulatorThread:
    """An Emulator with its control API, served from a daemon thread.

    Without a socket path or TCP address, usbmuxd listens on a free loopback TCP port. Use as a context manager
    or call `start()` and `stop()`. Touch the emulator's state only through `call()`.
    """

    def __init__(
        self,
        specs: Iterable[DeviceSpec] = (),
        *,
        socket_path: str | Path | None = None,
        tcp_address: str | None = None,
        speed: float = 1.0,
        seed: str = "stationd",
        control_address: str | None = "127.0.0.1:0",
        activation_address: str | None = "127.0.0.1:0",
    ) -> None:
        if socket_path is None and tcp_address is None:
            tcp_address = "127.0.0.1:0"
        self.emulator = Emulator(
            specs,
            socket_path=socket_path,
            tcp_address=tcp_address,
            speed=speed,
            seed=seed,
            control_address=control_address,
            activation_address=activation_address,
        )
        self.usbmux_address: str | None = None
        self.control_url: str | None = None
        self.activation_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> EmulatorThread:
        """Start the thread; return once usbmuxd, the activation server and the control API listen."""
        if self._thread is not None:
            raise RuntimeError("this emulator thread was already started")
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="stationd-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the emulator did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self.usbmux_address = self.emulator.usbmux_address
        self.control_url = self.emulator.control_url
        self.activation_url = self.emulator.activation_url
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.emulator.stop()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the emulator's loop (awaiting it if it is a coroutine); return its result."""
        if self._loop is None or not self._ready.is_set() or self._error is not None:
            raise RuntimeError("the emulator thread is not running")

        async def run() -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    @property
    def running(self) -> bool:
        """True from a successful `start()` until `stop()` has joined the thread."""
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the emulator (closing every connection) and join the thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the emulator thread did not stop within {timeout} s")
