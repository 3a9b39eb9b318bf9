# Shared by the end-to-end `troupe run` tests: arguments are the troupe binary and the
# source root; gives $troupe, a scratch folder $out (removed on exit), runs from the root,
# and losses FILE (the loss column of a --metrics-out file).
set -euo pipefail
troupe=$1
root=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"
losses() { sed -e 's/.*"loss":\([^,]*\),.*/\1/' "$1"; }
