"""Workspaces: save and reopen (results restored without rerunning), damaged files, missing plugins, settings."""

from __future__ import annotations

import json

import h5py
import numpy as np

from tests.gui.helpers import LAB_MODEL, LAB_PROMPT, wait_for_task
from workbench.gui.settings import AppSettings
from workbench.gui.tasks import TaskState
from workbench.gui.workspace import WORKSPACE_GROUP, read_workspace


def _saved_workspace(qtbot, window, path):
    with qtbot.waitSignal(window.workspace_saved, timeout=30_000):
        window.save_workspace(path)
    return path


def test_save_and_reopen_restores_panels_and_results_without_rerunning(qtbot, lab_window, make_window, tmp_path):
    window = lab_window
    window.prompt_editor.set_bos_choice("on")
    panel = window.open_panel("logit-lens")
    panel.set_parameters({"top_k": 3})
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel.run()
    original = panel.result
    window.open_panel("params-test").set_parameters({"count": 7, "note": "unrun"})
    path = _saved_workspace(qtbot, window, tmp_path / "session.wbproj.h5")
    assert window.workspace_path == path and path.name in window.windowTitle()

    reopened = make_window()
    started = []
    reopened.tasks.task_started.connect(lambda task: started.append(task.title))
    with qtbot.waitSignal(reopened.workspace_opened, timeout=30_000):
        reopened.open_workspace(path)
    assert reopened.prompts() == [LAB_PROMPT] and reopened.prompt_editor.bos_choice == "on"
    lens, params = reopened.panels()
    assert [d.objectName() for d in reopened.panel_docks] == [d.objectName() for d in window.panel_docks]
    assert lens.parameters()["top_k"] == 3 and params.parameters()["count"] == 7 and params.result is None
    # The result is the saved one, shown without running the analysis again.
    np.testing.assert_array_equal(lens.result.top_ids, original.top_ids)
    assert lens.result.meta.model_fingerprint == original.meta.model_fingerprint
    assert lens.heatmap.matrix.shape == lens.result.p_final_top.shape and lens.export_button.isEnabled()
    # The workspace's model is loaded again, in the background.
    qtbot.waitUntil(lambda: reopened.model is not None, timeout=60_000)
    assert reopened.model.spec == LAB_MODEL
    assert not any(title.startswith(("Logit lens", "Params test")) for title in started), started


def test_a_damaged_file_is_reported_and_the_session_is_unchanged(qtbot, lab_window, tmp_path):
    window = lab_window
    panel = window.open_panel("logit-lens")
    garbage = tmp_path / "garbage.wbproj.h5"
    garbage.write_bytes(b"this is not an HDF5 file at all" * 10)
    task = wait_for_task(qtbot, window.open_workspace(garbage))
    assert task.state is TaskState.FAILED
    assert "is not an HDF5 file" in window.notifications.items[-1].message
    assert window.panels() == [panel] and window.prompts() == [LAB_PROMPT]

    # A store that is not a workspace, and a workspace whose description is damaged.
    store = tmp_path / "store.h5"
    from workbench.store.layout import open_store_file

    open_store_file(store, "a").close()
    wait_for_task(qtbot, window.open_workspace(store))
    assert "not a workspace" in window.notifications.items[-1].message
    path = _saved_workspace(qtbot, window, tmp_path / "ok.wbproj.h5")
    with h5py.File(path, "a") as handle:
        del handle[WORKSPACE_GROUP]["description"]
        handle[WORKSPACE_GROUP]["description"] = "{not json"
    wait_for_task(qtbot, window.open_workspace(path))
    assert "damaged" in window.notifications.items[-1].message
    assert window.panels() == [panel]


