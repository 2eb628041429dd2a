#!/bin/sh
# bench/results/ray_serve_r50x1_480_{1,2}replica.{json,csv}: R50x1 at 480, ONNX Runtime fp32 at batch 1, in-process
# beside bit-serve (Triton) and the Ray Serve application at 1 and 2 replicas, concurrency 1, 2, 4, 8: one bit-bench run
# per replica count (Ray Serve has one HTTP proxy, on one port, per cluster). Run from the repo root, as root:
#
#   sh bench/results/ray_serve_r50x1_480.sh /tmp/w/r50x1_480 bench/results
#
# It runs itself again inside a private network and PID namespace (`unshare --net --pid --fork --mount-proc`): the
# network namespace keeps Ray's servers (they listen on every interface) off the network, the PID namespace ends every
# process started in it when it exits. Outside, it samples every 5 s how many cores processes outside that namespace
# (other people's work on this host) used, and writes that into each JSON as `cluster.host_load`.
set -eu
BUNDLE=${1:-/tmp/w/r50x1_480}
OUT=${2:-bench/results}
DURATION=${DURATION:-12}
MAX_WINDOWS=${MAX_WINDOWS:-5}
NAME=${NAME:-ray_serve_r50x1_480}

if [ "${BIT_INNER:-}" != 1 ]; then
    LOAD_PY=$(mktemp /tmp/bit-load-XXXX.py)
    cat > "$LOAD_PY" <<'PYEOF'
"""How busy the host's cores were with other people's work while ray_serve_r50x1_480.sh ran: CPU time of every process
outside the benchmark's PID namespace, sampled every 5 s from /proc (outside that namespace), then written into each
result JSON as `cluster.host_load`.

    python load.py sample UNSHARE_PID LOG      # until UNSHARE_PID exits
    python load.py annotate LOG RESULT.json...
"""

from __future__ import annotations

import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 5.0


