#!/usr/bin/env bash
# A cluster of network namespaces on one machine: every byte between ranks crosses a shaped veth link.
#
# Usage (as root):
#   scripts/netns_cluster.sh up N PROFILE [PREFIX [SUBNET]]   create N "hosts"; prints PREFIX on stdout
#   scripts/netns_cluster.sh down PREFIX                       remove everything `up` made for PREFIX
#   scripts/netns_cluster.sh run PREFIX -- MPIRUN-ARGS...      one rank per namespace through mpirun (TCP only)
#   scripts/netns_cluster.sh exec PREFIX K -- CMD...           run CMD inside namespace K
#   scripts/netns_cluster.sh addr PREFIX K                     the address of namespace K
#   scripts/netns_cluster.sh show PREFIX                       qdiscs and addresses (for a look)
#
#   PROFILE: none | thunderbolt (20 Gbit/s, 10 us one way) | 10gbe (10 Gbit/s, 25 us)
#            | 1gbe (1 Gbit/s, 75 us) | wifi (300 Mbit/s, 1.5 ms +- 0.5 ms jitter)
#   PREFIX  (or env UNEVEN_NETNS_PREFIX): namespaces are PREFIX0..PREFIX{N-1} plus PREFIXbr (the bridge);
#            default "uneven<pid>-", unique per call.
#   SUBNET  (or env UNEVEN_NETNS_SUBNET): host K gets 10.77.SUBNET.(K+1)/24; default from the pid.
#   UNEVEN_NETNS_DELAY: auto (default: netem if the kernel has it, else the delay line, else rate only
#            with a warning) | netem | delayline | off
#   UNEVEN_DELAYLINE: path of the uneven_delayline program (default: looked up under build*/).
#
# Example:
#   p=$(sudo scripts/netns_cluster.sh up 2 10gbe)
#   sudo scripts/netns_cluster.sh run "$p" -- ./build/uneven generate --model m.gguf --prompt hi --split 3,1
#   sudo scripts/netns_cluster.sh down "$p"
#
# Layout: host K is namespace PREFIXK with eth0 (10.77.S.(K+1)); its veth peer vK lives in namespace PREFIXbr,
# which holds bridge br0. Without delay, vK is a bridge port. With the delay line, vK is not: a second veth
# pair dK <-> bK joins it to the bridge and uneven_delayline (running in PREFIXbr) forwards frames between vK
# and dK, each direction delayed by half the profile's one-way delay (a frame from host A to host B passes
# A's line outward and B's line inward). Rate: tbf on eth0 (host -> bridge) and on vK (bridge -> host).
# Nothing is created in, or changed on, the root namespace. State: /run/uneven-netns/PREFIX.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
state_root=/run/uneven-netns

die() { echo "netns_cluster: $*" >&2; exit 1; }
warn() { echo "netns_cluster: warning: $*" >&2; }
usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# PROFILE -> "rate_mbit delay_us jitter_us" (rate 0: unshaped)
profile_params() {
  case "$1" in
    none) echo "0 0 0" ;;
    thunderbolt) echo "20000 10 0" ;;
    10gbe) echo "10000 25 0" ;;
    1gbe) echo "1000 75 0" ;;
    wifi) echo "300 1500 500" ;;
    *) die "unknown profile '$1' (none, thunderbolt, 10gbe, 1gbe, wifi)" ;;
  esac
}

