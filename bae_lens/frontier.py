"""The sparsity-fidelity frontier: every architecture at several sparsities, one activation
cache, one held-out set, compared at matched L0.

A sweep is a list of :class:`Point` (architecture, its sparsity setting, seed). Each point
trains with SAELens's ``SAETrainer`` on minibatches drawn from the float16 activation cache
(:mod:`bae_lens.activation_cache`; rows above 10x the minibatch's median norm dropped, the
norm estimate's batches trained on afterwards, as ``bae-lens train`` does) and is saved
in SAELens's format under ``<work>/points/<name>/``. Points trained and not yet evaluated
are spliced into the model together (:func:`bae_lens.evaluate.evaluate_saes` shares the
clean and zero-ablated passes), and each point's metrics go to
``<work>/points/<name>/metrics.json``. A killed sweep restarts where it stopped: a saved
point is not retrained, an evaluated one is not re-evaluated. ``random_bae`` points match
the mean firing rate of the BAE point with the same price, so they follow it.

Tables, matched-L0 interpolation and plots are in :mod:`bae_lens.frontier_report`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from bae_lens.activation_cache import ActivationCache
from bae_lens.baselines import NORMALIZE, RANDOM_CONTROL, baseline_config
from bae_lens.frontier_report import ARCHITECTURES, write_report
from bae_lens.main_job import MAIN_JOB_DEFAULTS
from bae_lens.stages import StageClock

logger = logging.getLogger(__name__)

SETTING_NAMES = {
    "bae": "l0_coefficient",
    RANDOM_CONTROL: "l0_coefficient",  # of the BAE point whose firing rate it matches
    "bae_temp1": "l0_coefficient",
    "bae_entropy": "price",
    "topk": "k",
    "batchtopk": "k",
    "jumprelu": "target_l0",
    "standard": "l1_coefficient",
}
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "bae": (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),  # 2.0: price 1.0 lands at L0 34, above 32
    "bae_temp1": (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),  # the recipe before, at temperature 1
    "bae_entropy": (0.02, 0.05, 0.1, 0.2),
    "topk": (16, 32, 64, 128, 256),
    "batchtopk": (16, 32, 64, 128),
    "jumprelu": (16, 32, 64, 128),
    "standard": (0.5, 1.0, 2.0, 5.0, 10.0),  # 0.5: coefficient 1 lands at L0 89, below 128
}
"""Sparsity settings per architecture; every BAE price also gets a random-code control."""
PREVIOUS_TEMPERATURE = 1.0
"""The estimator temperature of the recipe before 0.3 (``bae_temp1``, and the points of the
paper's objective, which were trained at it)."""
BAE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bae": ("l0_coefficient", {}),
    "bae_temp1": ("l0_coefficient", {"estimator_temperature": PREVIOUS_TEMPERATURE}),
    "bae_entropy": (
        "entropy_coefficient",
        {"l0_coefficient": 0.0, "estimator_temperature": PREVIOUS_TEMPERATURE},
    ),
}
"""BAE architecture -> (the option its setting sets, what it changes in the main job's
options)."""
METRICS = ("kl_spliced", "ce_loss_recovered", "explained_variance", "mse", "l0", "burst_l0",
           "entropy_bits", "n_dead", "n_dense")  # fmt: skip
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Point:
    architecture: str
    setting: float
    seed: int = 42

    @property
    def name(self) -> str:
        value = f"{self.setting:g}"
        return f"{self.architecture}_{SETTING_NAMES[self.architecture]}{value}_seed{self.seed}"


def default_points(
    grid: Mapping[str, Sequence[float]] | None = None,
    architectures: Iterable[str] = ARCHITECTURES,
    extra_seeds: Sequence[Point] = (
        Point("bae", 0.2, 43),
        Point("topk", 64, 43),
        Point("bae_temp1", 0.2, 43),
    ),
) -> list[Point]:
    """The sweep: every grid setting of the chosen architectures, a random-code control for
    every BAE price, and the extra-seed points that show the noise.

    Ordered so that a sweep stopped early has covered every architecture evenly: round r
    trains each architecture's r-th setting counted from the middle of its grid outwards;
    a random control comes right after its BAE; extra seeds come last."""
    grid = dict(DEFAULT_GRID if grid is None else grid)
    chosen = list(architectures)
    unknown = [a for a in chosen if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"architectures {unknown} are not among {list(ARCHITECTURES)}")
    ranked: list[tuple[int, int, Point]] = []
    for arch in chosen:
        if arch == RANDOM_CONTROL:
            continue
        for rank, value in enumerate(_middle_out(grid.get(arch, ()))):
            ranked.append((rank, 2 * ARCHITECTURES.index(arch), Point(arch, float(value))))
            if arch == "bae" and RANDOM_CONTROL in chosen:
                ranked.append(
                    (rank, 2 * ARCHITECTURES.index(arch) + 1, Point(RANDOM_CONTROL, float(value)))
                )
    if RANDOM_CONTROL in chosen and "bae" not in chosen:
        ranked += [
            (r, 1, Point(RANDOM_CONTROL, float(v)))
            for r, v in enumerate(_middle_out(grid.get("bae", ())))
        ]
    points = [p for *_, p in sorted(ranked, key=lambda t: (t[0], t[1]))]
    return points + [p for p in extra_seeds if p.architecture in chosen]


