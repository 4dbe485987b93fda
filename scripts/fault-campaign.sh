#!/usr/bin/env bash
# The fault campaign of docs/reliability.md (issue 6): runs the workloads on clusters whose
# wire loses, duplicates, reorders and delays packets, and kills a node and a NIC process
# mid-run. Prints one markdown table row per case (and keeps every run's output).
#
#   scripts/fault-campaign.sh                # all cases, release binary
#   CASES="loss1 dup" scripts/fault-campaign.sh
#   CVMM=target/debug/cvmm OUT=/tmp/fc scripts/fault-campaign.sh
#
# Needs root (userfaultfd, namespaces, killing nodes), jq, and a built cvmm
# (`cargo build --release -p host-vmm`). Nothing may hang: every run has a timeout
# (TIMEOUT seconds) and a run that reaches it is reported as HANG.
#
# Faults: `--wire-loss P` drops, duplicates and reorders each with probability P on
# sending and on receiving at every node; CVMM_WIRE_FAULTS sets them apart and adds delay
# jitter (dpdk-transport's LossyDatagram; see docs/reliability.md). `tc netem` on the veths
# of a `--netns` cluster is used when the kernel has sch_netem (checked at start).
set -u

CVMM=${CVMM:-target/release/cvmm}
OUT=${OUT:-target/fault-campaign}
NODES=${NODES:-2}
VPS=${VPS:-1}
TIMEOUT=${TIMEOUT:-600}
CASES=${CASES:-"base loss1 loss5 loss20 drop20 dup reorder jitter netem offload5 dpdk5 killnode killnic"}
WORKLOADS=("matmul 64" "sort 1000" "counter 2000" "litmus mp 2000")

command -v jq >/dev/null || { echo "fault-campaign: needs jq" >&2; exit 1; }
[ -x "$CVMM" ] || { echo "fault-campaign: no cvmm at $CVMM (cargo build --release -p host-vmm)" >&2; exit 1; }
mkdir -p "$OUT"

# The result line each workload must print, computed independently in tests/src/lib.rs.
expected() {
    local vps=$((NODES * VPS))
    case "$1" in
        "matmul 64") echo "matmul 64 checksum = 60153385783" ;;
        "sort 1000") echo "sort 1000 checksum = 8247610901320931311" ;;
        "counter 2000") echo "counter = $((vps * 2000))" ;;
        "litmus mp 2000") echo "litmus mp forbidden = 0 allowed = 2000" ;;
    esac
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Does this kernel have sch_netem? Tried in a scratch namespace, not on the host.
netem_available() {
    local ns="cvmm-netem-probe-$$"
    ip netns add "$ns" 2>/dev/null || return 1
    ip -n "$ns" link set lo up
    local ok=1
    ip netns exec "$ns" tc qdisc add dev lo root netem delay 1ms 2>/dev/null && ok=0
    ip netns del "$ns"
    return $ok
}

# Applies `netem $NETEM` to the veth of every namespace of the cvmm run with pid $1.
apply_netem() {
    local tag=$(($1 % 100000)) deadline=$((SECONDS + 30))
    local done_ns=""
    while [ $SECONDS -lt $deadline ] && kill -0 "$1" 2>/dev/null; do
        for ns in $(ip netns list | awk '{print $1}' | grep "^cvmm${tag}n"); do
            case " $done_ns " in *" $ns "*) continue ;; esac
            local ifc
            ifc=$(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -v '^lo$' | head -1)
            [ -n "$ifc" ] && ip netns exec "$ns" tc qdisc add dev "$ifc" root netem $NETEM && done_ns="$done_ns $ns"
        done
        [ "$(echo $done_ns | wc -w)" -ge "$NODES" ] && return 0
        sleep 0.05
    done
}

# run_workloads CASE FAULT_ENV EXTRA_FLAGS...: every workload once; prints a table row.
run_workloads() {
    local case=$1 env=$2
    shift 2
    local exact=0 total=0 retx=0 injected=0 worst=0 notes="" times=""
    for w in "${WORKLOADS[@]}"; do
        local tag="${case}-${w// /_}" start end code
        local stats="$OUT/$tag.json"
        rm -f "$stats"
        start=$(now)
        if [ "$case" = netem ]; then
            env $env timeout -k 5 "$TIMEOUT" "$CVMM" run --nodes "$NODES" --vps-per-node "$VPS" \
                --mem-mib 16 --stats-json "$stats" "$@" -- $w >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
            local pid=$!
            # `timeout` runs cvmm as its child: the namespaces carry cvmm's pid.
            sleep 0.2
            apply_netem "$(pgrep -P $pid -f 'cvmm run' | head -1)" &
            wait $pid
            code=$?
        else
            env $env timeout -k 5 "$TIMEOUT" "$CVMM" run --nodes "$NODES" --vps-per-node "$VPS" \
                --mem-mib 16 --stats-json "$stats" "$@" -- $w >"$OUT/$tag.out" 2>"$OUT/$tag.err"
            code=$?
        fi
        end=$(now)
        total=$((total + 1))
        local want
        want=$(expected "$w")
        if [ $code -eq 124 ] || [ $code -eq 137 ]; then
            notes="$notes HANG:${w// /_}"
        elif [ $code -ne 0 ]; then
            notes="$notes exit$code:${w// /_}"
        elif sed 's/^\[n[0-9]*\] //' "$OUT/$tag.out" | grep -qxF "$want"; then
            exact=$((exact + 1))
        else
            notes="$notes WRONG:${w// /_}"
        fi
        if [ -s "$stats" ]; then
            retx=$((retx + $(jq '[.nodes[] | (.retransmits // 0)] | add // 0' "$stats")))
            injected=$((injected + $(jq '[.nodes[] | .transport.peers[]? | .injected | (.dropped_tx + .dropped_rx + .duplicated + .reordered)] | add // 0' "$stats")))
        fi
        times="$times $(elapsed "$start" "$end")"
    done
    printf '| %s | %s | %s | %d/%d | %d | %d |%s | %s |\n' "$case" "${env:-none} $*" \
        "matmul 64, sort 1000, counter 2000, litmus mp 2000" "$exact" "$total" "$retx" "$injected" \
        "$times" "${notes:-}"
}

