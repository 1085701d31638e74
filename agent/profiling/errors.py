"""Profiling errors: each says what went wrong and how to fix it, and carries its HTTP status.

The API turns a ``ProfilingError`` into ``{"error": code, "message": message, "detail":
message}`` with ``status`` (``detail`` as in the rest of the agent's API); a capture that
fails on its worker thread keeps the same code and message in its status. Nothing in
profiling surfaces as a bare 500.
"""

from __future__ import annotations


class ProfilingError(Exception):
    code = "profiling_error"
    status = 500

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message, "detail": self.message}


class PySpyMissing(ProfilingError):
    code = "pyspy_missing"
    status = 503


class PtraceDenied(ProfilingError):
    code = "ptrace_not_permitted"
    status = 503


class ProcessGone(ProfilingError):
    code = "process_gone"
    status = 404


class NotPython(ProfilingError):
    code = "not_python"
    status = 422


class PidNotAllowed(ProfilingError):
    code = "pid_not_allowed"
    status = 403


class NoGpuOwner(ProfilingError):
    code = "gpu_has_no_process"
    status = 409


class UnknownGpu(ProfilingError):
    code = "unknown_gpu"
    status = 404


class TooManyCaptures(ProfilingError):
    code = "too_many_captures"
    status = 429


class PidBusy(ProfilingError):
    code = "pid_busy"
    status = 409


class InvalidRequest(ProfilingError):
    code = "invalid_request"
    status = 422


class ProfileNotFound(ProfilingError):
    code = "profile_not_found"
    status = 404


class ProfileNotReady(ProfilingError):
    code = "profile_not_ready"
    status = 409


class CaptureFailed(ProfilingError):
    code = "capture_failed"
    status = 502  # py-spy itself failed: the agent is a gateway to it


class CaptureTimeout(ProfilingError):
    code = "capture_timeout"
    status = 504


class StorageError(ProfilingError):
    code = "storage_error"
    status = 507
