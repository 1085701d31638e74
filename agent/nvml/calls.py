"""One place that turns NVML errors into the backend's policy.

* ``NotSupported`` (or a code listed as ``absent``): the value stays ``None`` and the
  device is never asked for it again (the key goes into the device's ``unsupported`` set).
* ``FunctionNotFound`` and pynvml's ``NVMLLibraryMismatchError`` (which is *not* an
  ``NVMLError``): the function is absent from this driver; logged once per function,
  never called again.
* ``GpuIsLost`` / ``ResetRequired``: raise ``DeviceLost``; the read ends and the device is
  reported lost.
* any other NVML error: raise ``DeviceError`` for a mandatory call (the reading gets
  status ERROR); an optional call fails alone, logged once per device, key and code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from agent.nvml import consts as C

log = logging.getLogger("gpulse.nvml")

LOST_CODES = frozenset({C.ERROR_GPU_IS_LOST, C.ERROR_RESET_REQUIRED})


class DeviceLost(Exception):
    """The GPU fell off the bus or needs a reset."""


class DeviceError(Exception):
    """A mandatory call failed: the reading is marked ERROR."""


class _Never(Exception):
    """Stands in for NVMLLibraryMismatchError when the nvml object has none."""


class DeviceCalls:
    """Per-device bookkeeping the caller needs: which keys the device does not support."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.unsupported: set[str] = set()


class Caller:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self.error: type[BaseException] = nvml.NVMLError
        self.mismatch: type[BaseException] = getattr(nvml, "NVMLLibraryMismatchError", _Never)
        self.missing: set[str] = set()  # functions this driver lacks
        self._logged: set[tuple[Any, ...]] = set()
        self._fns: dict[str, Callable[..., Any] | None] = {}

    def function(self, name: str) -> Callable[..., Any] | None:
        fn = self._fns.get(name, ...)
        if fn is ...:
            fn = getattr(self._nvml, name, None)
            self._fns[name] = fn
        return fn  # type: ignore[return-value]

    def absent(self, name: str) -> None:
        """Record that the driver lacks ``name``; say so once."""
        if name not in self.missing:
            self.missing.add(name)
            log.info("NVML function %s is not available in this driver: its readings are skipped", name)

    def log_once(self, key: tuple[Any, ...], level: int, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, message, *args)

    def call(
        self,
        dev: DeviceCalls,
        key: str,
        name: str,
        *args: Any,
        mandatory: bool = False,
        quiet: Collection[int] = (),
        quiet_value: Any = None,
        absent: Collection[int] = (),
        missing_name: str | None = None,
        on_none: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``name(*args)``; ``None`` when the value is unsupported, absent or failed.

        ``quiet`` codes return ``quiet_value`` with no bookkeeping (e.g. ``NotFound`` from
        the sample buffer: nothing new). ``missing_name`` is the C function whose absence
        the call reveals when it differs from ``name`` (``nvmlDeviceGetMemoryInfo_v2``).
        ``on_none`` is returned when a call that returns nothing succeeds.
        """
        if key in dev.unsupported:
            return None
        missing = missing_name or name
        if missing in self.missing:
            return None
        fn = self.function(name)
        if fn is None:
            self.absent(missing)
            return None
        try:
            result = fn(*args, **kwargs)
            return on_none if result is None else result
        except self.mismatch:
            self.absent(missing)
            return None
        except self.error as e:
            code = getattr(e, "value", None)
            if code in quiet:
                return quiet_value
            if code == C.ERROR_NOT_SUPPORTED or code in absent:
                dev.unsupported.add(key)
                return None
            if code == C.ERROR_FUNCTION_NOT_FOUND:
                self.absent(missing)
                return None
            if code in LOST_CODES:
                raise DeviceLost(f"{name}: {e}") from None
            if mandatory:
                raise DeviceError(f"{name}: {e}") from None
            self.log_once(
                ("error", dev.index, key, code),
                logging.WARNING,
                "GPU %d: %s failed (%s); that reading is skipped while it fails",
                dev.index,
                name,
                e,
            )
            return None
