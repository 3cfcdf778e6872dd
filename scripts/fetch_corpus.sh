#!/usr/bin/env bash
# Fetch and prepare the embedded default corpus (public-domain novels shipped in
# Debian's R data packages) for bae_lens.
#
# Usage: bash scripts/fetch_corpus.sh [DEST]
#   DEST   where the .deb files are kept (default:
#          ${BAE_LENS_CACHE:-$HOME/.cache/bae_lens}/corpus/debs)
#
# The prepared train.jsonl / eval.jsonl / manifest.json go to
# ${BAE_LENS_CACHE:-$HOME/.cache/bae_lens}/corpus (read by
# bae_lens.corpus.load_embedded_corpus). Safe to re-run: packages already
# downloaded are reused. Set PYTHON to choose the interpreter (default: python
# on PATH). Needs apt-get (Debian/Ubuntu); elsewhere pass your own text files
# or a hub dataset to bae_lens.corpus.load_text_dataset instead.
set -euo pipefail

PACKAGES=(r-cran-janeaustenr r-cran-tokenizers r-cran-tidytext)
CACHE="${BAE_LENS_CACHE:-$HOME/.cache/bae_lens}"
DEST="${1:-$CACHE/corpus/debs}"
OUT="$CACHE/corpus"
PYTHON="${PYTHON:-python}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

have_deb() { compgen -G "$DEST/${1}_*.deb" >/dev/null; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    have_deb "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; cannot download ${missing[*]}." >&2
        echo "The embedded corpus needs Debian/Ubuntu packages. Either copy the .deb files" >&2
        echo "into $DEST, or train on your own data: pass a local .txt/.jsonl file or folder," >&2
        echo "or a Hugging Face hub dataset name, to bae_lens.corpus.load_text_dataset." >&2
        exit 1
    fi
    apt_opts=()
    # As root, apt drops to the _apt user, which cannot write into $HOME; stay root.
    [[ "$(id -u)" == 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)
    echo "downloading ${missing[*]} into $DEST"
    if ! (cd "$DEST" && apt-get "${apt_opts[@]}" download "${missing[@]}"); then
        echo "download failed; running apt-get update and retrying"
        if [[ "$(id -u)" == 0 ]]; then
            apt-get update
        else
            sudo apt-get update
        fi
        (cd "$DEST" && apt-get "${apt_opts[@]}" download "${missing[@]}")
    fi
else
    echo "packages already in $DEST"
fi

if command -v dpkg-deb >/dev/null 2>&1; then
    rm -rf "$DEST/extracted.tmp"
    mkdir -p "$DEST/extracted.tmp"
    for deb in "$DEST"/*.deb; do
        dpkg-deb -x "$deb" "$DEST/extracted.tmp"
    done
    rm -rf "$DEST/extracted"
    mv "$DEST/extracted.tmp" "$DEST/extracted"
else
    echo "dpkg-deb not found; the .deb files will be read in pure Python"
fi

export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m bae_lens.corpus_build prepare --debs "$DEST" --out "$OUT"
