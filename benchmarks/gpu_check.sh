#!/usr/bin/env bash
# The GPU check (issue 15): on a machine with one NVIDIA GPU, in under 6 minutes, the GPU tests, training and sampling
# throughput against diffusers, the training command under `accelerate launch` and its resume, and a short real-data
# run with its FID; a short table last. See "GPU check" in benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh --prepare     # here, once, with the network: wheels, CIFAR-10 subset, Inception → .gpu/
#   bash benchmarks/gpu_check.sh               # on the GPU machine (installs the wheels from .gpu/wheels if needed)
#   bash benchmarks/gpu_check.sh --dry-run     # the same steps on the CPU, tiny sizes (the test suite runs it)
#   bash benchmarks/gpu_check.sh --steps setup,sample_throughput   # only these steps (in the usual order)
#
# The dry run runs the four steps after the GPU tests in two lanes at once (its timings mean nothing). Each step runs
# under `timeout` with its own limit (GPU_CHECK_TIMEOUT_<STEP> overrides it, in seconds), and, on the
# GPU, within an overall budget (GPU_CHECK_BUDGET, default 345 s) that the last step, the real-data run, fills: it
# trains for the time left. A step that fails or times out is recorded as such and the next one runs. Figures go to
# JSON files under $OUT (default benchmarks/results/gpu_check): gpu_check.json (every step's status, time and
# record), one file per benchmark step, gpu_check.log (every step's output); at most 7 files. Exit status 0 if every
# step is ok or skipped for a stated reason, else 1.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
PY=${PYTHON:-python3}
MODE=gpu
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=dry ;;
        --prepare) MODE=prepare ;;
        --steps) ONLY=",$2,"; shift ;;
        --steps=*) ONLY=",${1#--steps=},"; ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# ---- --prepare: what travels to the GPU machine, in the ignored folder .gpu/ ----------------------------------------
