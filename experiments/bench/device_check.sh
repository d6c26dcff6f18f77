#!/usr/bin/env bash
# The GPU / TPU device check in one command: every case of `kernels.py --check` in its own
# process under a time limit (a case that hangs costs only itself and is reported as such),
# then the accelerator tests; one table at the end.
#
#   bash experiments/bench/device_check.sh           # on the device, from the checkout root
#   bash experiments/bench/device_check.sh --tiny    # here: interpret mode, tiny shapes
#
# Run it where the package is installed (`pip install -e .`; `pip install --no-deps -e .` on a
# machine whose image already holds jax, flax and the rest).
#
# CASE_TIMEOUT (seconds per case, default 60) and TEST_TIMEOUT (the accelerator tests, default
# 300) bound the run: at most 8 x 60 + 300 s = 13 min, about 6 min when every case finishes
# (~25 s each on an H200). Exit status 1 if a case failed its check or timed out, or a test
# failed. Cases (target shapes; see kernels.py's docstring for what each measures):
set -uo pipefail
export PYTHONUNBUFFERED=1
tiny=""
case "${1:-}" in
  "") ;;
  --tiny) tiny="--tiny" ;;
  *) echo "device_check.sh: unknown argument '$1'; use --tiny or nothing" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
case_timeout=${CASE_TIMEOUT:-60}
if [ -n "$tiny" ]; then
  cases=("--op attention" "--op xl_attention" "--op ntm")
else
  cases=(
    "--op attention --attention-shape 8,8,512,1536,64"
    "--op attention --attention-shape 8,8,512,1536,64 --dtype bfloat16"  # cuDNN at its dtype
    "--op xl_attention"
    "--op attention --attention-shape 2,1,256,1280,256"
    "--op attention --attention-shape 16,1,1024,5120,1024"
    "--op ntm --ntm-shape 32,128,20 --steps 16"
    "--op ntm --ntm-shape 32,128,20"
    "--op ntm --ntm-shape 32,1024,64 --steps 8"
  )
fi
log=$(mktemp -d)
status=0
for i in "${!cases[@]}"; do
  echo "[device_check] case $((i + 1))/${#cases[@]}: ${cases[$i]}" >&2
  # shellcheck disable=SC2086
  timeout "$case_timeout" $py experiments/bench/kernels.py --check --repeats 5 $tiny ${cases[$i]} \
    >"$log/$i.out" 2>"$log/$i.err"
  rc=$?
  if [ $rc -eq 124 ]; then
    echo "| ${cases[$i]} | | | | timeout after ${case_timeout} s | | | | $(tail -n 1 "$log/$i.err") |" \
      >"$log/$i.rows"
    status=1
  else
    grep '^| ' "$log/$i.out" | grep -v '^| op |' >"$log/$i.rows"
    [ $rc -ne 0 ] && status=1
    [ -s "$log/$i.rows" ] || { echo "| ${cases[$i]} | | | | exit $rc | | | | $(tail -n 1 "$log/$i.err") |" >"$log/$i.rows"; status=1; }
  fi
done
tests="skipped (--tiny)"
if [ -z "$tiny" ]; then
  timeout "${TEST_TIMEOUT:-300}" $py -m pytest -q -p no:cacheprovider -n0 -m accelerator -rfEs \
    tests/test_kernels_attention.py tests/test_kernels_ntm.py tests/test_bench.py >"$log/tests.out" 2>&1
  rc=$?
  tests="$(tail -n 1 "$log/tests.out") (exit $rc)"
  [ $rc -ne 0 ] && status=1
fi
grep -h -m 1 '^backend' "$log"/*.out | head -n 1
grep -h -m 1 -A 1 '^| op |' "$log"/*.out | head -n 2  # kernels.py's header, from any case
for i in "${!cases[@]}"; do cat "$log/$i.rows"; done
echo
echo "accelerator tests: $tests"
echo "logs: $log"
exit $status
