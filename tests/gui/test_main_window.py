"""The main window on the lab model: loading, the token strip, predictions, panels menu, plugins dialog."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.gui.helpers import LAB_MODEL, LAB_PROMPT, wait_for_task
from workbench.gui.tasks import TaskState


def test_load_model_type_prompt_shows_tokens_and_predictions(qtbot, window):
    assert window.model is None
    with qtbot.waitSignal(window.model_loaded, timeout=60_000):
        task = window.load_model(LAB_MODEL)
    assert task.state is TaskState.DONE
    assert window.model.spec == LAB_MODEL
    assert "2 layers × 4 heads" in window.model_picker.info.text()

    qtbot.keyClicks(window.prompt_editor.text, LAB_PROMPT)
    qtbot.waitUntil(lambda: len(window.token_strip.chips()) == 8, timeout=20_000)
    chips = window.token_strip.chips()
    # The lab tokenizer prepends BOS by convention, and the strip shows it.
    assert [c.info.text for c in chips] == ["<bos>", "t1", "t2", "t3", "t4", "t1", "t2", "t3"]
    assert chips[0].info.is_bos and not chips[1].info.is_bos
    assert "auto (on for this tokenizer)" == window.prompt_editor.bos.itemText(0)
    expected_ids = window.model.tokenize(LAB_PROMPT)
    assert [c.info.token_id for c in chips] == expected_ids
    assert f"id {expected_ids[3]}" in chips[3].toolTip() and "position 3" in chips[3].toolTip()

    # Predictions: the induction model continues the repeated block with t4.
    qtbot.waitUntil(lambda: bool(window.predictions.predictions), timeout=20_000)
    top = window.predictions.predictions
    assert top[0][0] == "t4" and top[0][2] > 0.5
    assert all(a[2] >= b[2] for a, b in zip(top, top[1:]))

    # BOS off: the strip drops it.
    window.prompt_editor.set_bos_choice("off")
    qtbot.waitUntil(lambda: len(window.token_strip.chips()) == 7, timeout=20_000)
    assert window.token_strip.chips()[0].info.text == "t1" and window.prepend_bos is False


def test_latest_prediction_request_wins(qtbot, lab_window):
    from workbench.predict import predict_next

    window = lab_window
    prompts = [" ".join(f"t{i}" for i in range(1, n + 1)) for n in range(1, 7)]
    for prompt in prompts:  # faster than the model answers: older requests are overtaken
        window.set_prompt(prompt)
        window._request_inspection()
    final_ids = window.model.tokenize(prompts[-1])

    def showing_final() -> bool:
        return [c.info.token_id for c in window.token_strip.chips()] == final_ids and bool(window.predictions.predictions)

    qtbot.waitUntil(showing_final, timeout=20_000)
    qtbot.wait(300)  # no stale answer arrives afterwards
    assert showing_final()
    expected = predict_next(window.model, prompts[-1], k=10)
    assert [t[1] for t in window.predictions.predictions] == [t[1] for t in expected.top]


def test_empty_and_too_long_prompts_are_explained(qtbot, lab_window):
    window = lab_window
    window.set_prompt(" ".join(["t1"] * 80))  # the lab model reads at most 64 tokens
    qtbot.waitUntil(lambda: "reads at most 64" in window.token_strip.message(), timeout=20_000)
    window.set_prompt("")
    qtbot.waitUntil(lambda: "Type a prompt" in window.token_strip.message(), timeout=20_000)


def test_cancelling_a_model_load(qtbot, window):
    task = window.load_model(LAB_MODEL)
    task.cancel()
    assert task.state is TaskState.CANCELLING
    wait_for_task(qtbot, task)
    assert task.state is TaskState.CANCELLED
    assert window.model is None and window.model_picker.load_button.isEnabled()
    row = next(r for r in window.task_list.rows() if r.task is task)
    assert row.message.text() == "cancelled"
    # And a new load still works.
    with qtbot.waitSignal(window.model_loaded, timeout=60_000):
        window.load_model(LAB_MODEL)


def test_a_bad_model_spec_is_one_line_notification(qtbot, window):
    task = wait_for_task(qtbot, window.load_model("lab:no-such-model"))
    assert task.state is TaskState.FAILED
    note = window.notifications.items[-1]
    assert "Unknown lab model 'lab:no-such-model'" in note.message and "\n" not in note.message
    assert "lab:induction" in note.message  # the fix: which lab models exist
    assert window.model is None


def test_panels_menu_lists_enabled_plugins_and_dialog_shows_errors(qtbot, window):
    window.rebuild_panels_menu()
    listed = {a.data() for a in window.panels_menu.actions() if a.data()}
    assert {"logit-lens", "slow-test", "params-test", "heatmap-test"} <= listed
    broken = window.registry.record("wbtest_broken_import")
    assert broken is not None and not broken.ok and "broken on purpose" in broken.error
    assert "wbtest_broken_import" not in listed
    # Reported once at start, with the traceback on demand.
    warning = next(n for n in window.notifications.items if "wbtest_broken_import" in n.title)
    assert warning.level == "warning" and "broken on purpose" in warning.message and "Traceback" in warning.details

    dialog = window.show_plugins_dialog()
    qtbot.addWidget(dialog)
    ids = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
    row = ids.index("wbtest_broken_import")
    assert dialog.table.item(row, 3).text().startswith("disabled: failed to load: RuntimeError")
    dialog.table.selectRow(row)
    assert "Traceback" in dialog.details.toPlainText() and "broken on purpose" in dialog.details.toPlainText()
    dialog.close()


def test_panels_dock_tab_float_and_restore_layout(qtbot, lab_window):
    window = lab_window
    first = window.open_panel("logit-lens")
    second = window.open_panel("logit-lens")
    docks = window.panel_docks
    assert [d.windowTitle() for d in docks] == ["Logit lens", "Logit lens (2)"]
    assert window.tabifiedDockWidgets(docks[0]) == [docks[1]]
    layout = window.saveState()
    docks[1].setFloating(True)
    assert docks[1].isFloating()
    assert window.restoreState(layout)
    assert not docks[1].isFloating()
    docks[1].close()
    qtbot.waitUntil(lambda: len(window.panel_docks) == 1)
    assert window.panels() == [first] and second not in window.panels()
    assert window.dockWidgetArea(docks[0]) == Qt.RightDockWidgetArea


def test_the_ndif_key_is_kept_in_the_settings_and_set_for_ndif_models(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QInputDialog, QLineEdit

    from workbench.gui import main_window
    from workbench.models import ndif

    assert main_window.NDIF_KEY_VARIABLE == ndif.NDIF_KEY_VARIABLE
    monkeypatch.setenv("NDIF_API_KEY", "")  # recorded, so the key the window sets is undone after the test
    asked = {}

    def answer(parent, title, label, echo, text):  # the user types a key into the dialog
        asked.update(title=title, echo=echo, shown=text)
        return "key-typed-in-the-dialog", True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(answer))
    window.ask_ndif_api_key()
    assert asked["echo"] == QLineEdit.Password and asked["shown"] == ""
    assert window.settings.ndif_api_key() == "key-typed-in-the-dialog" and ndif.ndif_api_key() == "key-typed-in-the-dialog"
    window.settings.set_ndif_api_key("")
    assert window.settings.ndif_api_key() == ""
