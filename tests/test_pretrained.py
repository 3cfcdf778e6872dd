"""SAELens pretrained SAEs (``release/sae_id``) beside folders, without the hub: SAELens's
pretrained directory gains a stand-in release whose files ``hf_hub_download`` serves from
a folder saved under tmp_path, so ``SAE.from_pretrained`` runs its own loading code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.loading import pretrained_sae_loaders, pretrained_saes_directory
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup
from sae_lens.saes import sae as sae_module

from bae_lens.io import load_sae_or_pretrained, pretrained_ref

RELEASE = "standin-res"
SAE_ID = "layer_0/width_64"  # an id with a "/", as Gemma Scope's
REF = f"{RELEASE}/{SAE_ID}"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SAE[Any]:
    """The SAE saved in the pretrained layout (``<repo>/<folder>/cfg.json`` + weights)."""
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64))
    with torch.no_grad():
        sae.b_enc.normal_()
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    repo = tmp_path / "repo"
    sae.save_model(repo / "layer_0" / "width_64")
    lookup = PretrainedSAELookup(
        release=RELEASE, repo_id="standin/repo", model="tiny", conversion_func=None,
        saes_map={SAE_ID: "layer_0/width_64"}, expected_var_explained={}, expected_l0={},
        neuronpedia_id={}, norm_scaling_factor={}, config_overrides=None,
    )  # fmt: skip

    def directory() -> dict[str, PretrainedSAELookup]:
        return {RELEASE: lookup}

    def download(repo_id: str, filename: str, **kwargs: Any) -> str:
        assert repo_id == "standin/repo"
        path = repo / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(pretrained_saes_directory, "get_pretrained_saes_directory", directory)
    monkeypatch.setattr(sae_module, "get_pretrained_saes_directory", directory)
    monkeypatch.setattr(pretrained_sae_loaders, "hf_hub_download", download)
    return sae


def test_pretrained_ref_is_loaded_through_sae_from_pretrained(standin: SAE[Any]) -> None:
    assert pretrained_ref(REF) == (RELEASE, SAE_ID)
    loaded = load_sae_or_pretrained(REF)
    assert isinstance(loaded, StandardSAE)
    for name, tensor in standin.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_folders_and_unknown_releases_are_not_refs(standin: SAE[Any], tmp_path: Path) -> None:
    folder = tmp_path / RELEASE / "x"  # a local path wins over a release of the same name
    standin.save_model(folder)
    assert pretrained_ref(str(folder)) is None and pretrained_ref("runs/bae") is None
    assert isinstance(load_sae_or_pretrained(str(folder)), StandardSAE)
    with pytest.raises(ValueError, match=r"release 'standin-res' has no SAE 'layer_9'; ids: "):
        pretrained_ref(f"{RELEASE}/layer_9")


def test_evaluate_takes_a_pretrained_sae_beside_a_folder(
    standin: SAE[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_config: Any
) -> None:
    from transformer_lens import HookedTransformer

    from bae_lens import evaluate, models

    folder = tmp_path / "mine"
    standin.save_model(folder)
    model = HookedTransformer(tiny_config).eval()
    monkeypatch.setattr(models, "load_model", lambda *a, **k: model)
    monkeypatch.setattr(evaluate, "load_eval_tokens", lambda *a, **k: torch.randint(0, 50, (4, 16)))
    results = evaluate.evaluate_folders([str(folder), REF], tmp_path / "out", batch_size=2)
    assert set(results) == {"mine", "standin-res__layer_0__width_64"}
    # the same weights, so the same metrics
    assert (
        results["mine"].summary()["mse"]
        == results["standin-res__layer_0__width_64"].summary()["mse"]
    )
    assert (tmp_path / "out" / "firing_rates_standin-res__layer_0__width_64.png").is_file()


def test_eval_preflight_passes_a_ref_and_names_a_bad_id(standin: SAE[Any]) -> None:
    from bae_lens.cli.preflight import check_sae_folders

    check_sae_folders("saes", [REF], pretrained=True)
    with pytest.raises(ValueError, match="saes standin-res/nope: .*has no SAE 'nope'"):
        check_sae_folders("saes", [f"{RELEASE}/nope"], pretrained=True)
    with pytest.raises(ValueError, match="not a usable saved dictionary"):
        check_sae_folders("--sae", [REF])  # where only folders are loadable


def test_compare_extra_saes_load_refs_and_folders(standin: SAE[Any], tmp_path: Path) -> None:
    from bae_lens.cli.compare import load_extra_saes

    folder = tmp_path / "mine"
    standin.save_model(folder)
    extra = load_extra_saes(f"{REF}, {folder}", "cpu")
    assert set(extra) == {"standin-res__layer_0__width_64", "mine"}
    with pytest.raises(ValueError, match="the name 'mine' is taken"):
        load_extra_saes(f"{folder},{folder}", "cpu")
