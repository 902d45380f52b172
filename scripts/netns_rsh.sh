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
# Is there a namespace named $1? (awk reads the whole list: `ip netns list | grep -q` under pipefail fails at
# random when grep exits on the match before the writer is done and the writer dies of SIGPIPE.)
netns_exists() { ip netns list 2>/dev/null | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'; }

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
if netns_exists "$host"; then
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
netns_exists "$ns" || die "no namespace '$ns' for host '$host'"

# Every "host" is this machine with its hostname and /tmp: daemons of two hosts would share Open MPI's session
# directory (/tmp/ompi.HOSTNAME.UID/...) and race to create it ("mkdir: File exists", and the daemon that
# lost dies, leaving mpirun waiting for it). Each namespace gets a session directory of its own.
session_dir="/run/uneven-netns/tmp/$ns"
mkdir -p "$session_dir" || die "cannot create $session_dir"
export OMPI_MCA_orte_tmpdir_base="$session_dir"

# Like sshd: the command words form one shell command line.
exec ip netns exec "$ns" /bin/sh -c "$*"
