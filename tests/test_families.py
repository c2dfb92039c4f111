"""Every built-in analysis on a tiny model of every family (issue 19), each cell checked by
workbench.doctor.families against an independent computation, and the README's table kept
equal to what the matrix finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.doctor.families import ANALYSES, family_matrix, matrix_markdown, readme_table
from workbench.models.zoo import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"

# What may be refused, and why: the reason must name it. Anything else must run and agree.
EXPECTED_REFUSALS = {("mixtral", "rome"): "mixture of 4 experts", ("mixtral", "rome-eval"): "mixture of 4 experts"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cells():
    return family_matrix()


def test_the_zoo_has_the_families_the_issue_names():
    assert len(FAMILIES) >= 12
    assert {"gpt2", "pythia", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "olmo2", "phi3", "mixtral"} <= set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_analysis_agrees_with_its_reference_or_is_refused_with_a_reason(cells, family):
    mine = {cell.analysis: cell for cell in cells if cell.family == family}
    assert list(mine) == list(ANALYSES)
    for analysis, cell in mine.items():
        expected = EXPECTED_REFUSALS.get((family, analysis))
        if expected is None:
            assert cell.status == "ok", f"{family} {analysis}: {cell.detail}"
        else:
            assert cell.status == "refused" and expected in cell.detail, f"{family} {analysis}: {cell.status} {cell.detail}"


def test_the_readme_table_is_what_the_matrix_finds(cells):
    table = readme_table(README.read_text(encoding="utf-8"))
    assert table is not None, "README.md has no family-matrix section"
    assert table == matrix_markdown(cells), "README's family table is stale: run `workbench doctor --families --readme README.md`"
