"""Tokens and next-token predictions for the prompt being typed, computed off the GUI thread.

Requests come in at typing speed; only the latest one matters. One background
thread takes the newest pending request, tokenizes it (cheap, reported at once
for the token strip), then runs the model for the predictions. A request that
was overtaken by a newer one is dropped without running the model, and its
answers are never reported.

The model is shared with analysis jobs, whose hooks must not see a prediction's
forward pass; the forward pass therefore holds the window's model lock, and
waits while an analysis holds it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal

from ..hooks.interrupt import Interrupted, cancellable
from ..models import LoadedModel
from .tasks import lower_thread_priority


@dataclass(frozen=True)
class PromptRequest:
    id: int
    model: LoadedModel
    prompt: str
    prepend_bos: bool | None
    k: int = 10
    # Set when a newer request, a new model or quitting overtakes this one: its forward pass
    # stops between two blocks instead of running to the end (minutes on a long prompt).
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class PromptTokens:
    request_id: int
    ids: list[int]
    texts: list[str]
    bos_used: bool


@dataclass(frozen=True)
class PromptPredictions:
    request_id: int
    top: list[tuple[str, int, float]]


class PromptInspector(QObject):
    tokens_ready = Signal(object)  # PromptTokens
    predictions_ready = Signal(object)  # PromptPredictions
    failed = Signal(int, object)  # request id, exception
    # request id, tokens, waiting: the model is busy with a job (True) or the pass has begun (False)
    predicting = Signal(int, int, bool)

    def __init__(self, model_lock: threading.Lock, parent=None):
        super().__init__(parent)
        self._model_lock = model_lock
        self._condition = threading.Condition()
        self._pending: PromptRequest | None = None
        self._running: PromptRequest | None = None
        self._latest_id = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="prompt-inspector", daemon=True)
        self._thread.start()

    @property
    def latest_id(self) -> int:
        return self._latest_id

    def request(self, model: LoadedModel, prompt: str, prepend_bos: bool | None, k: int = 10) -> int:
        """Queue a request (replacing any pending one); returns its id."""
        with self._condition:
            self._latest_id += 1
            self._pending = PromptRequest(self._latest_id, model, prompt, prepend_bos, k)
            self._cancel_running()
            self._condition.notify()
            return self._latest_id

    def _cancel_running(self) -> None:
        running = self._running
        if running is not None:
            running.cancel.set()

    def cancel_pending(self) -> None:
        """Forget whatever is queued or running (e.g. the model was unloaded)."""
        with self._condition:
            self._latest_id += 1
            self._pending = None
            self._cancel_running()

    def stop(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._stopping = True
            self._pending = None
            self._cancel_running()
            self._condition.notify()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _is_current(self, request: PromptRequest) -> bool:
        return request.id == self._latest_id and not self._stopping

    def _loop(self) -> None:
        lower_thread_priority()
        while True:
            with self._condition:
                while self._pending is None and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                request, self._pending = self._pending, None
                self._running = request
            try:
                with cancellable(request.cancel):
                    self._serve(request)
            except Interrupted:
                pass  # overtaken: a newer request (or quitting) follows
            except Exception as exc:  # shown under the prompt; the thread must live on
                if self._is_current(request):
                    self.failed.emit(request.id, exc)
            finally:
                with self._condition:
                    self._running = None

    def _serve(self, request: PromptRequest) -> None:
        from ..predict import predict_next

        model = request.model
        ids = model.tokenize(request.prompt, prepend_bos=request.prepend_bos)
        bos_used = model.tokenizer_prepends_bos if request.prepend_bos is None else request.prepend_bos
        if not self._is_current(request):
            return
        self.tokens_ready.emit(PromptTokens(request.id, ids, model.str_tokens(ids), bool(bos_used)))
        if not self._acquire_model(request, len(ids)):
            return
        try:
            if not self._is_current(request):
                return
            self.predicting.emit(request.id, len(ids), False)
            prediction = predict_next(model, request.prompt, k=request.k, prepend_bos=request.prepend_bos)
        finally:
            self._model_lock.release()
        if self._is_current(request):
            self.predictions_ready.emit(PromptPredictions(request.id, prediction.top))

    def _acquire_model(self, request: PromptRequest, n_tokens: int) -> bool:
        """Wait for the model, giving up as soon as a newer request arrives."""
        said = False
        while not self._model_lock.acquire(timeout=0.05):
            if not self._is_current(request):
                return False
            if not said:
                self.predicting.emit(request.id, n_tokens, True)
                said = True
        return True
