"""The logit lens panel (issue 18, item 6): each cell shows its decoded top token, the hover
text the top tokens, and a click opens that position's table."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from workbench.figures.tokens import visible_token  # noqa: E402


def test_cells_hover_and_a_click_show_the_decoded_tokens(qtbot, lab_window):
    panel = lab_window.open_panel("logit-lens")
    panel.set_parameters({"top_k": 3})
    with qtbot.waitSignal(panel.result_changed, timeout=60_000) as shown:
        panel.run()
    result = shown.args[0]
    n_layers, n = len(result.layer_names), len(result.str_tokens)
    texts = [item.textItem.toPlainText() for item in panel.heatmap._cell_items]
    assert len(texts) == n_layers * n
    assert texts[0] == visible_token(result.top_strings[0][0], 8)
    assert texts[-1] == visible_token(result.top_strings[-1][-1], 8)
    # The hover text: the layer, the position, the top tokens with their probabilities.
    hover = panel.heatmap.describe_cell(1, 2)
    assert result.layer_names[1] in hover and visible_token(result.top_k_strings[1][2][1]) in hover
    # The table follows a click on a column (the last position first).
    assert panel.table.rowCount() == n_layers and panel.table.item(0, 1).text().startswith(visible_token(result.top_k_strings[0][-1][0]))
    panel.heatmap.cell_clicked.emit(0, 2)
    assert panel.position == 2 and f"Position 2 {visible_token(result.str_tokens[2])}" in panel.table_title.text()
    assert panel.table.item(n_layers - 1, 3).text().startswith(visible_token(result.top_k_strings[-1][2][2]))
    # The report has every position's top-1 tokens, not only the last position's.
    tables = result.report().tables
    assert len(tables) == 2 and tables[1].rows[0][1:] == [visible_token(t) for t in result.top_strings[0]]
    assert panel.view_state() == {"position": 2}


def test_report_tables_show_a_token_s_leading_space():
    # In HTML a leading space is invisible: " Paris" and "Paris" read the same unless marked.
    import numpy as np

    from workbench_logit_lens.result import LogitLensResult

    result = LogitLensResult(
        layer_names=["embed", "L0"], tokens=[1, 2], str_tokens=["The", " city"], final_top_tokens=[" of", " Paris"],
        p_final_top=np.zeros((2, 2)), top_ids=np.zeros((2, 2, 1), dtype=int), top_probs=np.zeros((2, 2, 1)),
        top_strings=[[" a", "Paris"], [" of", " Paris"]],
    )
    last, every = result.report().tables
    assert [row[1] for row in last.rows] == ["Paris", "␣Paris"]
    assert every.columns == ["layer", "0 The", "1 ␣city"] and every.rows[1] == ["L0", "␣of", "␣Paris"]
