"""Running the nnsight engine's sessions on NDIF: the same session, sent with a backend.

The nnsight engine builds one session per `run_many` (engines/nnsight_engine.py) and runs
it here, or hands it to a backend made here:

- `RemoteMode.ndif(host, key)`: nnsight's own RemoteBackend, which serializes the session
  (source and all), posts it to NDIF and waits on a websocket for the job's states. The
  wait reports each state to the job running it (job_context.report_status: "NDIF:
  queued", "running", "downloading the result") and checks for Cancel ten times a second;
  Cancel stops waiting and closes the connection (NDIF's client has no call that stops the
  job on the server, so it runs to its end there, unread).
- `RemoteMode.simulated()`: nnsight's LocalSimulationBackend, which serializes the session
  exactly as for NDIF, deserializes it with every module that is not on an NDIF server
  hidden (the workbench included), and runs what came out here. A session that passes
  this would deserialize on the server: it is how the suite tests the remote path.

The workbench is not installed on NDIF's servers, so the session's code that comes from
the workbench (the engine's small write and read helpers) travels by value: every
`workbench` module is registered with cloudpickle for that, whether the workbench was
installed from a wheel or from a working tree.

`remote_errors` turns what goes wrong on the way (no connection, a refused key, a job that
failed on the server, a lost connection) into one EngineError that says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError
from ..job_context import Interrupted, raise_if_cancelled, report_status

# NDIF's job states as the workbench shows them (nnsight.schema.response.Status).
STATE_WORDS = {
    "RECEIVED": "received",
    "QUEUED": "queued",
    "PROVISIONING": "provisioning the model",
    "DEPLOYING": "deploying the model",
    "DISPATCHED": "dispatched",
    "RUNNING": "running",
    "COMPLETED": "done",
    "ERROR": "failed",
}


@dataclass(frozen=True)
class RemoteMode:
    """Where an nnsight engine's sessions run when not here."""

    kind: str  # "ndif" or "simulated"
    host: str = ""
    api_key: str = ""

    @classmethod
    def ndif(cls, host: str, api_key: str) -> RemoteMode:
        return cls("ndif", host, api_key)

    @classmethod
    def simulated(cls) -> RemoteMode:
        return cls("simulated")

    def __repr__(self) -> str:  # the key never reaches a log or a traceback
        return f"RemoteMode({self.kind!r}, host={self.host!r})"


def ship_workbench_by_value() -> None:
    """Register the workbench's modules to travel by value in a session (idempotent)."""
    import nnsight

    nnsight.register("workbench")


class _JobStatus:
    """Stands in for nnsight's StatusDisplay: each state goes to the running job, and the
    websocket's idle wakes (every 0.1 s while `enabled`) check for Cancel."""

    def __init__(self) -> None:
        self.enabled = True
        self.last = ""

    def update(self, response: Any) -> None:
        status = getattr(response.status, "value", str(response.status))
        if status == "LOG":
            return
        words = STATE_WORDS.get(status, status.lower())
        if words != self.last:
            self.last = words
            report_status(f"NDIF: {words}")

    def refresh(self) -> None:
        raise_if_cancelled()


def remote_backend(model: Any, mode: RemoteMode) -> Any:
    """The nnsight backend that runs a session of `model` as `mode` says."""
    ship_workbench_by_value()
    if mode.kind == "simulated":
        from nnsight.intervention.backends.local import LocalSimulationBackend

        return LocalSimulationBackend(model)
    from nnsight.intervention.backends.remote import RemoteBackend

    class WorkbenchRemoteBackend(RemoteBackend):
        def download_result(self, url: Any) -> Any:
            report_status("NDIF: downloading the result")
            self.display.enabled = False  # no tqdm bar on the terminal: the job's row shows it
            try:
                return super().download_result(url)
            finally:
                self.display.enabled = True

    backend = WorkbenchRemoteBackend(model.to_model_key(), host=mode.host, api_key=mode.api_key, blocking=True)
    backend.display = _JobStatus()
    return backend


@contextlib.contextmanager
def remote_errors(mode: RemoteMode | None, model_name: str) -> Iterator[None]:
    """EngineError, with the fix, for what fails between here and NDIF; a cancel passes on."""
    if mode is None or mode.kind != "ndif":
        yield
        return
    try:
        yield
    except (Interrupted, EngineError):
        raise
    except Exception as exc:
        raise explain_remote_failure(exc, mode, model_name) from exc


def explain_remote_failure(exc: BaseException, mode: RemoteMode, model_name: str) -> EngineError:
    status = _http_status(exc)
    if status in (401, 403):
        return EngineError(
            f"NDIF refused the API key (HTTP {status}) for {model_name}: it is wrong, expired or has no access to this model.",
            "set NDIF_API_KEY (or the key in the app's settings) to a current key from https://login.ndif.us, and check the model is one your account may run",
        )
    name = type(exc).__name__
    if name == "RemoteError":
        return EngineError(f"The job on NDIF failed: {exc}", "results received before this job are kept; check the model's status at https://nnsight.net/status and try again")
    if "ConnectionClosed" in name or isinstance(exc, (ConnectionError, TimeoutError)) or name in ("ConnectError", "ReadTimeout", "RemoteProtocolError"):
        return EngineError(
            f"The connection to NDIF at {mode.host} was lost or refused ({name}: {exc}).",
            "results received before this job are kept; check your network and run it again",
        )
    if status is not None:
        return EngineError(f"NDIF at {mode.host} answered HTTP {status} for {model_name} ({exc}).", "the model may not be hosted now; see https://nnsight.net/status")
    return EngineError(f"Running {model_name} on NDIF failed: {name}: {exc}", "results received before this job are kept; try again, or run a local model with nnsight:<spec>")


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status a websocket handshake or an HTTP call was refused with, if any."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if candidate is None:
            continue
        status = getattr(candidate, "status_code", None)  # websocket's WebSocketBadStatusException
        if status is None:
            response = getattr(candidate, "response", None)  # httpx.HTTPStatusError
            status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None
