"""Bad input, as an adversarial user gives it: every case answers with exit status 2, one
`error:` line that says what is true, no traceback, and leaves any file it names byte for
byte as it was. Outputs are checked before the model loads, so no case computes anything."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from workbench.cli.main import main

LAB = ["--model", "lab:induction"]
PROMPT = "t1 t2 t3 t4 t1 t2 t3"


@pytest.fixture
def files(tmp_path):
    """The files a case can point at: a folder, a plain file, a foreign HDF5 file, text that
    is not UTF-8, a healthy store."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "site.html").mkdir()
    (tmp_path / "plain.txt").write_text("not a store\n")
    with h5py.File(tmp_path / "foreign.h5", "w") as handle:
        handle["x"] = np.arange(3)
    (tmp_path / "latin1.txt").write_bytes("t1 t2\ncaf\xe9 t3\n".encode("latin-1"))
    (tmp_path / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    specs = tmp_path / "specs"
    specs.mkdir()
    analysis = '[model]\nspec = "lab:induction"\n\n[[analysis]]\nplugin = "logit-lens"\n'
    (specs / "store-outside.toml").write_text('prompts = ["t1 t2"]\nstore = "../../escaped.h5"\n' + analysis)
    (specs / "prompts-outside.toml").write_text('[prompts]\nfile = "../plain.txt"\n\n' + analysis)
    (specs / "file-outside.toml").write_text(
        '[model]\nspec = "lab:induction"\n\n[[analysis]]\nplugin = "rome-eval"\nfiles = { dataset = "/etc/hostname" }\n'
    )
    (specs / "latin1-prompts.toml").write_text('[prompts]\nfile = "latin1.txt"\n\n' + analysis)
    shutil.copy(tmp_path / "latin1.txt", specs / "latin1.txt")
    return tmp_path


def counterfact(tmp_path: Path, change) -> str:
    records = json.loads((REPO / "tests/data/counterfact_lab.json").read_text())
    change(records[0])
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(records))
    return str(path)


