#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker and controller in one process) on 127.0.0.1,
# for the Kafka bridge tests, docs and benchmarks.
#
#   scripts/kafka.sh start [DIR]   # format DIR (once) and start; returns when it accepts clients
#   scripts/kafka.sh stop [DIR]    # SIGTERM, then SIGKILL after KAFKA_GRACE seconds (default 15)
#
# DIR (default /tmp/streamlog-kafka) holds server.properties, the data and kafka.log.
# KAFKA_PORT: the PLAINTEXT listener (default 9092); KAFKA_SASL_PORT (optional): a second
# listener with SASL_PLAINTEXT, PLAIN and SCRAM-SHA-256, user KAFKA_SASL_USER (default
# alice) with password KAFKA_SASL_PASSWORD (default alice-secret). The jars come from
# scripts/install-kafka.sh (run here when missing); STREAMLOG_KAFKA_HOME overrides where.
set -euo pipefail
cmd="${1:-}"
DIR="${2:-/tmp/streamlog-kafka}"
HERE="$(cd "$(dirname "$0")" && pwd)"
GRACE="${KAFKA_GRACE:-15}"
pid_of() { [ -f "$DIR/kafka.pid" ] && cat "$DIR/kafka.pid"; }
alive() { local pid; pid="$(pid_of)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
case "$cmd" in
start)
  KAFKA_HOME="$("$HERE/install-kafka.sh" | tail -n1)"
  LIB="$KAFKA_HOME/lib"
  PORT="${KAFKA_PORT:-9092}"
  mkdir -p "$DIR"
  if alive; then echo "kafka already running in $DIR (pid $(pid_of))"; exit 0; fi
  if [ ! -f "$DIR/server.properties" ]; then
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    CPORT="$(free_port)"
    listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
    protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl=""
    scram=()
    if [ -n "${KAFKA_SASL_PORT:-}" ]; then
      user="${KAFKA_SASL_USER:-alice}"; password="${KAFKA_SASL_PASSWORD:-alice-secret}"
      listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
      protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT"
      sasl="sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user=\"$password\";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
      scram=(--add-scram "SCRAM-SHA-256=[name=$user,password=$password]")
    fi
    cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=$listeners
advertised.listeners=${listeners/,CONTROLLER:\/\/127.0.0.1:$CPORT/}
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=2000
$sasl
PROPS
    cat >"$DIR/log4j.properties" <<'PROPS'
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
    cluster="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    java -Xmx256m -Dlog4j.configuration="file:$DIR/log4j.properties" -cp "$LIB/*" kafka.tools.StorageTool \
      format -t "$cluster" -c "$DIR/server.properties" ${scram[@]+"${scram[@]}"} >"$DIR/format.log" 2>&1 \
      || { cat "$DIR/format.log" >&2; exit 1; }
  fi
  PORT="$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$DIR/server.properties")"
  # Its own session (process group): stop ends the JVM and nothing else.
  setsid java ${KAFKA_HEAP:--Xms128m -Xmx512m} -XX:+UseSerialGC -Dlog4j.configuration="file:$DIR/log4j.properties" \
    -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" >>"$DIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$DIR/kafka.pid"
  for _ in $(seq 1 600); do
    alive || { echo "kafka exited; its log:" >&2; tail -n 40 "$DIR/kafka.log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "kafka up at 127.0.0.1:$PORT (pid $(pid_of))"; exit 0; fi
    sleep 0.1
  done
  echo "kafka did not accept connections within 60 s" >&2; exit 1
  ;;
stop)
  if alive; then
    pid="$(pid_of)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 $((GRACE * 10))); do alive || break; sleep 0.1; done
    if alive; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  fi
  rm -f "$DIR/kafka.pid"
  ;;
*)
  echo "usage: $0 start|stop [DIR]" >&2; exit 2
  ;;
esac
