#!/usr/bin/env bash
# The gateway against nginx, same machine, same run: one route to one upstream (an nginx
# answering a short static body), plain HTTP and TLS driven by wrk, HTTP/2 over TLS driven
# by h2load. Prints requests/s, p50 and p99 latency (h2load: mean), idle and peak RSS for
# both, the ratios, and how many slowloris clients each survives before a normal request
# takes over a second (bench/slowloris.py). No assertion: figures.
#
# usage: bench/gateway.sh [SECONDS per run, default 10] [CONNECTIONS, default 64]
# needs: wrk, nginx (nginx-light), openssl, h2load (nghttp2-client); installs them with apt
# when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${2:-64}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged nginx on port 80; this bench runs its own instances.
  (systemctl disable --now nginx || service nginx stop || true) >/dev/null 2>&1
fi
cargo build --release -q -p gateway
GW=${GW:-target/release/gateway}   # GW=path/to/another/gateway compares a build
W=$(mktemp -d /tmp/gateway-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); NG=$(port); NGS=$(port); GWP=$(port); GWS=$(port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -addext basicConstraints=critical,CA:FALSE \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
mkdir -p "$W/ng-up" "$W/ng-proxy"
cat > "$W/ng-up/nginx.conf" <<CONF
worker_processes 1; pid $W/ng-up/pid; error_log $W/ng-up/error.log; daemon off;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 100000; location / { return 200 "hello from the upstream\n"; } } }
CONF
# nginx as a careful admin sets it up: keep-alive to the upstream, HTTP/1.1, the same
# forwarded headers the gateway sets, an access log like the gateway's (to a file,
# gathered and written every 50 ms as the gateway's is: src/access_log.rs). One worker per
# core, as the gateway runs one thread per core. worker_connections stays at Debian's
# default (768, /etc/nginx/nginx.conf): the slowloris figure compares the gateway with
# nginx as installed (4096 here made nginx hold every step and the figure said nothing).
NG_CONNS=768
cat > "$W/ng-proxy/nginx.conf" <<CONF
worker_processes $(nproc); pid $W/ng-proxy/pid; error_log $W/ng-proxy/error.log; daemon off;
events { worker_connections $NG_CONNS; }
http {
  access_log $W/ng-proxy/access.log combined buffer=64k flush=50ms;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NG; listen 127.0.0.1:$NGS ssl http2; server_name bench.test;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    keepalive_requests 100000;
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
cat > "$W/gateway.toml" <<CONF
[server]
http = "127.0.0.1:$GWP"
https = "127.0.0.1:$GWS"
[tls]
certs = [{ cert = "$W/cert.pem", key = "$W/key.pem" }]
[[route]]
upstream = "http://127.0.0.1:$UP"
CONF
# As the gateway's unit (LimitNOFILE=65536) allows (root may raise the hard limit; else as
# far as this shell's goes): the slowloris count must measure the servers, not the shell's
# descriptor limit (20000 here, which slowloris.py's 16384 clients nearly filled).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
nginx -c "$W/ng-up/nginx.conf" & pids+=($!)
nginx -c "$W/ng-proxy/nginx.conf" & pids+=($!)
"$GW" serve --config "$W/gateway.toml" --threads "$(nproc)" > "$W/gateway.log" 2>&1 & GWPID=$!; pids+=($GWPID)
sleep 1
curl -sf -o /dev/null "http://127.0.0.1:$GWP/" && curl -sf -o /dev/null "http://127.0.0.1:$NG/" || { echo "bench: a server did not start" >&2; cat "$W"/*/error.log "$W/gateway.log" >&2; exit 1; }

# RSS of a process tree in KiB: field 2 of /proc/PID/status lines (VmRSS or VmHWM).
rss() { local field=$1; shift; local t=0; for p in "$@"; do v=$(awk -v f="$field:" '$1==f{print $2}' /proc/$p/status 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo $t; }
ngpids() { local master; master=$(cat "$W/ng-proxy/pid"); echo "$master $(pgrep -P "$master" | tr '\n' ' ')"; }
GW_IDLE=$(rss VmRSS $GWPID); NG_IDLE=$(rss VmRSS $(ngpids))

run() { # name url -> "rps p50 p99"
  # Plain HTTP asks for a name no certificate covers: for bench.test, which it holds a
  # certificate for, the gateway answers 301 to HTTPS instead of proxying (434b67b), and
  # the HTTP figures measured redirects.
  local host=bench.test
  case $2 in http://*) host=plain.test ;; esac
  wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -H "Host: $host" "$2" > "$W/$1.wrk"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/{print $2}' "$W/$1.wrk")
  p50=$(awk '$1=="50%"{print $2}' "$W/$1.wrk")
  p99=$(awk '$1=="99%"{print $2}' "$W/$1.wrk")
  echo "$rps $p50 $p99"
}
echo "== $DUR s per run, $CONNS connections, wrk 2 threads, on $(nproc) cores"
read -r g_rps g_p50 g_p99 < <(run gw-http "http://127.0.0.1:$GWP/")
read -r n_rps n_p50 n_p99 < <(run ng-http "http://127.0.0.1:$NG/")
# wrk over TLS: the name bench.test is sent by SNI through the Host header's absence, so
# connect by address; both servers hold the one certificate.
read -r gs_rps gs_p50 gs_p99 < <(run gw-https "https://127.0.0.1:$GWS/")
read -r ns_rps ns_p50 ns_p99 < <(run ng-https "https://127.0.0.1:$NGS/")
h2run() { # name url -> "rps mean-ms"
  h2load -c"$CONNS" -m10 -t2 -D"$DUR" "$2" > "$W/$1.h2load" 2>&1 || true
  local rps mean
  rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$W/$1.h2load")
  mean=$(awk '/^time for request:/{print $6}' "$W/$1.h2load")
  echo "${rps:-0} ${mean:--}"
}
read -r g2_rps g2_mean < <(h2run gw-h2 "https://127.0.0.1:$GWS/")
read -r n2_rps n2_mean < <(h2run ng-h2 "https://127.0.0.1:$NGS/")
GW_PEAK=$(rss VmHWM $GWPID); NG_PEAK=$(rss VmHWM $(ngpids))
# Slowloris last (it fills both servers with connections): plain HTTP, each server with its
# own timeouts (the gateway's header-read-timeout-secs 10 s, nginx's client_header_timeout 60 s).
echo "slowloris against the gateway:" >&2
read -r g_slow g_broke < <(python3 bench/slowloris.py 127.0.0.1 "$GWP")
echo "slowloris against nginx:" >&2
read -r n_slow n_broke < <(python3 bench/slowloris.py 127.0.0.1 "$NG")

printf "\n%-22s %14s %14s %8s\n" "" "gateway" "nginx" "ratio"
ratio() { python3 -c "print(f'{float(\"$1\")/float(\"$2\"):.2f}x')" 2>/dev/null || echo "-"; }
ms() { python3 -c "
v='$1'
u={'us':1e-3,'ms':1,'s':1e3}
for k in ('us','ms','s'):
    if v.endswith(k): print(f'{float(v[:-len(k)])*u[k]:.2f}'); break
"; }
printf "%-22s %14s %14s %8s\n" "HTTP requests/s" "$g_rps" "$n_rps" "$(ratio "$g_rps" "$n_rps")"
printf "%-22s %14s %14s %8s\n" "HTTP p50 latency ms" "$(ms "$g_p50")" "$(ms "$n_p50")" "$(ratio "$(ms "$g_p50")" "$(ms "$n_p50")")"
printf "%-22s %14s %14s %8s\n" "HTTP p99 latency ms" "$(ms "$g_p99")" "$(ms "$n_p99")" "$(ratio "$(ms "$g_p99")" "$(ms "$n_p99")")"
printf "%-22s %14s %14s %8s\n" "TLS requests/s" "$gs_rps" "$ns_rps" "$(ratio "$gs_rps" "$ns_rps")"
printf "%-22s %14s %14s %8s\n" "TLS p50 latency ms" "$(ms "$gs_p50")" "$(ms "$ns_p50")" "$(ratio "$(ms "$gs_p50")" "$(ms "$ns_p50")")"
printf "%-22s %14s %14s %8s\n" "TLS p99 latency ms" "$(ms "$gs_p99")" "$(ms "$ns_p99")" "$(ratio "$(ms "$gs_p99")" "$(ms "$ns_p99")")"
printf "%-22s %14s %14s %8s\n" "h2 requests/s" "$g2_rps" "$n2_rps" "$(ratio "$g2_rps" "$n2_rps")"
printf "%-22s %14s %14s %8s\n" "h2 mean latency" "$g2_mean" "$n2_mean" ""
printf "%-22s %14s %14s\n" "slowloris survived" "$g_slow" "$n_slow"
printf "%-22s %14s %14s\n" "slowloris broke at" "$g_broke" "$n_broke"
printf "%-22s %14s %14s\n" "idle RSS MiB" "$(python3 -c "print(round($GW_IDLE/1024,1))")" "$(python3 -c "print(round($NG_IDLE/1024,1))")"
printf "%-22s %14s %14s\n" "peak RSS MiB" "$(python3 -c "print(round($GW_PEAK/1024,1))")" "$(python3 -c "print(round($NG_PEAK/1024,1))")"
echo "(nginx: $(nproc) workers of worker_connections $NG_CONNS, Debian's default; gateway: $(nproc) threads, max-connections 16384 by default)"
echo "(ratios: gateway / nginx; nginx RSS is its master plus workers; h2: h2load -m10 over TLS, mean time per request; slowloris: the most slow clients tried (256 up to 16384, doubling) with 5 of 5 normal requests answered within 1 s, and the count that broke it; goals: requests/s >= nginx at an equal or lower p99, idle RSS < 20 MiB, more slow clients survived than nginx)"
