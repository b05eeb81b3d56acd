#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU and no network:
#
#   1. the generator fine-tune on CUDA in bf16 (benchmarks/bench_finetune.py --device cuda), then
#      the candidate model folder it trained loaded on CUDA and asked for a pool of copy;
#   2. optionally (K > 0) a simulator sweep with fine-tune rounds on the CPUs, one process per
#      seed (one thread each, the GPU hidden), merged into one summary: training's lift over its
#      refresh control and over the bandit, per seed, with the mean and its 95 % t interval.
#
#   scripts/cuda-check.sh [--cpu-ok] [OUT_DIR [K [FIRST [EVERY [DECISIONS]]]]]
#
#     OUT_DIR    results and cuda-check.log (default var/bench); at most six files are written
#                there: cuda-check.log, finetune-<device>.json, model-check.json,
#                sweep-summary.json, sweep-seeds.tar.gz (each seed's JSON, plot and log)
#     K          seeds in the sweep (default 0: no sweep)
#     FIRST      the sweep's first seed (default 5000; seeds 1-8 chose the fine-tune settings)
#     EVERY      decisions between fine-tune rounds (default 5000)
#     DECISIONS  decisions per random world, and for the standard scenario each process runs
#                first (default 20000)
#     --cpu-ok   no GPU: run part 1 on the CPU (float32) instead of failing (a local dry run);
#                the same as CUDA_CHECK_CPU_OK=1
#
# A machine with no network takes the project's locked packages it lacks as wheels for its own
# Python in .whl (from `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`
# of uv.lock's versions, run where the package index is reachable).
#
# Environment: PYTHON (default python3); CUDA_CHECK_SITE (default /tmp/site): where the wheels
# in .whl are installed when that folder exists and PYTHON is CPython 3.12 (CUDA_CHECK_WHEELS=0
# skips it); JOBS (default: the CPU count) processes at a time; FT_TIMEOUT (default 300),
# SWEEP_TIMEOUT (default 420) and STEP_TIMEOUT (default 180) seconds for part 1's benchmark, for
# each seed's process and for each other step (set-up, the model check, the merge).
#
# Exit status: 0 all passed; 1 part 1 failed; 2 the set-up (wheels, imports) failed; 3 some of
# the sweep's seeds failed or ran out of time (the summary covers the others).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

CPU_OK=${CUDA_CHECK_CPU_OK:-0}
ARGS=()
for a in "$@"; do
    case "$a" in
        --cpu-ok) CPU_OK=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) ARGS+=("$a") ;;
    esac
done
OUT_DIR=${ARGS[0]:-var/bench}
K=${ARGS[1]:-0}
FIRST=${ARGS[2]:-5000}
EVERY=${ARGS[3]:-5000}
DECISIONS=${ARGS[4]:-20000}
PY=${PYTHON:-python3}
SITE=${CUDA_CHECK_SITE:-/tmp/site}
JOBS=${JOBS:-$(nproc)}
FT_TIMEOUT=${FT_TIMEOUT:-300}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-420}
STEP_TIMEOUT=${STEP_TIMEOUT:-180}
for v in K FIRST EVERY DECISIONS JOBS FT_TIMEOUT SWEEP_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "cuda-check: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/cuda-check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cuda-check.XXXXXX")
BEGAN=$SECONDS
log() { printf '[cuda-check %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - BEGAN))" "$*"; }
trap 'log "stopped at line $LINENO (exit $?)"' ERR

log "repo $REPO, out $OUT_DIR, scratch $WORK"
log "args: K=$K FIRST=$FIRST EVERY=$EVERY DECISIONS=$DECISIONS JOBS=$JOBS cpu_ok=$CPU_OK"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg PYTHONUNBUFFERED=1
export HF_HOME="$WORK/hf"

# -- set-up: the carried wheels, versions, imports -------------------------------------------
if [[ ${CUDA_CHECK_WHEELS:-1} != 0 ]] && compgen -G ".whl/*.whl" >/dev/null; then
    if "$PY" -c 'import sys; sys.exit(sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 12))'; then
        log "installing $(ls .whl/*.whl | wc -l) wheels from .whl into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl || { log "FAIL: wheel install"; exit 2; }
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        log "wheels in .whl are for CPython 3.12; $("$PY" -V 2>&1) runs without them"
    fi
fi

log "nvidia-smi -L:"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; else echo "(no nvidia-smi)"; fi

timeout -k 10 "$STEP_TIMEOUT" "$PY" - <<'PY' || { log "FAIL: set-up (see the error above)"; exit 2; }
import importlib
import importlib.metadata as md
import platform
import sys

print(f"python {platform.python_version()} at {sys.executable}")
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
             "huggingface-hub", "safetensors", "numpy", "scipy", "scikit-learn", "pandas",
             "pyarrow", "fsspec", "pydantic", "pydantic-core", "typing-extensions", "regex",
             "vowpalwabbit", "msgspec", "kafka-python", "crc32c", "opencc", "matplotlib"):
    try:
        dist = md.distribution(name)
        print(f"  {name:18s} {dist.version:14s} {dist.locate_file('')}")
    except md.PackageNotFoundError:
        print(f"  {name:18s} MISSING")