def _cpu_ticks() -> dict[int, tuple[str, int, str]]:
    """pid -> (command, utime + stime in ticks, its PID namespace)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ns = os.readlink(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(name)] = (comm, int(fields[11]) + int(fields[12]), ns)
    return out


def sample(unshare_pid: int, log: str) -> None:
    ours, own, todo = None, os.readlink("/proc/self/ns/pid"), [unshare_pid]
    while todo and ours is None:  # the first descendant in another PID namespace: the benchmark's
        pid = todo.pop()
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != own:
                ours = os.readlink(f"/proc/{pid}/ns/pid")
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    if ours is None:
        raise SystemExit(f"no process in a PID namespace of its own under {unshare_pid}")
    before, t0 = _cpu_ticks(), time.monotonic()
    with open(log, "a") as out:
        while os.path.exists(f"/proc/{unshare_pid}"):
            time.sleep(INTERVAL_S)
            now, t1 = _cpu_ticks(), time.monotonic()
            others, mine, top = 0.0, 0.0, {}
            for pid, (comm, ticks, ns) in now.items():
                used = (ticks - before.get(pid, (comm, ticks, ns))[1]) / TICK / (t1 - t0)
                if ns == ours or pid in (unshare_pid, os.getpid()):
                    mine += used
                else:
                    others += used
                    top[comm] = top.get(comm, 0.0) + used
            busiest = sorted(top.items(), key=lambda kv: -kv[1])[:3]
            record = {"t": time.time(), "ours_cores": round(mine, 3), "others_cores": round(others, 3)}
            record["others_top"] = [[c, round(u, 3)] for c, u in busiest if u >= 0.01]
            out.write(json.dumps(record) + "\n")
            out.flush()
            before, t0 = now, t1


def annotate(log: str, results: list[str]) -> None:
    records = [json.loads(line) for line in open(log)]
    for path in results:
        result = json.load(open(path))
        cluster = result["cluster"]
        during = [r for r in records if cluster["bench_started_at"] <= r["t"] <= cluster["bench_ended_at"] + 1]
        others = [r["others_cores"] for r in during] or [0.0]
        names = {}
        for r in during:
            for comm, used in r["others_top"]:
                names[comm] = names.get(comm, 0.0) + used / len(during)
        mean = sum(others) / len(others)
        cluster["host_load"] = {
            "what": "CPU cores used by processes outside the benchmark's PID namespace (other workers on this "
            f"host), sampled every {INTERVAL_S:g} s from /proc during the run (bench/results/ray_serve_r50x1_480.sh)",
            "samples": len(during),
            "others_cores_mean": round(mean, 3),
            "others_cores_max": round(max(others), 3),
            "others_busiest": {c: round(u, 3) for c, u in sorted(names.items(), key=lambda kv: -kv[1])[:5]},
            "verdict": "quiet" if mean < 0.1 else f"shared: others used {mean:.2f} of the 2 cores on average",
        }
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(int(sys.argv[2]), sys.argv[3])
    else:
        annotate(sys.argv[2], sys.argv[3:])
PYEOF
    BIT_INNER=1 unshare --net --pid --fork --mount-proc sh "$0" "$BUNDLE" "$OUT" &
    INNER=$!
    sleep 1
    .venv/bin/python "$LOAD_PY" sample $INNER "$OUT/${NAME}_load.jsonl" &
    SAMPLER=$!
    RC=0
    wait $INNER || RC=$?
    wait $SAMPLER
    .venv/bin/python "$LOAD_PY" annotate "$OUT/${NAME}_load.jsonl" "$OUT/${NAME}"_*replica.json
    rm -f "$LOAD_PY" "$OUT/${NAME}_load.jsonl"
    exit $RC
fi
ip link set lo up
# One proxy (on the head), all nodes on one host: without this the proxy's own node's replica takes all the load
export RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0
RAY_TMPDIR=$(mktemp -d /tmp/bit-ray-XXXX)
export RAY_TMPDIR
# The cluster's token: the caller's file, or a new one in the run's own 0700 folder (a fixed name in /tmp could be
# made first, or read, by another local user)
if [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    RAY_AUTH_TOKEN_PATH="$RAY_TMPDIR/auth_token"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$RAY_AUTH_TOKEN_PATH")
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH RAY_USAGE_STATS_ENABLED=0
NODE="--num-cpus=1 --object-store-memory=100000000"

# a Ray cluster of three nodes: a head and two workers, one CPU each
.venv/bin/ray start --head --port=6379 $NODE --include-dashboard=false --disable-usage-stats --temp-dir="$RAY_TMPDIR"
.venv/bin/ray start --address=127.0.0.1:6379 $NODE
.venv/bin/ray start --address=127.0.0.1:6379 $NODE

# bit-serve (Triton), the same ONNX on the same ONNX Runtime, two threads as in-process
.venv-serve/bin/bit-serve "$BUNDLE" --backend ort-cpu --threads 2 --max-batch 8 \
    --http-port 18300 --grpc-port 18301 --metrics-port 18302 > "$RAY_TMPDIR/bit-serve.log" 2>&1 &
.venv/bin/python - <<'EOF'
import time, urllib.request
for _ in range(300):
    try:
        if urllib.request.urlopen("http://127.0.0.1:18300/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(1)
else:
    raise SystemExit("bit-serve (Triton) not ready in 300 s")
EOF

for N in 1 2; do
    # the Ray Serve application: N replicas, at most one per node, one CPU (and one ORT thread) each
    .venv/bin/bit-serve "$BUNDLE" --ray 127.0.0.1:6379 --detach --backend ort-cpu --min-replicas $N --max-replicas $N \
        --max-replicas-per-node 1 --replica-cpus 1 --http-port 8000
    cat /proc/loadavg > "$RAY_TMPDIR/load_before_$N"
    date +%s > "$RAY_TMPDIR/start_$N"
    .venv/bin/bit-bench "$BUNDLE" --backend ort-cpu,triton,ray --triton-url grpc://127.0.0.1:18301 \
        --ray-url http://127.0.0.1:8000 --concurrency 1,2,4,8 --threads 2 --warmup 2 --duration "$DURATION" \
        --max-windows "$MAX_WINDOWS" --percentiles 50,90,95,99 --baseline ort-cpu/fp32 \
        --json "$OUT/${NAME}_${N}replica.json" --csv "$OUT/${NAME}_${N}replica.csv"
    cat /proc/loadavg > "$RAY_TMPDIR/load_after_$N"
    date +%s > "$RAY_TMPDIR/end_$N"
    # the cluster's side of the run, into the JSON: setup commands, replicas' nodes, load average
    .venv/bin/python - "$OUT/${NAME}_${N}replica.json" "$N" "$RAY_TMPDIR" "$0" <<'EOF'
import json, sys, urllib.request
path, n, tmp, script = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
nodes = set()
for _ in range(40):
    nodes.add(json.load(urllib.request.urlopen("http://127.0.0.1:8000/v1/ready", timeout=10))["node_id"])
result = json.load(open(path))
text = open(script).read()
text = text[text.index("ip link set lo up") :]
lines = [line.rstrip("\n") for line in text.splitlines() if line.strip() and not line.startswith("#")]
result["cluster"] = {
    "what": "a three-node Ray cluster on this host (head + 2 workers, 1 CPU and a 100 MB object store each) in a "
    "private network namespace, the Ray Serve application deployed on it with bit-serve --ray; bit-serve (Triton) "
    "beside it; bit-bench in the same namespace",
    "script": "bench/results/ray_serve_r50x1_480.sh (the cluster part below; sampler omitted)",
    "script_lines": lines,
    "replicas": n,
    "replica_nodes": sorted(nodes),
    "replica_threads": 1,
    "server_command": "bit-serve BUNDLE --backend ort-cpu --threads 2 --max-batch 8 --http-port 18300 "
    "--grpc-port 18301 --metrics-port 18302",
    "ray_command": f"bit-serve BUNDLE --ray 127.0.0.1:6379 --detach --backend ort-cpu --min-replicas {n} "
    f"--max-replicas {n} --max-replicas-per-node 1 --replica-cpus 1 --http-port 8000",
    "env": "RAY_AUTH_MODE=token RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0 RAY_USAGE_STATS_ENABLED=0",
    "loadavg_before": open(f"{tmp}/load_before_{n}").read().split()[:3],
    "loadavg_after": open(f"{tmp}/load_after_{n}").read().split()[:3],
    "bench_started_at": int(open(f"{tmp}/start_{n}").read()),
    "bench_ended_at": int(open(f"{tmp}/end_{n}").read()),
}
with open(path, "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
EOF
done
.venv/bin/ray stop --force > /dev/null 2>&1 || true
rm -rf "$RAY_TMPDIR"
