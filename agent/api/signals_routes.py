"""HTTP API of the derived signals: workload FLOPs reports and the per-GPU diagnosis.

* ``POST /api/v1/workloads/report`` — ``{"pid": 4121, "model_flops_total": 1.2e18}`` or
  ``{"pid": 4121, "tokens_total": 5.0e6, "flops_per_token": 4.2e10}`` (monotonic totals).
  A bearer token is required when ``signals.report_token`` is set (``Authorization: Bearer``,
  or ``X-Gpulse-Token`` when basic auth is on). Bad bodies get 422 with
  the reason (negative, decreasing, absurd, unknown or missing field).
* ``GET /api/v1/diagnosis?minutes=N`` — state shares and one sentence per GPU.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.signals.diagnosis import diagnose_store
from agent.signals.reported import ReportError

router = APIRouter()


class WorkloadReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int = Field(gt=0)
    model_flops_total: float | None = Field(None, ge=0, allow_inf_nan=False)
    tokens_total: float | None = Field(None, ge=0, allow_inf_nan=False)
    flops_per_token: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_form(self) -> WorkloadReport:
        tokens = self.tokens_total is not None or self.flops_per_token is not None
        if self.model_flops_total is not None and tokens:
            raise ValueError("give either model_flops_total or tokens_total with flops_per_token, not both")
        if self.model_flops_total is None and (self.tokens_total is None or self.flops_per_token is None):
            raise ValueError("give model_flops_total, or tokens_total together with flops_per_token")
        return self

    def total(self) -> float:
        if self.model_flops_total is not None:
            return self.model_flops_total
        assert self.tokens_total is not None and self.flops_per_token is not None  # by _one_form
        return self.tokens_total * self.flops_per_token


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{field}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _check_token(request: Request, expected: str) -> None:
    """``Authorization: Bearer <token>``, or ``X-Gpulse-Token`` where basic auth already takes that header."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.headers.get("x-gpulse-token", "")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, detail="a valid bearer token is required (signals.report_token is set)",
                            headers={"WWW-Authenticate": "Bearer"})


@router.post("/api/v1/workloads/report")
async def report_workload(request: Request) -> dict[str, Any]:
    runtime = request.app.state.runtime
    engine = runtime.signals
    token = engine.settings.report_token
    if token is not None:
        _check_token(request, token.get_secret_value())
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(422, detail=f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(422, detail="body must be a JSON object with pid and a FLOPs total")
    try:
        report = WorkloadReport.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, detail=_validation_message(exc)) from None
    total = report.total()
    if not math.isfinite(total):
        raise HTTPException(422, detail="tokens_total x flops_per_token is not a finite number")
    try:
        accepted = engine.reports.report(report.pid, total, runtime.clock.now())
    except ReportError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return {"pid": accepted.pid, "total_flops": accepted.total, "added_flops": accepted.added,
            "baseline": accepted.baseline}


@router.get("/api/v1/diagnosis")
def diagnosis(request: Request, minutes: float | None = Query(None, gt=0, le=1440)) -> dict[str, Any]:
    runtime = request.app.state.runtime
    engine = runtime.signals
    minutes = minutes if minutes is not None else engine.settings.diagnosis_default_minutes
    snapshot = runtime.store.latest()
    items = diagnose_store(runtime.store, snapshot, minutes, precision=engine.settings.precision,
                           min_share=engine.settings.diagnosis_min_share, providers=engine.evidence_providers)
    return {"minutes": minutes, "precision": engine.settings.precision,
            "gpus": [d.to_dict() for d in items]}
