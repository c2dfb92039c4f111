"""Help that teaches (issue 18): a tour of the five core panels and the bundled docs, offline."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from tests.gui.helpers import wait_for_task  # noqa: E402
from workbench.gui.tasks import TaskState  # noqa: E402


def test_help_offers_the_tour_and_the_documentation(window):
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    texts = [a.text() for a in help_menu.actions() if a.text()]
    assert texts[:2] == ["&Tour of the five core panels…", "&Documentation"] and "&About" in texts


def test_the_tour_walks_the_five_panels_and_shows_each(qtbot, model_window):
    from workbench.gui.help import TOUR, TOUR_PROMPT

    tour = model_window.show_tour()
    assert [step.plugin_id for step in TOUR] == ["attention", "causal-trace", "rome", "induction", "qk-ov"]
    seen = []
    for index in range(len(TOUR)):
        tour.go(index)
        seen.append(tour.heading.text())
        assert "How to read it." in tour.body.toPlainText()  # the panel's own how-to-read text
    assert len(set(seen)) == 5 and not tour.next.isEnabled()
    tour.go(1)  # causal tracing: the subject is filled in and it runs on the tour's prompt
    panel = tour.perform()
    assert model_window.prompts() == [TOUR_PROMPT] and panel.parameters()["subject"] == "The Eiffel Tower"
    task = wait_for_task(qtbot, panel.task, timeout=120_000)
    assert task.state in (TaskState.DONE, TaskState.FAILED)  # the lab model may not know the Eiffel Tower; it ran
    tour.close()


def test_the_documentation_opens_offline_with_the_readme_and_the_plugin_guide(window):
    docs = window.show_documentation()
    assert docs.tabs.count() == 2
    readme = docs.tabs.widget(0).toPlainText()
    guide = docs.tabs.widget(1).toPlainText()
    assert "Interpretability" in readme or "workbench" in readme.lower()
    assert "Writing workbench plugins" in guide and "Queries (drill-downs)" in guide
    docs.close()


def test_a_session_started_with_a_panel_and_run_shows_its_result(qtbot, window):
    """What `make run` opens on a desktop: the model, the prompt, a panel, run once loaded."""
    from tests.gui.helpers import LAB_MODEL, LAB_PROMPT
    from workbench.gui.app import _start_session

    _start_session(window, LAB_MODEL, LAB_PROMPT, "logit-lens", None, run=True, panel_params=["top_k=2"])
    panel = window.panel_for("logit-lens")
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        pass
    assert shown.args[0].meta.prompts == [LAB_PROMPT] and shown.args[0].top_probs.shape[-1] == 2