def pickled_model_folder(tmp_path: Path) -> str:
    """A model folder whose weights are a pickle that runs code when loaded."""
    folder = tmp_path / "pickled-model"
    shutil.copytree(REPO / "assets/lab/induction", folder)
    (folder / "model.safetensors").unlink()

    class RunsCode:
        def __reduce__(self):
            return (print, ("this pickle ran code",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": RunsCode()}))
    return str(folder)


CASES = [
    # where results go: checked before the model loads
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", "{tmp}/folder"], "is a folder, not a file"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", "{tmp}/foreign.h5"], "not a workbench activation store"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", "{tmp}/plain.txt"], "is not an HDF5 file"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", "{tmp}/truncated.h5"], "damaged or truncated"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", "{tmp}/plain.txt/result.h5"], "cannot be created"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--json", "{tmp}/folder"], "is a folder, not a file"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--json", "{tmp}/plain.txt/out.json"], "cannot be created"),
    (["cache", *LAB, "--prompt", PROMPT, "--hooks", "residual", "--out", "{tmp}/folder"], "is a folder, not a file"),
    (["cache", *LAB, "--prompt", PROMPT, "--hooks", "residual", "--out", "{tmp}/foreign.h5"], "not a workbench activation store"),
    (["cache", *LAB, "--prompt", PROMPT, "--hooks", "residual", "--out", "{tmp}/plain.txt"], "is not an HDF5 file"),
    (["cache", *LAB, "--prompt", PROMPT, "--hooks", "residual", "--out", "{tmp}/plain.txt/acts.h5"], "cannot be created"),
    (["report", str(REPO / "examples/report.toml"), "--out", "{tmp}/site.html"], "--out {tmp}/site.html is a folder"),
    (["report", str(REPO / "examples/report.toml"), "--out", "{tmp}/r.html", "--pdf", "{tmp}/plain.txt/r.pdf"], "cannot be created"),
    (["report", str(REPO / "examples/report.toml"), "--out", "{tmp}/r.html", "--store", "{tmp}/foreign.h5"], "not a workbench activation store"),
    (["doctor", "--json", "{tmp}/folder"], "is a folder, not a file"),
    # paths in a report spec stay in its folder
    (["report", "{tmp}/specs/store-outside.toml", "--out", "{tmp}/r.html"], "store '../../escaped.h5' points outside the spec's folder"),
    (["report", "{tmp}/specs/prompts-outside.toml", "--out", "{tmp}/r.html"], "'../plain.txt' points outside the spec's folder"),
    (["report", "{tmp}/specs/file-outside.toml", "--out", "{tmp}/r.html"], "'/etc/hostname' points outside the spec's folder"),
    (["report", "{tmp}/specs/latin1-prompts.toml", "--out", "{tmp}/r.html"], "is not UTF-8 text"),
    # what is read
    (["cache", *LAB, "--prompts-file", "{tmp}/latin1.txt", "--hooks", "residual", "--out", "{tmp}/new.h5"], "is not UTF-8 text (byte 10, line 2)"),
    (["cache", *LAB, "--prompts-file", "{tmp}/folder", "--hooks", "residual", "--out", "{tmp}/new.h5"], "Prompts file not found"),
    (["inspect", "{tmp}/truncated.h5"], "damaged or truncated"),
    (["inspect", "{tmp}/plain.txt"], "is not an HDF5 file"),
    (["inspect", "{tmp}/folder"], "is a folder"),
    # numbers and names
    (["predict", *LAB, "--prompt", PROMPT, "-k", "-5"], "-k -5 asks for no predictions"),
    (["predict", *LAB, "--prompt", PROMPT, "-k", "0"], "-k 0 asks for no predictions"),
    (["hooks", "--pattern", "blocks.0.*"], "no --model was given"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--param", "top_k=3", "--param", "top_k=5"], "top_k is given twice"),
    (["run", "logit-lens", *LAB, "--prompt", PROMPT, "--param", "=3"], "is not NAME=VALUE"),
    (["new-plugin", "attention", "--dir", "{tmp}/plugins"], "is a built-in plugin's id"),
    (["new-plugin", "my-probe", "--dir", "{tmp}/plain.txt"], "is a file, not a folder"),
    (["new-plugin", "Bad_Name", "--dir", "{tmp}/plugins"], "is not valid"),
    (["predict", "--model", "lab:../../workbench", "--prompt", PROMPT], "Unknown lab model"),
    (["predict", "--model", "lab:", "--prompt", PROMPT], "Unknown lab model"),
    (["predict", "--model", "{tmp}/folder", "--prompt", PROMPT], "holds no config.json"),
    # CounterFact files: the record and the field
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:paraphrase_string}", "--param", "layer=0"], "paraphrase_prompts is a str, not a list of strings"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:target_string}", "--param", "layer=0"], "requested_rewrite.target_new is a str, not an object"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:no_subject}", "--param", "layer=0"], "requested_rewrite.subject is missing"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:prompt_number}", "--param", "layer=0"], "requested_rewrite.prompt is an int"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:neighbour_number}", "--param", "layer=0"], "neighborhood_prompts[1] is an int"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:not_object}", "--param", "layer=0"], "is a list, not a JSON object"),
    (["run", "rome-eval", *LAB, "--param", "dataset={cf:no_braces}", "--param", "layer=0"], "has no {} where the subject goes"),
    (["run", "rome-eval", *LAB, "--param", "dataset={tmp}/latin1.txt", "--param", "layer=0"], "is not valid JSON"),
]

CHANGES = {
    "paraphrase_string": lambda r: r.__setitem__("paraphrase_prompts", "t1 t2 t3"),
    "target_string": lambda r: r["requested_rewrite"].__setitem__("target_new", "t9"),
    "no_subject": lambda r: r["requested_rewrite"].pop("subject"),
    "prompt_number": lambda r: r["requested_rewrite"].__setitem__("prompt", 7),
    "neighbour_number": lambda r: r.__setitem__("neighborhood_prompts", ["t1 t2", 5]),
    "no_braces": lambda r: r["requested_rewrite"].__setitem__("prompt", "t1 t2 t3"),
}