valid_prefix() { [[ "$1" =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "bad prefix '$1' (letters, digits, _ . - only)"; }

find_delayline() {
  if [[ -n "${UNEVEN_DELAYLINE:-}" ]]; then echo "$UNEVEN_DELAYLINE"; return; fi
  local c
  for c in "$repo"/build/tools/delayline/uneven_delayline "$repo"/build*/tools/delayline/uneven_delayline \
           "$repo"/build/uneven_delayline; do
    [[ -x "$c" ]] && { echo "$c"; return; }
  done
  return 0
}

# Does this kernel have netem? Probed on the loopback of a scratch namespace.
have_netem() {
  local ns="${1}probe"
  ip netns add "$ns" 2>/dev/null || return 1
  local ok=1
  tc -n "$ns" qdisc add dev lo root netem delay 1ms 2>/dev/null && ok=0
  ip netns del "$ns" 2>/dev/null || true
  return $ok
}

# tbf on DEV in NS at RATE Mbit/s (parent: "root" or "parent X:Y").
add_tbf() {
  local ns="$1" dev="$2" mbit="$3" parent="$4"
  # Bucket: 100 us at line rate, at least 64 KB (a whole GSO frame), so shaping does not add its own delay.
  local burst=$(( mbit * 1000000 / 8 / 10000 ))
  (( burst < 65536 )) && burst=65536
  # shellcheck disable=SC2086
  tc -n "$ns" qdisc add dev "$dev" $parent handle 10: tbf rate "${mbit}mbit" burst "$burst" latency 50ms
}

# Shape DEV: rate, plus netem delay of DELAY_US (+- JITTER_US) when asked.
shape_dev() {
  local ns="$1" dev="$2" mbit="$3" delay_us="$4" jitter_us="$5"
  if (( delay_us > 0 )); then
    local jit=""
    (( jitter_us > 0 )) && jit="${jitter_us}us"
    # shellcheck disable=SC2086
    tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "${delay_us}us" $jit limit 100000
    (( mbit > 0 )) && add_tbf "$ns" "$dev" "$mbit" "parent 1:1"
  elif (( mbit > 0 )); then
    add_tbf "$ns" "$dev" "$mbit" root
  fi
  return 0
}

# Can namespace NS reach ADDR? A TCP connect to a closed port: refused (RST) means the host answered.
# (No ping needed.)
reachable() {
  local out
  out="$(timeout 2 ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/9" 2>&1)" && return 0
  [[ "$out" == *refused* ]]
}

state_file() { echo "$state_root/$1"; }

cmd_down() {
  local prefix="$1"
  valid_prefix "$prefix"
  local sf; sf="$(state_file "$prefix")"
  # Delay lines first (by pid, only if the pid is still one of ours).
  if [[ -f "$sf" ]]; then
    local pid
    for pid in $(sed -n 's/^DELAYLINE_PID=//p' "$sf"); do
      if [[ -r /proc/$pid/cmdline ]] && [[ "$(tr '\0' ' ' </proc/"$pid"/cmdline)" == *uneven_delayline* ]]; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done
    for pid in $(sed -n 's/^DELAYLINE_PID=//p' "$sf"); do
      local i=0
      while [[ -d /proc/$pid ]] && (( i < 50 )); do sleep 0.1; i=$((i + 1)); done
      if [[ -r /proc/$pid/cmdline ]] && [[ "$(tr '\0' ' ' </proc/"$pid"/cmdline)" == *uneven_delayline* ]]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  fi
  # Namespaces PREFIX<digits>, PREFIXbr, PREFIXprobe: deleting a namespace deletes its veth ends too, but
  # not the processes in it (a rank or an mpirun daemon cut off by a fault test): those are ended first.
  local ns ours=()
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    if [[ "$ns" == "${prefix}br" || "$ns" == "${prefix}probe" ]] ||
       [[ "${ns#"$prefix"}" != "$ns" && "${ns#"$prefix"}" =~ ^[0-9]+$ ]]; then
      ours+=("$ns")
    fi
  done
  local left=""
  for ns in "${ours[@]}"; do left+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"; done
  if [[ -n "${left// /}" ]]; then
    kill -CONT $left 2>/dev/null || true
    kill -TERM $left 2>/dev/null || true
    local i=0
    while (( i < 20 )) && kill -0 $left 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    kill -KILL $left 2>/dev/null || true
  fi
  for ns in "${ours[@]}"; do ip netns del "$ns" 2>/dev/null || warn "could not delete namespace $ns"; done
  rm -f "$sf" "$sf.hosts"
  rm -rf "$state_root/$prefix.logs"
  rm -rf "$state_root/tmp/$prefix"[0-9]*  # the hosts' Open MPI session directories (netns_rsh.sh)
}

up_prefix=""
on_up_exit() {
  local rc=$?
  if [[ -n "$up_prefix" ]]; then
    echo "netns_cluster: up failed (exit $rc), cleaning up $up_prefix" >&2
    cmd_down "$up_prefix" || true
  fi
  exit "$rc"
}

cmd_up() {
  (( $# >= 2 )) || usage
  local n="$1" profile="$2"
  local prefix="${3:-${UNEVEN_NETNS_PREFIX:-uneven$$-}}"
  local subnet="${4:-${UNEVEN_NETNS_SUBNET:-$(( ($$ % 200) + 20 ))}}"
  [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 250 )) || die "N must be 1..250"
  [[ "$subnet" =~ ^[0-9]+$ ]] && (( subnet <= 255 )) || die "SUBNET must be 0..255"
  valid_prefix "$prefix"
  (( EUID == 0 )) || die "must run as root (ip netns)"
  profile_params "$profile" >/dev/null
  local mbit delay_us jitter_us
  read -r mbit delay_us jitter_us <<<"$(profile_params "$profile")"
  ip netns list | awk -v n="${prefix}br" '$1 == n { found = 1 } END { exit !found }' && die "prefix '$prefix' is in use (down it first)"

  mkdir -p "$state_root"
  local sf; sf="$(state_file "$prefix")"
  # From here on, a failure (or a signal) tears down what was made.
  up_prefix="$prefix"
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM HUP
  { echo "N=$n"; echo "PROFILE=$profile"; echo "SUBNET=$subnet"; } >"$sf"

  # How to delay.
  local mode="${UNEVEN_NETNS_DELAY:-auto}" delayline=""
  if (( delay_us == 0 )); then
    mode=off
  elif [[ "$mode" == auto ]]; then
    if have_netem "$prefix"; then mode=netem
    else
      delayline="$(find_delayline)"
      if [[ -n "$delayline" ]]; then mode=delayline
      else
        warn "no netem in this kernel and no uneven_delayline built (ninja -C build uneven_delayline):" \
             "profile '$profile' is shaped by rate only, without its ${delay_us} us delay"
        mode=off
      fi
    fi
  elif [[ "$mode" == delayline ]]; then
    delayline="$(find_delayline)"
    [[ -n "$delayline" ]] || die "UNEVEN_NETNS_DELAY=delayline but uneven_delayline is not built"
  elif [[ "$mode" == off ]]; then
    warn "UNEVEN_NETNS_DELAY=off: profile '$profile' without its ${delay_us} us delay"
  fi
  echo "DELAY_MODE=$mode" >>"$sf"

  local br="${prefix}br"
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  # No STP, forward at once.
  ip -n "$br" link set br0 type bridge stp_state 0 forward_delay 0 2>/dev/null || true
  ip -n "$br" link set br0 up
  ip netns exec "$br" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true

  local k ns half_us=$(( delay_us / 2 )) half_jit=$(( jitter_us / 2 ))
  for (( k = 0; k < n; k++ )); do
    ns="${prefix}${k}"
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
    ip -n "$ns" link set lo up
    # The pair is made inside the bridge namespace with its other end put straight into the host namespace.
    ip -n "$br" link add "v$k" type veth peer name eth0 netns "$ns"
    ip -n "$ns" addr add "10.77.$subnet.$(( k + 1 ))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$br" link set "v$k" up
    case "$mode" in
      delayline)
        ip -n "$br" link add "d$k" type veth peer name "b$k"
        ip -n "$br" link set "b$k" master br0
        ip -n "$br" link set "b$k" up
        ip -n "$br" link set "d$k" up
        shape_dev "$ns" eth0 "$mbit" 0 0
        shape_dev "$br" "v$k" "$mbit" 0 0
        mkdir -p "$state_root/$prefix.logs"
        local args=(--a "v$k" --b "d$k" --delay-us "$half_us")
        (( half_jit > 0 )) && args+=(--jitter-us "$half_jit")
        ip netns exec "$br" setsid "$delayline" "${args[@]}" \
          </dev/null >"$state_root/$prefix.logs/delayline$k.log" 2>&1 &
        echo "DELAYLINE_PID=$!" >>"$sf"
        ;;
      netem)
        ip -n "$br" link set "v$k" master br0
        shape_dev "$ns" eth0 "$mbit" "$half_us" "$half_jit"
        shape_dev "$br" "v$k" "$mbit" "$half_us" "$half_jit"
        ;;
      off)
        ip -n "$br" link set "v$k" master br0
        shape_dev "$ns" eth0 "$mbit" 0 0
        shape_dev "$br" "v$k" "$mbit" 0 0
        ;;
      *) die "UNEVEN_NETNS_DELAY must be auto, netem, delayline or off" ;;
    esac
    echo "10.77.$subnet.$(( k + 1 )) slots=1" >>"$sf.hosts"
  done

  # Every host reaches every other (bounded wait: the delay lines and the bridge need a moment).
  local ok=0 tries
  for (( tries = 0; tries < 20; tries++ )); do
    ok=1
    for (( k = 1; k < n; k++ )); do
      reachable "${prefix}0" "10.77.$subnet.$(( k + 1 ))" || { ok=0; break; }
    done
    (( ok )) && break
    sleep 0.1
  done
  (( ok )) || die "hosts cannot reach each other across the bridge"
  up_prefix=""
  trap - EXIT INT TERM HUP
  echo "$prefix"
}

