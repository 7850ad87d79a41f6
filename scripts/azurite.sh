#!/usr/bin/env bash
# Starts and stops the Azurite blob service that the blob sink tests run against.
#
#   eval "$(scripts/azurite.sh start)"   # installs Azurite from package-lock.json if needed, starts it on
#                                        # a free port, prints `export SLUICE_TEST_AZURITE='...'`
#   scripts/azurite.sh stop              # stops the Azurite that start started (by its pid)
#
# Only the export line goes to stdout; everything else goes to stderr. State (pid, port, log) lives in
# .ci/.azurite/ (ignored by git), or in $SLUICE_AZURITE_STATE when set: start while that state's Azurite
# runs prints its export line again, and stop stops it, whoever started it. Give each independent user
# of one work tree its own SLUICE_AZURITE_STATE (.ci/run does).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${SLUICE_AZURITE_STATE:-$root/.ci/.azurite}
pidfile=$state/pid
portfile=$state/port
logfile=$state/azurite.log
bin=$root/node_modules/.bin/azurite-blob

# The development account of the Azure storage emulators: public, documented by Azure.
account=devstoreaccount1
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { echo "azurite.sh: $*" >&2; }

print_export() {
	echo "export SLUICE_TEST_AZURITE='DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$1/$account;'"
}

# ours PID: PID is an Azurite blob service (a pid in a stale file may have been reused by another process).
ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q azurite-blob; }

running() { [[ -f $pidfile ]] && ours "$(cat "$pidfile")"; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
	if running; then
		log "already running (pid $(cat "$pidfile"), port $(cat "$portfile"))"
		print_export "$(cat "$portfile")"
		return
	fi
	if [[ ! -x $bin ]]; then
		log "installing Azurite from package-lock.json (npm ci)"
		(cd "$root" && npm ci --no-audit --no-fund >&2)
	fi
	mkdir -p "$state"
	local port
	port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
	log "starting Azurite blob on 127.0.0.1:$port (log: $logfile)"
	# Started from $state so that nothing Azurite writes lands in the work tree. The pid is node's own:
	# the bin is a node script that env execs.
	(cd "$state" && exec "$bin" --blobHost 127.0.0.1 --blobPort "$port" \
		--inMemoryPersistence --skipApiVersionCheck --loose --disableTelemetry \
		</dev/null >"$logfile" 2>&1) &
	echo $! >"$pidfile"
	echo "$port" >"$portfile"
	local i
	for ((i = 0; i < 300; i++)); do # 30 s at most
		if answers "$port"; then
			log "Azurite is up (pid $(cat "$pidfile"))"
			print_export "$port"
			return
		fi
		# Alive, not "ours": until the subshell has exec'd Azurite its command line is the shell's, which
		# on a busy machine can last long enough to be seen here.
		if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
			log "Azurite exited before it answered; its log:"
			cat "$logfile" >&2
			rm -f "$pidfile" "$portfile"
			exit 1
		fi
		sleep 0.1
	done
	log "Azurite did not answer on port $port within 30 s; stopping it. Its log:"
	cat "$logfile" >&2
	stop
	exit 1
}

stop() {
	if [[ ! -f $pidfile ]]; then
		log "not running (no $pidfile)"
		return
	fi
	local pid i
	pid=$(cat "$pidfile")
	if ours "$pid" && kill "$pid" 2>/dev/null; then
		for ((i = 0; i < 50; i++)); do # 5 s, then SIGKILL
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		log "stopped Azurite (pid $pid)"
	else
		log "Azurite (pid $pid) was not running"
	fi
	rm -f "$pidfile" "$portfile"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
