#!/usr/bin/env bash
# Resolve Apache Kafka 3.9.1's jars (the broker of the Kafka bridge tests) from Maven
# Central into a cache directory, $STREAMLOG_KAFKA_HOME/lib (default
# ~/.cache/streamlog-kafka/3.9.1). Idempotent: returns at once when the jars are there.
# Needs Java 17+ and Maven. Prints the directory on its last line.
set -euo pipefail
VERSION=3.9.1
HOME_DIR="${STREAMLOG_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/streamlog-kafka/$VERSION}"
LIB="$HOME_DIR/lib"
if [ -f "$LIB/.complete" ] && compgen -G "$LIB/kafka_2.13-$VERSION.jar" >/dev/null; then
  echo "kafka $VERSION jars already in $LIB"; echo "$HOME_DIR"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamlog</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
POM
# Copy into a fresh directory, then move it into place: an interrupted run leaves no
# half-filled lib/ behind (the .complete marker is written last).
mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$work/lib" -DincludeScope=runtime
touch "$work/lib/.complete"
mkdir -p "$HOME_DIR"
rm -rf "$LIB"
mv "$work/lib" "$LIB"
echo "installed kafka $VERSION: $(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
echo "$HOME_DIR"