def _middle_out(values: Sequence[float]) -> list[float]:
    """[a, b, c, d, e] -> [c, b, d, a, e]."""
    ordered = sorted(values)
    mid = (len(ordered) - 1) // 2
    out = [ordered[mid]]
    for step in range(1, len(ordered)):
        for index in (mid - step, mid + step):
            if 0 <= index < len(ordered):
                out.append(ordered[index])
    return out


@dataclass
class FrontierSettings:
    """What every point of one sweep shares."""

    hook: str
    model_name: str
    expansion: int = 4
    training_tokens: int = 2_000_000
    batch_tokens: int = 1024
    lr: float = 1e-3
    context_size: int = 128
    device: str = "cpu"
    dtype: str = "float32"
    """Every point's SAE dtype and the model's (:data:`bae_lens.runtime.DTYPES`)."""
    n_batches_for_norm_estimate: int = 20


def point_config(point: Point, d_in: int, s: FrontierSettings, bae_rate: float | None) -> Any:
    """The SAELens training config of ``point``. A BAE (:data:`BAE_VARIANTS`): the main
    job's options, changed as its variant says, with its setting as the price per firing
    (``bae``, ``bae_temp1``) or per bit of entropy (``bae_entropy``, the paper's
    objective)."""
    d_sae = s.expansion * d_in
    if point.architecture in BAE_VARIANTS:
        from bae_lens.bae import BinaryAutoencoderTrainingConfig

        swept, changes = BAE_VARIANTS[point.architecture]
        options = dict(MAIN_JOB_DEFAULTS) | changes | {swept: point.setting}
        return BinaryAutoencoderTrainingConfig(
            d_in=d_in, d_sae=d_sae, device=s.device, dtype=s.dtype,
            normalize_activations=NORMALIZE, **options,
        )  # fmt: skip
    if point.architecture == RANDOM_CONTROL:
        if bae_rate is None:
            raise ValueError(f"{point.name}: train the BAE with price {point.setting:g} first")
        return baseline_config(
            RANDOM_CONTROL, d_in, d_sae, device=s.device, firing_rate=bae_rate, dtype=s.dtype
        )
    k = int(point.setting)
    return baseline_config(
        point.architecture, d_in, d_sae, k=k, l1_coefficient=point.setting, device=s.device,
        dtype=s.dtype,
    )  # fmt: skip


def train_point(
    point: Point, cache: ActivationCache, s: FrontierSettings, out: Path, bae_rate: float | None
) -> None:
    """Train ``point`` on the cache with SAELens's trainer and save it to ``out``."""
    train_config(point_config(point, cache.d_in, s, bae_rate), cache, s, out, point.seed)


def train_config(
    cfg: Any, cache: ActivationCache, s: FrontierSettings, out: Path, seed: int
) -> None:
    """Train the SAELens training config ``cfg`` on the cache (minibatch order and start
    seeded by ``seed``) with SAELens's trainer and save it to ``out``."""
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    from bae_lens.train import OutlierFilter, write_training_log

    torch.manual_seed(seed)
    sae = TrainingSAE.from_dict(cfg.to_dict())
    meta = sae.cfg.metadata
    meta.hook_name, meta.model_name = s.hook, s.model_name
    meta.context_size, meta.prepend_bos, meta.exclude_special_tokens = s.context_size, True, True
    replay = s.n_batches_for_norm_estimate if cfg.normalize_activations == NORMALIZE else 0
    provider = OutlierFilter(cache.batches(s.batch_tokens, seed), 10.0, replay_first=replay)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=s.training_tokens,
            train_batch_size_samples=s.batch_tokens,
            lr=s.lr,
            lr_end=s.lr / 10,  # SAELens runner's default; unused by the constant schedule
            device=s.device,
            logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=s.n_batches_for_norm_estimate,
        ),
        sae=sae,
        data_provider=provider,
    )
    trained = trainer.fit()
    tmp = out.with_name(out.name + ".tmp")
    trained.save_inference_model(str(tmp))
    write_training_log(trained, tmp)
    tmp.replace(out)  # a point folder exists only once it is complete