read_state() {
  local prefix="$1" sf
  valid_prefix "$prefix"
  sf="$(state_file "$prefix")"
  [[ -f "$sf" ]] || die "no cluster '$prefix' (no $sf)"
  N="$(sed -n 's/^N=//p' "$sf")"
  SUBNET="$(sed -n 's/^SUBNET=//p' "$sf")"
}

cmd_run() {
  local prefix="$1"; shift
  [[ "${1:-}" == "--" ]] && shift
  read_state "$prefix"
  local sf; sf="$(state_file "$prefix")"
  local np=(-np "$N") bind=(--bind-to none) a
  for a in "$@"; do
    [[ "$a" == -np || "$a" == -n || "$a" == --np || "$a" == -c ]] && np=()
    [[ "$a" == --bind-to* ]] && bind=()
  done
  local root=()
  (( EUID == 0 )) && root=(--allow-run-as-root)
  local net="10.77.$SUBNET.0/24"
  # --bind-to none: every "host" is the same machine, and each host's daemon would bind its rank to core 0,
  # so all ranks would share one core and a busy-polling rank would wait out the others' time slices
  # (~4 ms per message). Pass --bind-to yourself to override.
  # mpirun itself runs in host 0 (rank 0 is started there directly; the others through the rsh agent), so
  # its out-of-band channel is on the cluster network too.
  UNEVEN_NETNS_PREFIX="$prefix" UNEVEN_NETNS_SUBNET="$SUBNET" \
    exec ip netns exec "${prefix}0" mpirun "${root[@]}" "${np[@]}" "${bind[@]}" --hostfile "$sf.hosts" \
    -x UNEVEN_NETNS_PREFIX \
    --mca plm_rsh_agent "${UNEVEN_RSH_AGENT:-$here/netns_rsh.sh}" --mca plm_rsh_no_tree_spawn 1 \
    --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include "$net" --mca oob_tcp_if_include "$net" \
    "$@"
}

main() {
  (( $# >= 1 )) || usage
  local cmd="$1"; shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) (( $# == 1 )) || usage; cmd_down "$1" ;;
    run) (( $# >= 1 )) || usage; cmd_run "$@" ;;
    exec)
      (( $# >= 2 )) || usage
      local prefix="$1" k="$2"; shift 2
      [[ "${1:-}" == "--" ]] && shift
      read_state "$prefix"
      exec ip netns exec "${prefix}${k}" "$@" ;;
    addr) (( $# == 2 )) || usage; read_state "$1"; echo "10.77.$SUBNET.$(( $2 + 1 ))" ;;
    show)
      (( $# == 1 )) || usage
      read_state "$1"
      cat "$(state_file "$1")"
      local k
      for (( k = 0; k < N; k++ )); do
        echo "== ${1}$k"; ip -n "${1}$k" -br addr show dev eth0; tc -n "${1}$k" qdisc show dev eth0
        echo "== ${1}br v$k"; tc -n "${1}br" qdisc show dev "v$k"
      done ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
