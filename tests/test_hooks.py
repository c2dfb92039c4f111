import pytest

from workbench.errors import HookError
from workbench.hooks import PRESETS, HookCatalog


@pytest.fixture(scope="module")
def catalog(lab_model):
    return HookCatalog(lab_model.bridge)


def names(specs):
    return [s.name for s in specs]


def test_presets_expand_per_layer(catalog, lab_model):
    n = lab_model.n_layers
    assert names(catalog.resolve("attention")) == [f"blocks.{layer}.attn.hook_pattern" for layer in range(n)]
    residual = names(catalog.resolve("residual stream"))
    assert residual == ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n)]
    assert names(catalog.resolve("MLP outputs")) == [f"blocks.{layer}.hook_mlp_out" for layer in range(n)]
    for preset in PRESETS:
        assert catalog.resolve(preset), preset


def test_alias_and_canonical_names_are_one_hook(catalog):
    specs = catalog.resolve(["blocks.1.hook_resid_post", "blocks.1.hook_out"])
    assert len(specs) == 1
    assert specs[0].name == "blocks.1.hook_resid_post" and specs[0].canonical == "blocks.1.hook_out"


def test_globs_and_comma_lists(catalog):
    specs = catalog.resolve("blocks.*.hook_resid_post, blocks.0.attn.hook_pattern")
    assert names(specs) == ["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"] or set(
        names(specs)
    ) == {"blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"}
    assert [s.layer for s in specs] == sorted(s.layer for s in specs)


def test_position_axes(catalog):
    (pattern,) = catalog.resolve("blocks.0.attn.hook_pattern")
    (resid,) = catalog.resolve("blocks.0.hook_resid_post")
    assert pattern.pos_dims == (2, 3) and resid.pos_dims == (1,)


@pytest.mark.parametrize("bad, fragment", [("blocks.0.hook_resid_psot", "did you mean"), ("nonsense", "preset"), ("", "")])
def test_unknown_names_suggest_fixes(catalog, bad, fragment):
    with pytest.raises(HookError) as info:
        catalog.resolve(bad)
    assert fragment in (info.value.hint or "")
