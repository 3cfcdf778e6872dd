"""Exports: the static HTML dashboard (bae_lens.dashboard, `bae-lens dashboard`) and the hub
upload (bae_lens.hub, `bae-lens upload`) against a local stand-in for HfApi."""

from __future__ import annotations

import fnmatch
import html.parser
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig, load_sae
from bae_lens import hub as hub_module
from bae_lens.cli import main as cli_main
from bae_lens.dashboard import (
    Description,
    load_comsem_descriptions,
    pick_features,
    write_dashboard,
)
from bae_lens.feature_examples import mine_examples

D, D_SAE, HOOK = 8, 12, "blocks.0.hook_resid_post"
SECRET = "hf_test_token_never_printed"


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=D, n_ctx=16, d_head=4, n_heads=2, d_vocab=30, act_fn="gelu"
    )
    return HookedTransformer(cfg).eval()


def _bae() -> BinaryAutoencoder:
    torch.manual_seed(1)
    cfg = BinaryAutoencoderConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))
    sae = BinaryAutoencoder(cfg)
    sae.b_enc.data = torch.randn(D_SAE) * 0.5
    return sae


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.srcs: list[str] = []
        self.hits: list[str] = []
        self._in_hit = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if a.get("src"):
            self.srcs.append(a["src"] or "")
        self._in_hit = tag == "span" and "hit" in (a.get("class") or "")

    def handle_data(self, data: str) -> None:
        if self._in_hit:
            self.hits.append(data)
            self._in_hit = False


def test_dashboard_pages_are_self_contained_and_show_the_top_examples(
    tmp_path: Path, model: HookedTransformer
) -> None:
    tokens = torch.randint(1, 30, (6, 16), generator=torch.Generator().manual_seed(2))
    sae = _bae()
    ex = mine_examples(model, sae, tokens, view="margin", n_top=3, track=list(range(D_SAE)),
                       skip_token_ids=[], progress=False)  # fmt: skip
    features = pick_features(ex, 4, first=[5])
    assert features[0] == 5 and len(features) == 4
    index = write_dashboard(tmp_path / "d", ex, tokens, None, title="tiny <bae>",
                            features=features,
                            descriptions={5: Description("commas & <tags>", ex.firing_rates[5])})  # fmt: skip
    text = index.read_text()
    assert "tiny &lt;bae&gt;" in text and "commas &amp; &lt;tags&gt;" in text  # escaped
    parser = _Collect()
    parser.feed(text)
    assert sorted(parser.links) == sorted(f"feature_{j}.html" for j in features)
    for j in features:
        page = (tmp_path / "d" / f"feature_{j}.html").read_text()
        assert "http://" not in page and "https://" not in page and "<script" not in page
        p = _Collect()
        p.feed(page)
        assert not p.srcs
        top = ex.top.get(j, [])
        # the outlined token of each example row is the token at that example's position
        assert p.hits == [f"[{tokens[e.sequence, e.position].item()}]" for e in top]
        values = re.findall(r"<td class=val>([0-9.]+)</td><td class=ctx>", page)
        assert [float(v) for v in values] == pytest.approx([e.value for e in top], abs=1e-3)
        assert f"firing rate {ex.firing_rates[j]:.4f}" in page
    assert "class=warn" not in text + (tmp_path / "d" / "feature_5.html").read_text()
    # a description measured on a feature with another firing rate is flagged
    other = Description("dates", ex.firing_rates[5] + 0.3)
    write_dashboard(tmp_path / "e", ex, tokens, None, title="t", features=[5],
                    descriptions={5: other})  # fmt: skip
    assert (
        "1 of 1 ComSem descriptions were written for features whose firing rate differs"
        in (tmp_path / "e" / "index.html").read_text()
    )
    assert "here it fires on" in (tmp_path / "e" / "feature_5.html").read_text()


def test_comsem_descriptions_are_read_by_dictionary(tmp_path: Path) -> None:
    data = {"features": {
        "bae": [{"feature": 3, "description": "dates", "status": "ok", "firing_rate": 0.25},
                {"feature": 4, "description": "", "status": "failed"}],
        "standard": [{"feature": 1, "description": "x", "status": "ok"}],
    }}  # fmt: skip
    path = tmp_path / "comsem.json"
    path.write_text(json.dumps(data))
    assert load_comsem_descriptions(path, "bae") == {3: Description("dates", 0.25)}
    with pytest.raises(ValueError, match=r"holds dictionaries \['bae', 'standard'\]; name one"):
        load_comsem_descriptions(path)
    with pytest.raises(ValueError, match="no dictionary 'topk'"):
        load_comsem_descriptions(path, "topk")


