#!/usr/bin/env bash
# A real GPU host, end to end: the agent's NVML probe, then `chutes dev` on this machine's GPUs (no simulated
# nodes) deploying scripts/gpu_check_chute.py, whose cord reports what CUDA sees inside the instance.
# Needs the project installed (PATH has chutes, chutes-agent, ...) and PyTorch in the runtime's Python.
# Usage: scripts/gpu_check.sh [OUTPUT_DIR]
set -uo pipefail
out=${1:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
export CHUTES_CONFIG=$work/config.ini PYTHONUNBUFFERED=1
step() { printf '\n==> %s\n' "$*"; }

step "GPUs as the driver lists them"; nvidia-smi -L
step "chutes-agent probe (NVML)"; chutes-agent probe || exit 1
chutes-agent probe --json > "$out/probe.json"

step "chutes dev on this machine's GPUs"
setsid chutes dev --data-dir "$work/data" --ready-file "$work/ready.json" > "$out/chutes-dev.log" 2>&1 &
dev=$!
trap 'kill -TERM -- -$dev 2>/dev/null; sleep 5; kill -KILL -- -$dev 2>/dev/null; cp -r "$work/data/logs" "$out/" 2>/dev/null' EXIT
for _ in $(seq 1 120); do [ -s "$work/ready.json" ] && break; kill -0 $dev 2>/dev/null || break; sleep 0.5; done
[ -s "$work/ready.json" ] || { echo "chutes dev did not come up"; tail -40 "$out/chutes-dev.log"; exit 1; }
grep -E "^ *(containers|nodes|GPU|gpus)" "$out/chutes-dev.log" | head -5
chutes nodes

step "deploy a chute that needs one GPU with 40 GB or more"
started=$(date +%s.%N)
chutes deploy scripts/gpu_check_chute.py:chute --timeout 180 || { chutes logs gpu-check; exit 1; }
step "call it through the gateway (deploy → first answer timed)"
chutes invoke gpu-check /gpu -d '{"size": 8192}' | tee "$out/answer.json"
python3 -c "import sys,time; print(f\"deploy → first answer: {time.time() - float(sys.argv[1]):.1f} s\")" "$started"
chutes invoke gpu-check /gpu -d '{"size": 8192}'
chutes chutes get gpu-check
chutes nodes
sleep 3
chutes usage
