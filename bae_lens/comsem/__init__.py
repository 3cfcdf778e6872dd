"""ComSem: common-semantics interpretation and scoring of features (BAE_METHOD.md section 5).

- :mod:`bae_lens.comsem.collect`: per-feature samples from a corpus (burst / activation /
  z-score salience, top-k features per token), streamed batch by batch;
- :mod:`bae_lens.comsem.judge`: any OpenAI-compatible endpoint, concurrent, retrying,
  with a resumable on-disk answer cache;
- :mod:`bae_lens.comsem.score`: bae_lens's prompts, interpretation, Yes/No test and the
  specificity control; per-dictionary summary and table;
- :mod:`bae_lens.comsem.server`: the offline judge (llama.cpp on loopback);
- :mod:`bae_lens.comsem.calibrate`: is a judge usable? ground-truth token-class features vs
  random ones, AUROC of (score - FPR), verdicts kept per judge model;
- :mod:`bae_lens.comsem.detect`: the LLM-free detection score (naive Bayes, held-out AUROC);
- :mod:`bae_lens.cli.comsem`: ``bae-lens comsem``.
"""

from bae_lens.comsem.collect import Collection, Sample, collect, collect_many
from bae_lens.comsem.judge import Answer, Judge, JudgeConfig
from bae_lens.comsem.score import (
    ComSemSettings,
    FeatureResult,
    judge_collection,
    markdown_table,
    summarise,
)
from bae_lens.comsem.server import LocalJudgeServer, llama_cpp_available

__all__ = [
    "Answer",
    "Collection",
    "ComSemSettings",
    "FeatureResult",
    "Judge",
    "JudgeConfig",
    "LocalJudgeServer",
    "Sample",
    "collect",
    "collect_many",
    "judge_collection",
    "llama_cpp_available",
    "markdown_table",
    "summarise",
]
