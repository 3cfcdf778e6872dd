"""One hook check (:func:`bae_lens.hidden_states.check_hooks`, and the pre-flight's, in the
same words) and one thread policy (:func:`bae_lens.runtime.set_threads`)."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens.baselines import cache_activations
from bae_lens.cli.preflight import check_hooks as preflight_check_hooks
from bae_lens.hidden_states import HOOK_EXAMPLES, check_hooks, layer_hooks
from bae_lens.models import hook_shapes
from bae_lens.runtime import set_threads

CFG = HookedTransformerConfig(
    n_layers=2, d_model=8, d_mlp=16, n_ctx=8, d_head=4, d_vocab=20, act_fn="gelu"
)


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return HookedTransformer(CFG)


def test_one_message_for_a_missing_hook(model: HookedTransformer, tmp_path: object) -> None:
    expected = (
        f"hook_name='blocks.1.hook_resid' is not a hook of the model; {HOOK_EXAMPLES} (N < 2)"
    )
    with pytest.raises(ValueError) as err:
        check_hooks(model, ["blocks.0.hook_resid_post", "blocks.1.hook_resid"])
    assert str(err.value) == expected
    with pytest.raises(ValueError) as err:  # a caller that used to word it its own way
        cache_activations(model, [], ["blocks.1.hook_resid"], f"{tmp_path}/cache", n_tokens=8)
    assert str(err.value) == expected
    with pytest.raises(ValueError, match=r"kind='resid': hook_name='blocks.0.hook_resid' is not"):
        layer_hooks(model, [0], kind="resid")
    with pytest.raises(ValueError, match=f"--hook blocks.1.hook_resid: not a hook of the model; "
                       f"{HOOK_EXAMPLES}"):  # fmt: skip
        preflight_check_hooks("--hook", ["blocks.1.hook_resid"], hook_shapes(CFG))


def test_threads_default_is_one_on_small_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    set_threads(None)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    set_threads(None)  # torch's own choice stands
    set_threads(3)
    assert calls == [1, 3]
    with pytest.raises(ValueError, match="threads=0: must be >= 1"):
        set_threads(0)