# ---------------------------------------------------------------- upload
class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls, copies what upload_folder would
    send (its allow_patterns) into a local 'remote' folder."""

    remote: Path
    calls: list[tuple[str, dict[str, Any]]] = []
    fail_with: Exception | None = None

    def __init__(self, token: str | None = None, **kwargs: Any) -> None:
        self.token = token
        FakeHfApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if FakeHfApi.fail_with is not None:
            raise FakeHfApi.fail_with

    def upload_folder(self, *, folder_path: str, repo_id: str, path_in_repo: str,
                      allow_patterns: list[str], **kwargs: Any) -> Any:  # fmt: skip
        FakeHfApi.calls.append(("upload_folder", {"repo_id": repo_id, "path": path_in_repo}))
        target = FakeHfApi.remote / repo_id / path_in_repo
        target.mkdir(parents=True)
        for f in Path(folder_path).iterdir():
            if any(fnmatch.fnmatch(f.name, pat) for pat in allow_patterns):
                shutil.copy(f, target / f.name)

        class Info:
            commit_url = f"https://hub.example/{repo_id}/commit/1"

        return Info()


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    FakeHfApi.remote = tmp_path / "remote"
    FakeHfApi.calls = []
    FakeHfApi.fail_with = None
    monkeypatch.setattr(hub_module, "HfApi", FakeHfApi)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return FakeHfApi.remote


def test_upload_sends_the_run_files_to_the_hook_folder(
    tmp_path: Path, fake_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sae = _bae()
    sae.save_model(tmp_path / "bae")
    (tmp_path / "bae" / "notes.txt").write_text("private")
    (tmp_path / "bae" / "training_log.jsonl").write_text("{}\n")
    assert cli_main(["upload", str(tmp_path / "bae"), "--repo-id", "me/bae-smollm2"]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert ("init", {"token": SECRET}) in FakeHfApi.calls
    assert [c[0] for c in FakeHfApi.calls] == ["init", "create_repo", "upload_folder"]
    sent = fake_hub / "me" / "bae-smollm2" / HOOK
    assert sorted(p.name for p in sent.iterdir()) == [
        "cfg.json", "sae_weights.safetensors", "training_log.jsonl"
    ]  # fmt: skip
    assert f'SAE.from_pretrained(release="me/bae-smollm2", sae_id="{HOOK}")' in out
    loaded = load_sae(sent)
    x = torch.randn(5, D)
    assert torch.equal(loaded.encode(x), sae.encode(x))


@pytest.mark.parametrize(
    ("setup", "argv", "match"),
    [
        ("plain folder", ["upload", "{tmp}/plain", "--repo-id", "me/x"],
         "sae {tmp}/plain: not a usable saved dictionary"),
        ("no token", ["upload", "{tmp}/bae", "--repo-id", "me/x"],
         "no hub token: set $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN)"),
        ("bad repo id", ["upload", "{tmp}/bae", "--repo-id", "me/x/y"],
         "--repo-id me/x/y: give the hub repository as OWNER/NAME"),
        ("bad path", ["upload", "{tmp}/bae", "--repo-id", "me/x", "--path-in-repo", "../up"],
         "--path-in-repo ../up: not a relative folder path"),
        ("hub refuses", ["upload", "{tmp}/bae", "--repo-id", "me/x"],
         "--repo-id me/x: the hub refused the upload or could not be reached (OSError: 401 "
         "for <token>); the token came from $HF_TOKEN"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v and "/" not in v else None,
)  # fmt: skip
def test_upload_refuses_with_one_line(
    setup: str, argv: list[str], match: str, tmp_path: Path, fake_hub: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _bae().save_model(tmp_path / "bae")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "weights.bin").write_bytes(b"\0")
    if setup == "no token":
        monkeypatch.delenv("HF_TOKEN")
    if setup == "hub refuses":
        FakeHfApi.fail_with = OSError(f"401 for {SECRET}\nmore")
    code = cli_main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and SECRET not in err
    assert match.format(tmp=tmp_path) in err
    assert not (fake_hub / "me").exists()
    if setup != "hub refuses":
        assert not FakeHfApi.calls  # nothing reached the hub
