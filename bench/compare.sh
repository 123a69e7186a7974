#!/usr/bin/env bash
# Compare the consumer at an older commit with the working tree, side by
# side in one run: both binaries are this bench program (same harness, same
# handler, same bare loop), one built against the library at <commit>, the
# other against the working tree; rounds alternate between them.
#
#   bench/compare.sh <commit> [rounds] [extra bench flags...]
#
# Prints each round's RESULT lines prefixed with "before" or "after", then
# the medians and the after/before ratios of msgs/s and CPU per message.
set -euo pipefail
commit=${1:?usage: bench/compare.sh <commit> [rounds] [bench flags...]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/before" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

git -C "$root" worktree add -q --detach "$tmp/before" "$commit"
rm -rf "$tmp/before/bench"
cp -r "$here" "$tmp/before/bench"
# The fanout mode needs taskstream; leave it out for commits older than it.
[ -d "$tmp/before/taskstream" ] || rm -f "$tmp/before/bench"/fanout*.go
# Config.MaxReadAheadBytes (-readahead) came later too: older commits run
# without it.
grep -q MaxReadAheadBytes "$tmp/before/config.go" || sed -i '/MaxReadAheadBytes/d' "$tmp/before/bench/impl_completion.go"
(cd "$tmp/before/bench" && go build -o "$tmp/before.bin" .)
(cd "$here" && go build -o "$tmp/after.bin" .)

flags=(-mode throughput -impl completion,bare-go-redis -runs 1 -md "" -svg "" "$@")
out="$tmp/results"
for ((i = 1; i <= rounds; i++)); do
	for side in before after; do
		"$tmp/$side.bin" "${flags[@]}" 2>/dev/null | grep '^RESULT' | sed "s/^/$side /" | tee -a "$out"
	done
done

echo
echo "medians over $rounds rounds (load average: $(cut -d' ' -f1-3 /proc/loadavg)):"
awk '
function field(name,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] } return "" }
{ key = $1 " " field("impl") " c=" field("concurrency"); tp[key] = tp[key] " " field("msgs_per_s"); cpu[key] = cpu[key] " " field("cpu_us_per_msg") }
function median(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t } return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
END {
	for (k in tp) { m_tp[k] = median(tp[k]); m_cpu[k] = median(cpu[k]); printf "  %-36s msgs/s %8.0f  cpu_us/msg %6.2f\n", k, m_tp[k], m_cpu[k] }
	for (k in tp) if (k ~ /^after completion/) {
		b = k; sub(/^after/, "before", b)
		bare = k; sub(/completion/, "bare-go-redis", bare); sub(/ c=[0-9]+/, " c=1", bare)
		if (b in m_tp) printf "  %s: after/before msgs/s %.2fx, cpu/msg %.2fx\n", substr(k, 7), m_tp[k] / m_tp[b], m_cpu[k] / m_cpu[b]
		if (bare in m_tp) printf "  %s: against the bare loop (same binary): msgs/s %.2fx, cpu/msg %.2fx\n", substr(k, 7), m_tp[k] / m_tp[bare], m_cpu[k] / m_cpu[bare]
	}
}' "$out" | sort