# The machine has torch, accelerate, huggingface-hub, safetensors, numpy, pyarrow, pandas, pillow and pytest, but not
# diffusers and datasets: their wheels (and datasets' missing needs), at the versions installed here.
WHEELS="diffusers datasets dill multiprocess importlib_metadata fsspec"
if [ "$MODE" = prepare ]; then
    set -e
    mkdir -p .gpu/wheels
    rm -f .gpu/wheels/*.whl
    for name in $WHEELS; do
        version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .gpu/wheels "$name==$version"
    done
    "$PY" benchmarks/gpu_check.py prepare --shared "${GPU_CHECK_SHARED:-$REPO/../shared/data}" --dest .gpu \
        --images "${GPU_CHECK_IMAGES:-5000}"
    du -sh .gpu/wheels .gpu/cifar10 .gpu/inception 2>/dev/null
    tracked=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 cat 2>/dev/null | wc -c)
    carried=$(du -sb .gpu | cut -f1)
    echo "travels: checkout $((tracked / 1048576)) MiB + .gpu $((carried / 1048576)) MiB" \
         "= $(((tracked + carried) / 1048576)) MiB (the limit is 64 MiB)"
    exit 0
fi

# ---- The environment of every step ----------------------------------------------------------------------------------
OUT_DIR=${OUT:-$REPO/benchmarks/results/gpu_check}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
# What an earlier run left in these folders would be mistaken for this run's (and the trainer refuses a used folder).
rm -rf "$WORK/logs" "$WORK/records" "$WORK/train_throughput" "$WORK/train_resume" "$WORK/real_data" \
    "$WORK/fid_cache" "$WORK/setup.env"
for file in gpu_check.json gpu_check.log train_throughput.json train_resume.json sample_throughput.json \
    real_data.json real_data_samples.png; do
    rm -f "$OUT_DIR/$file"
done
mkdir -p "$OUT_DIR" "$WORK/logs" "$WORK/records"
: >"$WORK/steps.tsv"
: >"$OUT_DIR/gpu_check.log"
echo "GPU check ($MODE): figures in $OUT_DIR, work folder $WORK"
# The Inception file is looked for in the user's ddpm_hf cache before HF_HOME moves into the work folder.
export DDPM_HF_CACHE=${DDPM_HF_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/ddpm_hf}
export HF_HOME="$WORK/hf_home" HF_DATASETS_CACHE="$WORK/datasets_cache"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
if [ "$MODE" = dry ]; then
    export CUDA_VISIBLE_DEVICES="" ACCELERATE_USE_CPU=1
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    BUDGET=${GPU_CHECK_BUDGET:-0}  # no overall budget: each step has its limit
else
    BUDGET=${GPU_CHECK_BUDGET:-345}
fi
START=$(date +%s)

selected() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

# run_step NAME LIMIT COMMAND...: run COMMAND under `timeout`, its output in the step's log; record the status.
run_step() {
    local name=$1 limit=$2 status note="" started elapsed rc
    shift 2
    selected "$name" || return 0
    local override="GPU_CHECK_TIMEOUT_${name^^}"
    limit=${!override:-$limit}
    local left=999999
    if [ "$BUDGET" -gt 0 ]; then
        left=$((START + BUDGET - $(date +%s)))
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "[$name] limit ${limit}s: $*"
    started=$(date +%s.%N)
    if [ "$left" -lt 5 ]; then
        rc=124
        note="not run: the overall budget of ${BUDGET}s is spent"
        echo "$note" >"$WORK/logs/$name.log"
    else
        GPU_CHECK_DEADLINE=$(($(date +%s) + limit)) timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
        rc=$?
    fi
    elapsed=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $started}")
    case $rc in
        0) status=ok ;;
        124|137) status=timeout; note=${note:-"stopped at its limit of ${limit}s"} ;;
        *) status=failed; note="exit status $rc: $(grep -v '^\s*$' "$WORK/logs/$name.log" | tail -n 1 | cut -c1-160)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$elapsed" "$note" >>"$WORK/steps.tsv"
    { echo "===== $name: $status in ${elapsed}s (limit ${limit}s): $*"; cat "$WORK/logs/$name.log"; } \
        >"$WORK/logs/$name.section"
    if command -v flock >/dev/null; then  # steps that end at once (the dry run's lanes) do not interleave their logs
        flock "$OUT_DIR/gpu_check.log" cat "$WORK/logs/$name.section" >>"$OUT_DIR/gpu_check.log"
    else
        cat "$WORK/logs/$name.section" >>"$OUT_DIR/gpu_check.log"
    fi
    if [ -f "$WORK/records/$name.json" ] && [ "$name" != setup ] && [ "$name" != gpu_tests ]; then
        cp "$WORK/records/$name.json" "$OUT_DIR/$name.json"
    fi
    echo "[$name] $status in ${elapsed}s${note:+: $note}"
    if [ "$status" != ok ]; then
        tr '\r' '\n' <"$WORK/logs/$name.log" | grep -v '^\s*$' | tail -n 15 | sed 's/^/    /'
    fi
}

# ---- Sizes: the GPU run, and the dry run's tiny ones ----------------------------------------------------------------
if [ "$MODE" = dry ]; then
    T_SETUP=40 T_TESTS=60 T_TRAIN=60 T_RESUME=90 T_SAMPLE=60 T_REAL=90
    TRAIN_ARGS=(--preset ddpm-tiny --batch-size 8 --steps 2)
    RESUME_LAUNCH="--mixed_precision no"
    RESUME_ARGS=(--unet ddpm-tiny --train-batch-size 8 --num-sample-images 2)
    RESUME_STEPS=(--first 2 --total 4)
    SAMPLE_ARGS=(--preset ddpm-tiny --batch-size 2 --steps 2 --repeats 1 --deviation-steps 5)
    REAL_ARGS=(--unet ddpm-tiny --batch-size 8 --steps 4 --grid-images 2 --fid-samples 4 --fid-batch-size 4
               --fid-inference-steps 5 --fid-reference-images 4)
else
    T_SETUP=60 T_TESTS=75 T_TRAIN=110 T_RESUME=90 T_SAMPLE=110 T_REAL=240
    TRAIN_ARGS=(--preset ddpm-cifar10 --batch-size 128 --steps 50 --sample-grid-images 256)
    RESUME_LAUNCH="--mixed_precision bf16"
    RESUME_ARGS=(--tf32 --channels-last --torch-compile --num-sample-images 256)
    RESUME_STEPS=(--first 20 --total 40)
    SAMPLE_ARGS=(--preset ddpm-cifar10 --batch-size 256 --steps 20 --repeats 2 --max-batch --largest-batch-steps 2
                 --deviation-steps 100)
    REAL_ARGS=(--unet ddpm-cifar10 --batch-size 128 --grid-images 256 --fid-samples "${GPU_CHECK_FID_SAMPLES:-2048}"
               --fid-batch-size 256 --fid-inference-steps 100)
fi
DRY=()
[ "$MODE" = dry ] && DRY=(--dry-run)

# ---- 1. setup: the wheels (on the GPU machine), versions, the measured peak, data and the FID network ----------------
setup_step() {
    if ! "$PY" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('diffusers') and u.find_spec('datasets')))"
    then
        ls .gpu/wheels/*.whl >/dev/null 2>&1 || { echo "diffusers or datasets missing and no wheels in .gpu/wheels:" \
            "run bash benchmarks/gpu_check.sh --prepare where the network is, and carry .gpu"; return 1; }
        echo "installing $(ls .gpu/wheels | tr '\n' ' ')into $WORK/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            .gpu/wheels/*.whl || return 1
    fi
    "$PY" benchmarks/gpu_check.py setup --work "$WORK" ${DRY[@]+"${DRY[@]}"}
}
export -f setup_step
export PY WORK MODE
DRY_FLAG=${DRY[*]:-}
export DRY_FLAG
run_step setup "$T_SETUP" bash -c 'DRY=($DRY_FLAG); setup_step'
DATASET="" INCEPTION="" PEAK_TFLOPS=""
# shellcheck disable=SC1091
[ -f "$WORK/setup.env" ] && . "$WORK/setup.env"
if [ -z "$DATASET" ]; then  # setup failed or was not selected: the data it would have named
    if [ "$MODE" = dry ]; then DATASET="$WORK/data/tiny"; else DATASET="$REPO/.gpu/cifar10"; fi
fi
PEAK=()
[ -n "$PEAK_TFLOPS" ] && PEAK=(--peak-tflops "$PEAK_TFLOPS")
# The Inception file is found (setup looked in the user's ddpm_hf cache); what the steps prepare stays in the work
# folder, not in the user's cache.
export DDPM_HF_CACHE="$WORK/ddpm_hf_cache"

# ---- 2. the GPU tests -----------------------------------------------------------------------------------------------
run_step gpu_tests "$T_TESTS" "$PY" benchmarks/gpu_check.py gpu-tests --work "$WORK" ${DRY[@]+"${DRY[@]}"}

# ---- 3. training throughput: ddpm_hf against diffusers' reference loop ----------------------------------------------
step_train_throughput() {
    run_step train_throughput "$T_TRAIN" "$PY" benchmarks/train_throughput.py "${TRAIN_ARGS[@]}" --dataset "$DATASET" \
        ${PEAK[@]+"${PEAK[@]}"} --output "$WORK/records/train_throughput.json" --work-dir "$WORK/train_throughput"
}

# ---- 4. the training command under accelerate launch, every speed-up on, then resumed from its checkpoint -----------
step_train_resume() {
    run_step train_resume "$T_RESUME" "$PY" benchmarks/gpu_check.py train-resume --work "$WORK" "${RESUME_STEPS[@]}" \
        --launch "$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --dynamo_backend no $RESUME_LAUNCH" \
        -- --preset ddpm-cifar10 --dataset "$DATASET" "${RESUME_ARGS[@]}" --logging-steps 10 --sample-steps 1000000 \
        --sample-inference-steps 1 --report-to none
}

# ---- 5. sampling throughput: diffusers, plain ddpm_hf, every speed-up; bf16's deviation -----------------------------
step_sample_throughput() {
    run_step sample_throughput "$T_SAMPLE" "$PY" benchmarks/sample_throughput.py "${SAMPLE_ARGS[@]}" \
        --output "$WORK/records/sample_throughput.json"
}

# ---- 6. a short real-data run and its FID ---------------------------------------------------------------------------
step_real_data() {
    local fid=(--no-fid-reason "no FID Inception file was found (see the setup step)")
    [ -n "$INCEPTION" ] && fid=(--inception "$INCEPTION")
    run_step real_data "$T_REAL" "$PY" benchmarks/gpu_check.py real-data --work "$WORK" --dataset "$DATASET" \
        "${REAL_ARGS[@]}" "${fid[@]}"
    if [ -f "$WORK/real_data/samples.png" ]; then
        cp "$WORK/real_data/samples.png" "$OUT_DIR/real_data_samples.png"
    fi
}

if [ "$MODE" = dry ]; then
    # Its timings mean nothing, and the test suite waits for it: two lanes of steps at once (on 2 cores, 31 s
    # instead of 61). The steps share only the prepared-images and datasets caches, which lock.
    { step_train_resume; step_sample_throughput; } &
    step_real_data
    step_train_throughput
    wait
else
    step_train_throughput
    step_train_resume
    step_sample_throughput
    step_real_data
fi
# Failed if any step's recorded status is not ok (the dry run's lanes run in subshells, so this reads the records).
FAILED=0
awk -F'\t' '$2 != "ok" {failed = 1} END {exit !failed}' "$WORK/steps.tsv" && FAILED=1

# ---- The table, last -----------------------------------------------------------------------------------------------
TOTAL=$(($(date +%s) - START))
if ! "$PY" benchmarks/gpu_check.py summary --work "$WORK" --out "$OUT_DIR" --total-seconds "$TOTAL" ${DRY[@]+"${DRY[@]}"} \
    >"$WORK/summary.txt" 2>&1; then
    cat "$WORK/summary.txt"
    printf '\nGPU check: the summary failed; the steps:\n%-18s %-8s %8s  %s\n' step status seconds note
    awk -F'\t' '{printf "%-18s %-8s %8s  %s\n", $1, $2, $3, $4}' "$WORK/steps.tsv"
    exit 1
fi
cat "$WORK/summary.txt"
exit "$FAILED"
