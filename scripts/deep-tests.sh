#!/usr/bin/env bash
# Runs the property tests (hypothesis, marker `property`) under the `deep` profile, which gives every
# test 5x the examples it runs by default (in CI too), once for each of N fresh random seeds; prints
# each seed's result and exits non-zero if any seed failed. Replay a failing seed with
#   HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest -m property --hypothesis-seed=SEED
# and keep the falsifying example pytest prints as an @example of its test.
#
# Usage: bash scripts/deep-tests.sh [N] [extra pytest arguments]
#   N defaults to 10; PYTHON (default .venv/bin/python) and LOGS (default /tmp) may be set. On a GPU machine, `-m "property and gpu"` runs only the GPU property tests.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
LOGS=${LOGS:-/tmp}  # one log per seed: $LOGS/deep-tests-SEED.log
SEEDS=${1:-10}
shift $(( $# > 0 ? 1 : 0 ))
if ! [[ $SEEDS =~ ^[1-9][0-9]*$ ]]; then
  echo "deep-tests.sh: N must be a positive integer, got '$SEEDS'" >&2
  exit 2
fi
MARKER=(-m property)
for arg in "$@"; do [[ $arg == -m* ]] && MARKER=(); done  # a marker of the caller's replaces ours

failed=()
for ((i = 1; i <= SEEDS; i++)); do
  seed=$("$PYTHON" -c 'import random; print(random.SystemRandom().randrange(2**32))')
  start=$SECONDS
  if HYPOTHESIS_PROFILE=deep "$PYTHON" -m pytest -q -p no:cacheprovider "${MARKER[@]}" \
      --hypothesis-seed="$seed" "$@" >"$LOGS/deep-tests-$seed.log" 2>&1; then
    echo "seed $seed: passed ($((SECONDS - start)) s; $(tail -n 1 "$LOGS/deep-tests-$seed.log"))"
  else
    echo "seed $seed: FAILED ($((SECONDS - start)) s), log $LOGS/deep-tests-$seed.log:"
    grep -E "^(FAILED|ERROR)" "$LOGS/deep-tests-$seed.log" | sed 's/^/  /'
    failed+=("$seed")
  fi
done
if ((${#failed[@]})); then
  echo "${#failed[@]} of $SEEDS seeds failed: ${failed[*]}"
  exit 1
fi
echo "all $SEEDS seeds passed"
