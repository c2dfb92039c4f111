import pytest

from workbench.errors import ModelLoadError
from workbench.models.specs import parse_spec


def test_embedded_names():
    assert parse_spec("smollm2").kind == "embedded"
    assert parse_spec("SmolLM2").kind == "embedded"


def test_lab_model_resolves_to_assets_folder():
    source = parse_spec("lab:induction")
    assert source.kind == "lab"
    assert source.location.endswith("assets/lab/induction")


def test_unknown_lab_model_lists_the_known_ones():
    with pytest.raises(ModelLoadError) as info:
        parse_spec("lab:nope")
    assert "lab:induction" in info.value.hint


def test_hub_ids():
    assert parse_spec("gpt2").kind == "hub"
    assert parse_spec("EleutherAI/pythia-70m").location == "EleutherAI/pythia-70m"


def test_local_folder_and_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert parse_spec(str(tmp_path)).kind == "folder"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert parse_spec(str(gguf)).kind == "gguf"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "No model given"),
        ("./missing-folder", "Unknown model"),
        ("/no/such/model.gguf", "GGUF file not found"),
        ("not a model!", "Unknown model"),
    ],
)
def test_bad_specs_name_the_problem(spec, fragment):
    with pytest.raises(ModelLoadError) as info:
        parse_spec(spec)
    assert fragment in info.value.message


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        parse_spec(str(tmp_path))
    assert "config.json" in info.value.message
