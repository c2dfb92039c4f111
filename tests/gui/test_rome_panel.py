"""The ROME panel in the real window on the lab model: Run applies the edit from a worker
thread, the history lists it, and Undo / Redo restore the weights exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.gui.helpers import wait_for_task

LAB_TEMPLATE = "t1 t2 t3 t4 t1 t2 {}"
PARAMS = dict(subject="t3", template=LAB_TEMPLATE, target_new="t9", layer=0, gen_tokens=3, v_steps=25, v_weight_decay=0.01, clamp_norm_factor=40.0, short_prefixes=3, long_prefixes=3)


@pytest.fixture
def lab_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    path = tmp_path / "lab-tokens.txt"
    path.write_text("\n".join(" ".join(f"t{i}" for i in rng.integers(0, 64, size=60)) for _ in range(40)), encoding="utf-8")
    return str(path)


def weights(model):
    return {n: p.detach().clone() for n, p in model.bridge.original_model.named_parameters()}


def same(model, saved):
    return all(torch.equal(p, saved[n]) for n, p in model.bridge.original_model.named_parameters())


def test_rome_panel_edits_off_the_gui_thread_and_undo_redo_work(qtbot, lab_window, lab_corpus, tmp_path):
    from workbench.editing import EditStack

    window = lab_window
    model = window.model
    before, fingerprint = weights(model), model.fingerprint
    panel = window.open_panel("rome")
    assert panel is not None
    panel.set_parameters({**PARAMS, "corpus": lab_corpus})
    assert not panel.undo_button.isEnabled() and not panel.redo_button.isEnabled()

    task = panel.run()
    assert task is not None
    # run() returned at once: the edit is computed by the worker, not here.
    assert not EditStack.of(model).applied
    assert not panel.undo_button.isEnabled()
    wait_for_task(qtbot, task, timeout=300_000)
    assert task.state.value == "done", task.message
    qtbot.waitUntil(lambda: panel.result is not None, timeout=10_000)

    stack = EditStack.of(model)
    assert len(stack.applied) == 1 and panel.history.count() == 1
    # The request wraps inside the history list instead of running off its side.
    panel.history.setFixedWidth(90)
    qtbot.waitUntil(lambda: panel.history.viewport().width() < 90)
    assert panel.history.fontMetrics().horizontalAdvance(panel.history.item(0).text()) > 90
    # The list lays its items out again after a delay, so the fit is waited for.
    qtbot.waitUntil(lambda: panel.history.visualItemRect(panel.history.item(0)).width() <= panel.history.viewport().width())
    panel.history.setMinimumWidth(0)
    panel.history.setMaximumWidth(16777215)
    assert panel.history.item(0).toolTip() in panel.history.item(0).text()
    assert model.fingerprint == panel.result.fingerprint_after != fingerprint
    assert panel.result.p_after[0, 0] > panel.result.p_after[0, 1]
    edited = weights(model)

    assert panel.undo_button.isEnabled()
    started = time.perf_counter()
    panel.undo_button.click()
    undo_seconds = time.perf_counter() - started
    assert same(model, before) and model.fingerprint == fingerprint
    assert panel.redo_button.isEnabled() and not panel.undo_button.isEnabled()
    assert panel.history.item(0).text().startswith("↶")
    panel.redo_button.click()
    assert same(model, edited) and model.fingerprint == panel.result.fingerprint_after

    path = tmp_path / "edit.h5"
    panel.save_last_edit(path)
    panel.undo()
    panel.load_edit_file(path)
    assert same(model, edited)
    assert panel.history.count() == 1
    panel.undo()
    assert same(model, before)
    assert undo_seconds < 0.05 + 0.2  # a weight copy plus a repaint of the list