def mean_firing_rate(folder: Path) -> float | None:
    """Mean per-bit firing rate of a trained BAE point, from its evaluation or training log."""
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        return min(max(m["l0"] / m["n_features"], 1e-4), 0.5)
    log = folder / "training_log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    l0s = [r["l0"] for r in records[-5:] if "l0" in r]
    n_bits = json.loads((folder / "cfg.json").read_text())["d_sae"]
    return min(max(sum(l0s) / len(l0s) / n_bits, 1e-4), 0.5) if l0s else None


def stale_fields(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Training options on which a saved point's ``cfg.json`` and the config the sweep would
    train it with now disagree (e.g. after a default changed). Options the saved point does
    not record (added to the code since) are not compared; the weight-scale and device
    fields, which saving rewrites, are not either."""
    out = [
        f"{k}: saved {saved.get(k)!r}, now {expected.get(k)!r}"
        for k in ("architecture", "d_in", "d_sae", "k")
        if k in saved and k in expected and saved[k] != expected[k]
    ]

    def details(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
        return (cfg.get("metadata") or {}).get("training_architecture_details") or {}

    old, new = details(saved), details(expected)
    out += [f"{k}: saved {old[k]!r}, now {new[k]!r}" for k in old if k in new and old[k] != new[k]]
    return out


def check_point_is_current(point: Point, folder: Path, expected: Any) -> None:
    """Refuse to reuse a trained point whose options differ from the sweep's current ones."""
    saved = json.loads((folder / "cfg.json").read_text())
    differing = stale_fields(saved, expected.get_inference_sae_cfg_dict())
    if differing:
        raise ValueError(
            f"{folder} was trained with other options than {point.name} gets now "
            f"({'; '.join(differing)}). Move or delete that folder to retrain it, or give "
            "another --work-dir."
        )


def run_frontier(
    model: Any,
    cache: ActivationCache,
    eval_tokens: Int[Tensor, "n pos"],
    points: Sequence[Point],
    settings: FrontierSettings,
    work_dir: str | Path,
    *,
    eval_every: int = 4,
    eval_batch_size: int = 8,
    on_evaluated: Callable[[], object] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train what is missing, evaluate what is unevaluated (every ``eval_every`` trained
    points and at the end; ``on_evaluated`` is called after each evaluation, e.g. to
    rewrite the report); returns every evaluated point's metrics by name."""
    from sae_lens import SAE

    from bae_lens.evaluate import evaluate_saes

    folder = Path(work_dir) / "points"
    folder.mkdir(parents=True, exist_ok=True)
    clock = StageClock()

    def evaluate_pending() -> None:
        pending = [p for p in points if (folder / p.name / "cfg.json").is_file()
                   and not (folder / p.name / METRICS_FILE).is_file()]  # fmt: skip
        if not pending:
            return
        saes = {
            p.name: SAE.load_from_disk(
                folder / p.name, device=settings.device, dtype=settings.dtype
            )
            for p in pending
        }
        results = evaluate_saes(model, saes, eval_tokens, eval_batch_size, clock=clock)
        for p in pending:
            record = results[p.name].summary() | {
                "point": asdict(p),
                "eval_tokens": int(eval_tokens.numel()),
            }
            (folder / p.name / METRICS_FILE).write_text(json.dumps(record, indent=1))
        logger.info("evaluated %s", [p.name for p in pending])
        if on_evaluated is not None:
            on_evaluated()

    trained_now = 0
    for point in points:
        out = folder / point.name
        if (out / "cfg.json").is_file():
            if point.architecture != RANDOM_CONTROL:  # a control follows its (checked) BAE
                check_point_is_current(point, out, point_config(point, cache.d_in, settings, None))
            continue
        bae_rate = None
        if point.architecture == RANDOM_CONTROL:
            bae_rate = mean_firing_rate(folder / Point("bae", point.setting, point.seed).name)
        logger.info("training %s", point.name)
        started = time.time()
        with clock.stage(f"train {point.architecture}", settings.training_tokens):
            train_point(point, cache, settings, out, bae_rate)
        (out / "train_seconds.txt").write_text(f"{time.time() - started:.1f}\n")
        trained_now += 1
        if trained_now % eval_every == 0:
            evaluate_pending()
    evaluate_pending()
    logger.info(clock.summary_line())
    return collect_results(folder, points)


def collect_results(
    folder: Path, points: Sequence[Point] | None = None
) -> dict[str, dict[str, Any]]:
    """Metrics of the evaluated ``points`` (None: of every point under ``folder``, whichever
    process trained it)."""
    names = (
        [p.name for p in points]
        if points is not None
        else sorted(d.name for d in folder.iterdir() if d.is_dir())
    )
    out = {}
    for name in names:
        metrics = folder / name / METRICS_FILE
        if metrics.is_file():
            out[name] = json.loads(metrics.read_text())
    return out


def cache_folder(key: Any, root: str | Path | None = None) -> Path:
    """Default home of a cache: ``$BAE_LENS_CACHE/activations/<readable key>``."""
    import os

    base = Path(root or os.environ.get("BAE_LENS_CACHE") or Path.home() / ".cache" / "bae_lens")
    dataset = Path(key.dataset).name or key.dataset
    name = f"{key.model}_{key.hook}_{dataset}_{key.split}_ctx{key.context_size}_{key.n_rows}rows_seed{key.seed}"
    return base / "activations" / name.replace("/", "-")


def frontier_job(
    *,
    model_name: str | None,
    hook: str,
    dataset: str = "embedded",
    points: Sequence[Point],
    settings: FrontierSettings,
    eval_tokens: int = 65_536,
    work_dir: str | Path = "runs/frontier",
    output: str | Path = "benchmarks/results/frontier",
    cache_dir: str | Path | None = None,
    seed: int = 0,
    eval_every: int = 4,
    eval_split: str = "auto",
) -> dict[str, Any]:
    """Load the model and data, build or reuse the activation cache, run the sweep, and
    rewrite the report (every evaluated point of ``work_dir``, whichever sweep trained it)
    after each evaluation; returns the report's payload."""
    from bae_lens import models
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import build_eval_tokens
    from bae_lens.runtime import DTYPES, environment

    started = time.time()
    name = model_name or models.EMBEDDED_MODEL_NAME
    model = models.load_model(name, device=settings.device, dtype=DTYPES[settings.dtype])
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {name!r} has no tokenizer: cannot tokenize text")
    cache = _corpus_cache(model, name, hook, dataset, settings, cache_dir, seed, eval_split)
    n_eval = math.ceil(eval_tokens / settings.context_size)
    texts = load_data(dataset, "eval", eval_split=eval_split, tokens=eval_tokens)["text"]
    held_out = build_eval_tokens(
        tokenizer, texts, settings.context_size, n_eval, tokenizer.bos_token_id
    )
    extra: dict[str, Any] = {
        "settings": asdict(settings),
        "cache": {"path": str(cache.path), "key": asdict(cache.key)},
        "epochs_per_point": round(settings.training_tokens / cache.n_rows, 3),
        "eval_tokens": list(held_out.shape),
        "points_planned_by_this_run": [p.name for p in points],
        "environment": environment(),
    }
    title = f"{name} {hook}, {settings.training_tokens:,} training tokens"

    def report() -> dict[str, dict[str, Any]]:
        results = collect_results(Path(work_dir) / "points")  # also parallel sweeps' points
        extra["wall_seconds_this_run"] = round(time.time() - started, 1)
        write_report(results, Path(output), extra, title)
        return results

    run_frontier(model, cache, held_out, points, settings, work_dir, eval_every=eval_every,
                 eval_batch_size=min(8, len(held_out)), on_evaluated=report)  # fmt: skip
    return extra | {"results": report()}


def _corpus_cache(
    model: Any,
    model_name: str,
    hook: str,
    dataset: str,
    settings: FrontierSettings,
    cache_dir: str | Path | None,
    seed: int,
    eval_split: str = "auto",
) -> ActivationCache:
    """The activation cache of ``settings.training_tokens`` tokens of ``dataset``'s train
    split (all of it when it holds fewer: points then train more than one epoch)."""
    from bae_lens.activation_cache import CacheKey, build_cache, sequences_needed
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import build_eval_tokens

    tokenizer = model.tokenizer
    train = load_data(dataset, "train", eval_split=eval_split, tokens=settings.training_tokens)
    texts = train.shuffle(seed=seed)["text"]
    n_seq = sequences_needed(settings.training_tokens, settings.context_size)
    tokens = build_eval_tokens(
        tokenizer, texts, settings.context_size, n_seq, tokenizer.bos_token_id
    )
    n_rows = min(settings.training_tokens, tokens.shape[0] * (settings.context_size - 1))
    if n_rows < settings.training_tokens:
        logger.warning(
            "the %s train split holds %d tokens (BOS excluded), fewer than the %d training "
            "tokens: caching all of it, %.2f epochs per point",
            dataset, n_rows, settings.training_tokens, settings.training_tokens / n_rows,
        )  # fmt: skip
    key = CacheKey(model_name, hook, dataset, "train", settings.context_size, n_rows, seed)
    return build_cache(model, tokens, key, Path(cache_dir) if cache_dir else cache_folder(key))