import torch

cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {cuda}"
      + (f", {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}" if cuda else ""))
# everything the two benchmarks load, the lazily imported trainers included
for mod in ("trl", "peft", "datasets", "vowpalwabbit", "generator.finetune", "generator.sampling",
            "service.finetune.rounds", "service.simulate.run", "service.simulate.report",
            "bandit.refit", "bandit.logistic"):
    importlib.import_module(mod)
from trl import KTOConfig, KTOTrainer  # noqa: F401

print("imports ok")
PY

DEVICE=cuda
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    if [[ $CPU_OK == 1 ]]; then
        DEVICE=cpu
        log "no CUDA device: part 1 runs on the CPU (--cpu-ok)"
    else
        log "FAIL: torch sees no CUDA device (pass --cpu-ok for a CPU dry run)"
        exit 1
    fi
fi

# -- part 1: one fine-tune round on the device, then the candidate on the device ------------
STATUS=0
FT_JSON="$OUT_DIR/finetune-$DEVICE.json"
log "part 1: bench_finetune.py --device $DEVICE (limit ${FT_TIMEOUT}s)"
rc=0
timeout -k 10 "$FT_TIMEOUT" "$PY" benchmarks/bench_finetune.py --device "$DEVICE" \
    --keep "$WORK/registry" --out "$FT_JSON" || rc=$?
if ((rc == 0)); then
    log "part 1: checking $FT_JSON and the candidate model on $DEVICE"
    if ! timeout -k 10 "$STEP_TIMEOUT" "$PY" - "$FT_JSON" "$DEVICE" "$OUT_DIR/model-check.json" \
        "$WORK" <<'PY'; then
import json
import sys
import time
from pathlib import Path

import torch

from generator.finetune import FinetuneConfig, finetune
from generator.guardrails import GuardrailConfig
from generator.model import BOOTSTRAP_MODEL, CopyGenerator
from generator.sampling import generate
from service.simulate.catalog import make_catalog
from service.simulate.scenario import load_scenario

ft_json, device, out, work = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
want = "bfloat16" if device == "cuda" else "float32"
d = json.loads(Path(ft_json).read_text())
problems: list[str] = []
check: dict = {"device": device, "want_dtype": want, "round_status": d.get("status")}


