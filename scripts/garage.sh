#!/usr/bin/env bash
# A throwaway Garage cluster on 127.0.0.1, for the object-store tests and
# benchmarks (and for trying tierfs's S3 cold tier by hand).
#
#   scripts/garage.sh up DIR [NODES]   start NODES (1 or 3) fresh nodes under DIR, make a
#                                      bucket "tierfs" and a key; writes DIR/s3.env (mode
#                                      0600: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                                      AWS_REGION, AWS_ENDPOINT) and DIR/endpoint
#   scripts/garage.sh stop DIR [N]     stop node N (0-based), or every node
#   scripts/garage.sh start DIR [N]    start node N again, or every stopped node
#   scripts/garage.sh down DIR         stop every node and delete DIR
#   scripts/garage.sh bucket DIR NAME  make another bucket NAME the key can use
#   scripts/garage.sh deny|allow DIR NAME  take the key's access to bucket NAME away, or give it back
#   scripts/garage.sh readonly DIR NAME    leave the key only read access to bucket NAME
#
# With 3 nodes the bucket is replicated on all three (replication_factor 3)
# and stored uncompressed. Node 0 serves the S3 endpoint.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || {
    sed -n '2,15p' "$0" >&2
    exit 2
}
command -v garage >/dev/null || {
    echo "garage.sh: garage is not installed (scripts/deps.sh installs it)" >&2
    exit 1
}

node_conf() { echo "$dir/node$1/garage.toml"; }
g() { garage -c "$(node_conf "$1")" "${@:2}"; }
nodes() { ls -d "$dir"/node* 2>/dev/null | sed 's/.*node//' | sort -n; }

free_port_base() {
    # Ten consecutive free ports per node, from a random base.
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 60000 - 10 * n, 10)
    ok = True
    for p in range(base, base + 10 * n):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        sys.exit(0)
sys.exit("no free ports")
EOF
}

start_node() {
    local i=$1 pidf="$dir/node$1/pid"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        return
    fi
    setsid garage -c "$(node_conf "$i")" server >>"$dir/node$i/log" 2>&1 </dev/null &
    echo $! >"$pidf"
}

stop_node() {
    local pidf="$dir/node$1/pid"
    [ -f "$pidf" ] || return 0
    local pid
    pid=$(cat "$pidf")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

wait_rpc() {
    for _ in $(seq 100); do
        g "$1" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "garage.sh: node $1 did not come up (see $dir/node$1/log)" >&2
    return 1
}

up() {
    local n=${1:-1}
    [ "$n" = 1 ] || [ "$n" = 3 ] || {
        echo "garage.sh: NODES is 1 or 3" >&2
        exit 2
    }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local base secret
    base=$(free_port_base "$n")
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    for i in $(seq 0 $((n - 1))); do
        local p=$((base + 10 * i))
        mkdir -p "$dir/node$i/meta" "$dir/node$i/data"
        cat >"$(node_conf "$i")" <<EOF
metadata_dir = "$dir/node$i/meta"
data_dir = "$dir/node$i/data"
db_engine = "sqlite"
replication_factor = $n
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$((p + 1))"
rpc_public_addr = "127.0.0.1:$((p + 1))"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$p"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((p + 3))"
EOF
        chmod 0600 "$(node_conf "$i")"
        start_node "$i"
    done
    for i in $(seq 0 $((n - 1))); do wait_rpc "$i"; done
    local ids=()
    for i in $(seq 0 $((n - 1))); do
        ids+=("$(g "$i" node id -q 2>/dev/null)")
    done
    for i in $(seq 1 $((n - 1))); do
        g 0 node connect "${ids[$i]}" >/dev/null
    done
    for i in $(seq 0 $((n - 1))); do
        g 0 layout assign -z "dc$i" -c 1G "${ids[$i]%%@*}" >/dev/null
    done
    g 0 layout apply --version 1 >/dev/null
    g 0 bucket create tierfs >/dev/null
    local key
    key=$(g 0 key create tierfs-key)
    local id secret_key
    id=$(echo "$key" | awk '/Key ID:/ {print $3}')
    secret_key=$(echo "$key" | awk '/Secret key:/ {print $3}')
    g 0 bucket allow --read --write --owner tierfs --key tierfs-key >/dev/null
    (
        umask 077
        cat >"$dir/s3.env" <<EOF
AWS_ACCESS_KEY_ID=$id
AWS_SECRET_ACCESS_KEY=$secret_key
AWS_REGION=garage
AWS_ENDPOINT=http://127.0.0.1:$base
EOF
    )
    echo "http://127.0.0.1:$base" >"$dir/endpoint"
    # The S3 API answers once the layout has reached every node.
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$base/" && break
        sleep 0.1
    done
    echo "garage: $n node(s) up, endpoint http://127.0.0.1:$base, bucket tierfs, credentials $dir/s3.env"
}

case "$cmd" in
up) up "${3:-1}" ;;
stop)
    if [ -n "${3:-}" ]; then stop_node "$3"; else for i in $(nodes); do stop_node "$i"; done; fi
    ;;
start)
    if [ -n "${3:-}" ]; then
        start_node "$3"
        wait_rpc "$3"
    else
        for i in $(nodes); do start_node "$i"; done
        for i in $(nodes); do wait_rpc "$i"; done
    fi
    ;;
bucket)
    [ -n "${3:-}" ] || {
        echo "garage.sh: bucket DIR NAME" >&2
        exit 2
    }
    g 0 bucket create "$3" >/dev/null
    g 0 bucket allow --read --write --owner "$3" --key tierfs-key >/dev/null
    ;;
deny | allow)
    [ -n "${3:-}" ] || {
        echo "garage.sh: $cmd DIR NAME" >&2
        exit 2
    }
    g 0 bucket "$cmd" --read --write --owner "$3" --key tierfs-key >/dev/null
    ;;
readonly)
    [ -n "${3:-}" ] || {
        echo "garage.sh: readonly DIR NAME" >&2
        exit 2
    }
    g 0 bucket allow --read --key tierfs-key "$3" >/dev/null
    g 0 bucket deny --write --owner --key tierfs-key "$3" >/dev/null
    ;;
down)
    for i in $(nodes); do stop_node "$i"; done
    rm -rf "$dir"
    ;;
*)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
