#!/usr/bin/env bash
# mpirun's "ssh" for a cluster made by scripts/netns_cluster.sh: runs the command inside the namespace of the
# host instead of on another machine.
#
# Usage (by mpirun, through --mca plm_rsh_agent; netns_cluster.sh run sets it up):
#   UNEVEN_NETNS_PREFIX=P scripts/netns_rsh.sh [ssh-style options] HOST COMMAND...
#   HOST: 10.77.S.(K+1) (the address of host K, as in the hostfile) or the namespace name PK itself.
#   The namespace is found from UNEVEN_NETNS_PREFIX, or else by looking the address up in the state
#   files /run/uneven-netns/*.hosts. COMMAND's words are joined and run by sh -c, as sshd would.
set -euo pipefail

die() { echo "netns_rsh: $*" >&2; exit 255; }

# ssh-style options mpirun may put before the host (-x, -T, -n; -l USER / -o OPT / -p PORT take a value).
while (( $# > 0 )); do
  case "$1" in
    -l|-o|-p|-i|-F) shift 2 ;;
    -[A-Za-z]*) shift ;;
    *) break ;;
  esac
done
(( $# >= 2 )) || die "usage: netns_rsh.sh HOST COMMAND..."
host="$1"; shift

ns=""
if ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$host"; then
  ns="$host"
elif [[ "$host" =~ ^10\.77\.([0-9]+)\.([0-9]+)$ ]]; then
  subnet="${BASH_REMATCH[1]}" k=$(( BASH_REMATCH[2] - 1 ))
  if [[ -n "${UNEVEN_NETNS_PREFIX:-}" ]]; then
    ns="${UNEVEN_NETNS_PREFIX}${k}"
  else
    for f in /run/uneven-netns/*.hosts; do
      [[ -f "$f" ]] || continue
      p="$(basename "$f" .hosts)"
      if grep -q "^SUBNET=$subnet\$" "/run/uneven-netns/$p" 2>/dev/null; then ns="${p}${k}"; break; fi
    done
  fi
fi
[[ -n "$ns" ]] || die "cannot map host '$host' to a namespace (set UNEVEN_NETNS_PREFIX)"
ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$ns" || die "no namespace '$ns' for host '$host'"

# Like sshd: the command words form one shell command line.
exec ip netns exec "$ns" /bin/sh -c "$*"