def fill(arg: str, tmp_path: Path) -> str:
    arg = arg.replace("{tmp}", str(tmp_path))
    if arg.startswith("dataset={cf:"):
        key = arg[len("dataset={cf:") : -1]
        if key == "not_object":
            records = json.loads((REPO / "tests/data/counterfact_lab.json").read_text())
            records[0] = ["a list"]
            path = tmp_path / "cases.json"
            path.write_text(json.dumps(records))
            return f"dataset={path}"
        return "dataset=" + counterfact(tmp_path, CHANGES[key])
    return arg


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_one_line_error(capsys, code: int, message: str) -> None:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], captured.err
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("args, message", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_touches_nothing(files, capsys, monkeypatch, args, message):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(files / "cache"))
    argv = [fill(arg, files) for arg in args]
    before = snapshot(files)
    code = main(argv)
    check_one_line_error(capsys, code, message.replace("{tmp}", str(files)))
    after = snapshot(files)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed changed
    new = set(after) - set(before)
    assert not {n for n in new if not n.startswith(("cache/", "cases.json"))}, new  # and nothing was written


def test_a_pickled_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    code = main(["predict", "--model", pickled_model_folder(tmp_path), "--prompt", PROMPT])
    check_one_line_error(capsys, code, "refused as unsafe")
    assert "this pickle ran code" not in capsys.readouterr().out


def _immutable(path: Path) -> bool:
    """chattr +i: the one way to make a file unwritable for root too (not on every file system)."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def immutable_store(tmp_path):
    store = tmp_path / "kept.h5"
    assert main(["cache", *LAB, "--prompt", PROMPT, "--hooks", "residual", "--out", str(store), "--quiet"]) == 0
    if not _immutable(store):
        pytest.skip("chattr +i is not available here")
    yield store
    subprocess.run(["chattr", "-i", str(store)])


def test_an_unwritable_store_is_called_unwritable_not_damaged(immutable_store, capsys):
    capsys.readouterr()
    before = immutable_store.read_bytes()
    code = main(["run", "logit-lens", *LAB, "--prompt", PROMPT, "--out", str(immutable_store)])
    check_one_line_error(capsys, code, "cannot be written")
    assert immutable_store.read_bytes() == before
    assert main(["inspect", str(immutable_store)]) == 0  # still readable: nothing suggests abandoning it


def test_a_result_whose_target_fails_after_the_work_is_saved_under_the_cache_folder(tmp_path, monkeypatch, lab_model):
    from workbench.outputs import write_or_rescue
    from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
    from workbench.progress import run_to_completion
    from workbench.results import list_results, save_result
    from workbench.store.layout import open_store_file

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    plugin = discover_plugins().get("logit-lens")
    result = run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [PROMPT]), {}))
    # The folder the user named was checked, then replaced by a file while the work ran.
    (tmp_path / "gone").write_text("not a folder any more")
    where, result_id, problem = write_or_rescue(lambda path: save_result(path, result), tmp_path / "gone" / "result.h5", "--out")
    assert where.parent == tmp_path / "cache" / "unsaved" and where.name.endswith("-result.h5")
    assert f"saved to {where}" in problem and "--out" in problem
    with open_store_file(where, "r") as handle:
        assert [info.id for info in list_results(handle)] == [result_id]


def test_outside_paths_are_read_when_the_user_allows_them(files):
    from workbench.report import load_spec

    spec = load_spec(files / "specs" / "prompts-outside.toml", allow_outside=True)
    assert spec.prompts == ["not a store"]
    spec = load_spec(files / "specs" / "store-outside.toml", allow_outside=True)
    assert spec.store.resolve() == (files.parent / "escaped.h5").resolve()