def expect(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        problems.append(what)


expect(d.get("device") == device, f"bench JSON device {d.get('device')!r} == {device!r}")
expect(d.get("dtype") == want, f"bench JSON dtype {d.get('dtype')!r} == {want!r}")
training = d.get("training") or {}
expect(training.get("device") == device, f"training record device {training.get('device')!r}")
expect(d.get("status") in ("promoted", "rejected"), f"round trained (status {d.get('status')!r})")
folder = Path(d["candidate"]) if d.get("candidate") else None
if folder is not None and folder.is_dir():
    cfg = json.loads((folder / "config.json").read_text())
    saved = cfg.get("dtype", cfg.get("torch_dtype"))
    expect(saved == want, f"candidate config.json dtype {saved!r} == {want!r}")
    weights = sorted(folder.glob("*.safetensors"))
    check["candidate"] = str(folder)
    if not weights:
        # a rejected candidate's weights are dropped (its data stays): train the same rows
        # again on the device, so that a trained model is loaded either way
        rows = [json.loads(x) for x in (folder / "data" / "kto.jsonl").read_text().splitlines()]
        t = time.perf_counter()
        res = finetune(BOOTSTRAP_MODEL, rows, work / "check-model",
                       FinetuneConfig(device=device, progress=False))
        check["retrained"] = {"examples": len(rows), "seconds": round(time.perf_counter() - t, 2),
                              "device": res.device, "dtype": res.dtype, "final_loss": res.final_loss}
        folder = work / "check-model"
        weights = sorted(folder.glob("*.safetensors"))
    expect(bool(weights), f"weights in {folder}")
    for w in weights:  # the dtypes the tensors were saved in (the header, no torch needed)
        n = int.from_bytes(w.read_bytes()[:8], "little")
        header = json.loads(w.read_bytes()[8:8 + n])
        dtypes = sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})
        check.setdefault("saved_dtypes", {})[w.name] = dtypes
        tag = {"bfloat16": "BF16", "float32": "F32"}[want]
        expect(tag in dtypes, f"{w.name} holds {tag} tensors (all: {dtypes})")
    t = time.perf_counter()
    gen = CopyGenerator.from_path(folder, device=device)
    p = next(gen.model.parameters())
    expect(gen.device.type == device and p.device.type == device,
           f"loaded on {p.device} (generator device {gen.device})")
    expect(str(p.dtype) == f"torch.{want}", f"loaded as {p.dtype}")
    scenario = load_scenario(Path("scenarios/standard.json"))
    product = make_catalog(1, scenario.language, scenario.seed)[0]
    report = generate(gen, product, scenario.channel, scenario.pool_size, seed=1,
                      guardrails=GuardrailConfig(today=scenario.copy_date))
    check["generate"] = {
        "seconds": round(time.perf_counter() - t, 2),
        "sampled": report.sampled,
        "passed": report.passed,
        "pool": [v.text for v in report.pool.variants],
    }
    expect(len(report.pool.variants) >= 1, f"a pool of {len(report.pool.variants)} variants")
    for v in report.pool.variants[:4]:
        print("     ", v.text)
    if device == "cuda":
        check["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
else:
    expect(False, f"a candidate folder to load (JSON candidate {d.get('candidate')!r})")
check["problems"] = problems
check["passed"] = not problems
out.write_text(json.dumps(check, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
sys.exit(1 if problems else 0)
PY
        STATUS=1
        log "FAIL: part 1 checks (see above and model-check.json)"
    else
        log "part 1 passed"
    fi
else
    STATUS=1
    log "FAIL: bench_finetune.py exited $rc (124: ran past ${FT_TIMEOUT}s)"
fi

# -- part 2: the sweep, one single-threaded CPU process per seed ------------------------------
if ((K > 0)); then
    SEEDS="$WORK/sweep"
    mkdir -p "$SEEDS"
    log "part 2: $K seeds $FIRST..$((FIRST + K - 1)), rounds every $EVERY, $DECISIONS decisions," \
        "$JOBS at a time, ${SWEEP_TIMEOUT}s each"
    run_seed() {
        local seed=$1 began=$SECONDS rc=0
        CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
            timeout -k 10 "$SWEEP_TIMEOUT" "$PY" benchmarks/bench_simulate.py \
            --decisions "$DECISIONS" --sweep 1 --first "$seed" --finetune-every "$EVERY" \
            --sweep-decisions "$DECISIONS" --out "$SEEDS/seed-$seed.json" \
            >"$SEEDS/seed-$seed.log" 2>&1 || rc=$?
        echo "$rc $((SECONDS - began))" >"$SEEDS/seed-$seed.rc"
        log "seed $seed: exit $rc after $((SECONDS - began))s"
    }
    # wait on the seeds' own pids: a bare `wait` would also wait for the log's tee
    PIDS=()
    for ((seed = FIRST; seed < FIRST + K; seed++)); do
        while (($(jobs -rp | wc -l) >= JOBS)); do sleep 1; done
        run_seed "$seed" &
        PIDS+=($!)
    done
    for pid in "${PIDS[@]}"; do wait "$pid" || true; done
    log "part 2: merging"
    if ! timeout -k 10 "$STEP_TIMEOUT" "$PY" - "$SEEDS" "$OUT_DIR/sweep-summary.json" "$FIRST" \
        "$K" "$EVERY" "$DECISIONS" "$JOBS" <<'PY'; then
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from bench_simulate import lift_summary  # the same interval as a sequential sweep's

seeds_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
first, k, every, decisions, jobs = (int(x) for x in sys.argv[3:8])
per_seed, failed = [], []
for seed in range(first, first + k):
    rc, secs = (seeds_dir / f"seed-{seed}.rc").read_text().split()
    path = seeds_dir / f"seed-{seed}.json"
    if rc != "0" or not path.is_file():
        tail = (seeds_dir / f"seed-{seed}.log").read_text(errors="replace").splitlines()[-5:]
        failed.append({"seed": seed, "exit": int(rc), "seconds": int(secs), "log_tail": tail})
        continue
    row = json.loads(path.read_text())["sweep"][0]
    per_seed.append({"seconds": int(secs), **row})
summary = {
    "benchmark": "simulate_sweep_parallel",
    "first": first, "seeds": k, "finetune_every": every, "decisions": decisions,
    "processes_at_a_time": jobs, "cpus": os.cpu_count(),
    "finished": len(per_seed), "failed": failed,
    "per_seed": [
        {key: r.get(key) for key in ("seed", "scenario", "finetune_vs_refresh",
                                     "finetune_vs_bandit", "rounds", "promoted",
                                     "bandit_vs_oracle_last_half", "attainable", "seconds")}
        for r in per_seed
    ],
}
for key in ("finetune_vs_refresh", "finetune_vs_bandit"):
    got = [r[key] for r in per_seed if r.get(key) is not None]
    summary[key] = lift_summary(got)
summary["sweep_meets_bars"] = f"{sum(r['meets_bars'] for r in per_seed)}/{len(per_seed)}"
out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=2))
for r in summary["per_seed"]:
    print(json.dumps(r))
sys.exit(3 if failed else 0)
PY
        ((STATUS == 0)) && STATUS=3
        log "part 2: some seeds failed (sweep-summary.json lists them)"
    fi
    tar -czf "$OUT_DIR/sweep-seeds.tar.gz" -C "$WORK" sweep
fi

rm -rf "$WORK"
log "done: exit $STATUS after $((SECONDS - BEGAN))s"
exec >&- 2>&-
# the log is complete before the script returns (tee ends at the end of its input)
for _ in {1..50}; do kill -0 "$TEE_PID" 2>/dev/null || break; sleep 0.1; done
exit "$STATUS"