def test_a_panel_whose_plugin_is_missing_is_reported_and_kept(qtbot, lab_window, make_window, tmp_path, monkeypatch, plugin_folder):
    window = lab_window
    slow = window.open_panel("params-test")
    slow.set_parameters({"note": "keep me"})
    with qtbot.waitSignal(slow.result_changed, timeout=30_000):
        slow.run()
    window.open_panel("logit-lens")
    path = _saved_workspace(qtbot, window, tmp_path / "with-plugin.wbproj.h5")

    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", "")  # the test plugins are gone
    without = make_window()
    assert without.registry.record("params-test") is None
    with qtbot.waitSignal(without.workspace_opened, timeout=30_000):
        without.open_workspace(path)
    warning = without.notifications.items[-1]
    assert warning.level == "warning" and "needs the plugin 'params-test', which is not installed" in warning.message
    assert [p.plugin.id for p in without.panels()] == ["logit-lens"]

    # Saving again keeps the missing plugin's panel and its stored result.
    resaved = _saved_workspace(qtbot, without, tmp_path / "resaved.wbproj.h5")
    with h5py.File(resaved, "r") as handle:
        description = json.loads(handle[WORKSPACE_GROUP]["description"][()])
        kept = next(p for p in description["panels"] if p["plugin"] == "params-test")
        assert kept["state"]["params"]["note"] == "keep me" and kept["result"] in handle["results"]
    from workbench.plugin_api import discover_plugins

    restored = read_workspace(resaved, discover_plugins(extra_folders=[plugin_folder]))
    params_panel = next(p for p in restored.panels if p.plugin_id == "params-test")
    assert params_panel.result is not None and params_panel.result.label.endswith("keep me:[0, 1]:False")


def test_settings_persist_recent_models_and_workspaces(qtbot, make_window, tmp_path):
    window = make_window(remember=True)
    with qtbot.waitSignal(window.model_loaded, timeout=60_000):
        window.load_model(LAB_MODEL)
    _saved_workspace(qtbot, window, tmp_path / "remembered.wbproj.h5")
    window.close()
    settings = AppSettings()
    assert settings.recent_models()[0] == LAB_MODEL
    assert settings.last_workspace == str(tmp_path / "remembered.wbproj.h5")
    assert settings.geometry() is not None
    again = make_window(remember=True)
    assert again.model_picker.current_spec() == LAB_MODEL


def test_a_reopened_workspace_shows_the_same_head_scale_and_tab(qtbot, lab_window, make_window, tmp_path):
    """Issue 18: reopening restored every result but not the view (attention came back at
    L0H0 instead of the head shown; scale, masking and tabs were lost too)."""
    window = lab_window
    attention = window.open_panel("attention")
    with qtbot.waitSignal(attention.result_changed, timeout=60_000):
        attention.run()
    with qtbot.waitSignal(attention.result_changed, timeout=60_000):
        attention.select_head(1, 2)  # the `pattern` query
    attention.set_parameters({"scale": "log", "mask_first_token": True})
    attention._form_changed()
    qk_ov = window.open_panel("qk-ov")
    with qtbot.waitSignal(qk_ov.result_changed, timeout=60_000):
        qk_ov.run()
    qk_ov.tabs.setCurrentIndex(2)
    path = _saved_workspace(qtbot, window, tmp_path / "view.wbproj.h5")

    reopened = make_window()
    with qtbot.waitSignal(reopened.workspace_opened, timeout=30_000):
        reopened.open_workspace(path)
    again = reopened.panel_for("attention")
    assert (again.result.layer, again.result.head) == (1, 2)
    assert again.parameters()["scale"] == "log" and again.parameters()["mask_first_token"] is True
    assert again.grid.selected == (1, 2) and "L1H2" in again.head_info.text()
    shown = again.main_view.matrix
    assert np.isnan(shown[:, 0]).all()  # masked first column, as left
    expected = np.log10(again.result.pattern[-1, 1])
    np.testing.assert_allclose(shown[-1, 1], expected, atol=1e-6)  # log scale, as left
    assert reopened.panel_for("qk-ov").tabs.currentIndex() == 2