# Pids of the children of $1 whose command line contains $2 and `--id $3` (the binary
# may have any name: match the subcommand).
child_with_id() {
    ps -o pid=,args= --ppid "$1" | awk -v what="$2" -v id="$3" \
        'index($0, what) && index($0, "--id " id) { print $1 }'
}

# kill_case CASE WHAT: a long run; kill node 1's node process (WHAT=node) or NIC process
# (WHAT=nic) after 3 s; the cluster must stop by itself and say which node failed.
kill_case() {
    local case=$1 what=$2 flags=()
    [ "$what" = nic ] && flags=(--fabric offload)
    local err="$OUT/$case.err"
    "$CVMM" run --nodes 3 --mem-mib 16 "${flags[@]}" -- litmus mp 100000000 >"$OUT/$case.out" 2>"$err" &
    local launcher=$! victim="" start=$SECONDS
    while [ -z "$victim" ] && [ $((SECONDS - start)) -lt 60 ]; do
        sleep 0.5
        [ $((SECONDS - start)) -lt 3 ] && continue
        local node
        node=$(child_with_id "$launcher" " node --config" 1)
        if [ "$what" = node ]; then
            victim=$node
        elif [ -n "$node" ]; then
            victim=$(child_with_id "$node" " nic --config" 1)
        fi
    done
    if [ -z "$victim" ]; then
        kill "$launcher" 2>/dev/null
        printf '| %s | kill the %s of node 1 | litmus mp (endless) | - | - | - | - | could not find the process |\n' "$case" "$what"
        return
    fi
    local killed stopped code
    killed=$(now)
    kill -9 "$victim"
    local waited=0
    while kill -0 "$launcher" 2>/dev/null && [ $waited -lt 600 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$launcher" 2>/dev/null; then
        kill -9 "$launcher"
        code=HANG
    else
        wait "$launcher"
        code=$?
    fi
    stopped=$(now)
    local left
    left=$(pgrep -f "cvmm-run-$launcher-" | wc -l)
    local said="no"
    grep -q "node 1" "$err" && said="yes"
    printf '| %s | kill -9 the %s process of node 1 (3 nodes) | litmus mp (endless) | stop: exit %s | - | - | %s s | names node 1: %s; processes left: %s |\n' \
        "$case" "$what" "$code" "$(elapsed "$killed" "$stopped")" "$said" "$left"
}

echo "| case | faults | workloads | exact | retransmits | injected faults | seconds per workload | notes |"
echo "|---|---|---|---|---|---|---|---|"
for c in $CASES; do
    case $c in
        base) run_workloads base "" ;;
        loss1) run_workloads loss1 "" --wire-loss 0.01 ;;
        loss5) run_workloads loss5 "" --wire-loss 0.05 ;;
        loss20) run_workloads loss20 "" --wire-loss 0.2 ;;
        drop20) run_workloads drop20 "CVMM_WIRE_FAULTS=drop=0.2" ;;
        dup) run_workloads dup "CVMM_WIRE_FAULTS=dup=0.2" ;;
        reorder) run_workloads reorder "CVMM_WIRE_FAULTS=reorder=0.2" ;;
        jitter) run_workloads jitter "CVMM_WIRE_FAULTS=jitter_us=2000" ;;
        netem)
            if netem_available; then
                NETEM=${NETEM:-"delay 1ms 1ms loss 1% duplicate 1% reorder 5%"}
                run_workloads netem "" --netns
            else
                echo "| netem | tc qdisc netem on the veths (--netns) | - | - | - | - | - | not run: this kernel has no sch_netem (\`tc qdisc add ... netem\` fails: \"Specified qdisc kind is unknown\") |"
            fi
            ;;
        offload5) run_workloads offload5 "" --wire-loss 0.05 --fabric offload ;;
        dpdk5) run_workloads dpdk5 "" --wire-loss 0.05 --transport dpdk ;;
        killnode) kill_case killnode node ;;
        killnic) kill_case killnic nic ;;
        *) echo "fault-campaign: unknown case $c" >&2 ;;
    esac
done
