#!/usr/bin/env bash
# Every run behind the README's "Attacks" section, then its tables: `make claims` (~55 min on a
# 2-core CPU; each run resumes if interrupted, finished runs are skipped).
#   runs/demo            the demo experiment (assets/configs/demo.yaml: 3 transfers, 4 inversions, 7 pools)
#   runs-sweep/...       the controls: NGD (reference) at 33x the demo's lambda, NGD with the damped
#                        projection at two lambdas, the entropy loss at smaller lambdas (equal victim entropy), and the
#                        vanilla pool with as many reconstructions as a dual pool
set -euo pipefail
PY=${PY:-.venv/bin/python}
run() { "$PY" -m ddcs_core run --quiet "$@" >/dev/null; }

run --config assets/configs/demo.yaml --runs runs
run --config assets/configs/demo.yaml --runs runs-sweep --name vanilla-8 --set transfer.modes=[vanilla] \
    --set inversion.final_per_class=8 --only fid-pretrained,invert-pretrained,evaluate-vanilla
run --config assets/configs/demo.yaml --runs runs-sweep --name ngd-lam1 --set transfer.modes=[ngd] \
    --set transfer.lam=1.0 --only transfer-ngd,fid-ngd
damped() {
  run --config assets/configs/demo-damped.yaml --runs runs-sweep --name "damped-lam$1" --set transfer.lam="$1" \
      --only transfer-ngd,fid-ngd
}
damped 0.03
for lam in 0.003 0.01 0.02; do
  run --config assets/configs/demo.yaml --runs runs-sweep --name "entropy-lam$lam" --set transfer.modes=[entropy] \
      --set transfer.lam=$lam --only transfer-entropy,fid-entropy
done
damped 0.3

"$PY" -m ddcs_core reproduce --run runs/demo
"$PY" -m ddcs_core reproduce --run runs/demo runs-sweep/ngd-lam1 runs-sweep/damped-lam* runs-sweep/entropy-lam*
"$PY" -m ddcs_core reproduce --run runs-sweep/vanilla-8
