#!/usr/bin/env bash
# GPU kernel tests, then the four kernel benchmarks; tables on stdout, JSON and logs under $OUT
# (default benchmarks/results, git-ignored). Usage, from the repository root on a CUDA machine:
#     bash benchmarks/run_gpu.sh [tests|spike_quant|neuron|w8aspike|decode_attention|w8aspike_gemm ...]   # default: the first five
# (w8aspike_gemm: the prefill GEMM against bf16 and torch._int_mm, with the CuTe DSL kernel where nvidia-cutlass-dsl imports)
# TEST_FILES narrows the GPU tests (Triton compiles of every kernel's variants take minutes), e.g.
#     TEST_FILES="tests/kernels/test_kernels_spike_quant.py tests/kernels/test_kernels_neuron.py" bash benchmarks/run_gpu.sh tests
# TEST_MARKS="gpu" also runs the slow ones (neuron kernels at T = 64: minutes of compiling). With pytest-xdist
# importable the tests run in TEST_WORKERS (default 8) processes.
# Wheels for fla / SpikingJelly / snnTorch are installed from .whl/ when present (no network needed);
# Without the package installed, the repository root and the folders kernels/ and adapters/ (which hold
# sb_kernels and sb_adapters) go on PYTHONPATH.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}; export OUT; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import sb_kernels" 2>/dev/null; then
    export PYTHONPATH=$PWD:$PWD/kernels:$PWD/adapters:${PYTHONPATH:-}
fi
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import spikingjelly, snntorch, fla" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sb_site .whl/*.whl
    export PYTHONPATH=/tmp/sb_site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
steps=${*:-tests spike_quant neuron w8aspike decode_attention}
status=0
for step in $steps; do
    echo "=== $step ($(date -u +%H:%M:%S))"
    if [ "$step" = tests ]; then
        files=${TEST_FILES:-tests/kernels/test_kernels_dispatch.py tests/kernels/test_kernels_spike_quant.py tests/kernels/test_kernels_w8aspike.py \
            tests/kernels/test_kernels_neuron.py tests/kernels/test_kernels_gla.py tests/layers/test_gla.py tests/kernels/test_kernels_elementwise.py \
            tests/layers/test_linear.py tests/kernels/test_kernels_fake_quant.py tests/kernels/test_kernels_decode_attention.py \
            tests/kernels/test_kernels_gla_decode.py tests/kernels/test_kernels_ring_write.py tests/layers/test_merged_linear.py \
            tests/models/test_graphed_decode.py}
        # Cold Triton compiles dominate (minutes for the fla and T = 64 neuron kernels): with pytest-xdist
        # installed the tests run in parallel processes, which compile in parallel.
        workers=""
        python3 -c "import xdist" 2>/dev/null && workers="-n ${TEST_WORKERS:-8}"
        # shellcheck disable=SC2086  # lists of paths and options
        timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q $workers -m "${TEST_MARKS:-gpu and not slow}" -p no:cacheprovider $files \
            -rfEs --durations=12 2>&1 \
            | tee "$OUT/gpu_tests.log" | tail -40
        rc=${PIPESTATUS[0]}
    else
        timeout "${BENCH_TIMEOUT:-400}" python3 "benchmarks/bench_$step.py" 2>&1 | tee "$OUT/bench_$step.log"
        rc=${PIPESTATUS[0]}
    fi
    [ "$rc" = 0 ] || status=1
done
exit $status
