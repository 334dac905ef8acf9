#!/usr/bin/env bash
# Build, vet or test the Go client from Debian's packages alone: golang-go,
# golang-github-varlink-go-dev and golang-golang-x-sys-dev (go.mod points at
# /usr/share/gocode), varlink-go for the generator. Nothing is fetched
# (GOPROXY=off); the build cache lives under the build dir.
#
#   go.sh BUILD_DIR generate          (re)generate the bindings and the module's mirror
#   go.sh BUILD_DIR build PKG NAME    build the command PKG (./cmd/fcmanager-example) as
#                                     BUILD_DIR/NAME
#   go.sh BUILD_DIR vet [TEST...]     go vet ./...; with TESTs, also check that they are
#                                     exactly the package's tests (meson runs each alone)
#   go.sh BUILD_DIR test TEST         go test -run '^TEST$' against a real bangerd (meson's
#                                     env); fails unless TEST ran and passed
#   go.sh BUILD_DIR go ARGS...        any go command with the same environment
#
# The bindings are generated from proto/io.banger.Handles.varlink every time,
# never kept in git. go runs in BUILD_DIR/mod: the module's directories, its
# files as symlinks to the source (so edits count at once), and the
# generated file in internal/iobangerhandles/, its calls taking the Conn of
# conn.go there. (go's -overlay would spare the copy, but go vet 1.19 reads
# the files themselves and misses it.)
set -euo pipefail

src=$(cd "$(dirname "$0")" && pwd)
idl=$src/../../proto/io.banger.Handles.varlink
build=$(mkdir -p "$1" && cd "$1" && pwd)
mode=${2:?usage: go.sh BUILD_DIR generate|build|vet|test|go [ARGS...]}
shift 2

export GOPATH=$build/gopath GOCACHE=$build/gocache GOMODCACHE=$build/gopath/pkg/mod
export GOPROXY=off GOSUMDB=off GO111MODULE=on GOFLAGS= GOENV=off GOTOOLCHAIN=local
export CGO_ENABLED=0

generate() {
	local gen=$build/gen out=$build/gen/iobangerhandles.go
	rm -rf "$gen" "$build/mod"
	mkdir -p "$gen"
	# Debian's varlink-go 0.4.0 accepts only lower-case interface names
	# ([a-z0-9] after each dot), so it reads the IDL with the name lowered and
	# its output gets the real name back: the methods and errors it names on
	# the wire are then exactly the IDL's. Nothing else is changed.
	sed 's/^interface io\.banger\.Handles$/interface io.banger.handles/' "$idl" >"$gen/io.banger.handles.varlink"
	grep -q '^interface io\.banger\.handles$' "$gen/io.banger.handles.varlink" ||
		{ echo "go.sh: $idl does not declare interface io.banger.Handles" >&2; exit 1; }
	(cd "$gen" && varlink-go-interface-generator io.banger.handles.varlink)
	sed -i 's/io\.banger\.handles/io.banger.Handles/g' "$out"
	# The calls take a Conn (internal/iobangerhandles/conn.go: Send and Upgrade)
	# instead of a *varlink.Connection, so the client's own transport runs them.
	sed -i 's/c \*varlink\.Connection/c Conn/g' "$out"
	! grep -q 'varlink\.Connection' "$out" ||
		{ echo "go.sh: the generated calls still name *varlink.Connection" >&2; exit 1; }
	cp -rs "$src/." "$build/mod/"
	cp "$out" "$build/mod/internal/iobangerhandles/"
	touch "$build/go-mirror.stamp"
}

if [[ $mode == generate || ! -f $build/mod/go.mod ]]; then
	generate
fi
cd "$build/mod"
case $mode in
generate) ;;
build) go build -o "$build/${2:?usage: go.sh BUILD_DIR build PKG NAME}" "${1:?}" ;;
vet)
	go vet ./...
	if (($#)); then
		want=$(printf '%s\n' "$@" | sort)
		have=$(go test -list '.*' . | grep '^Test' | sort)
		if [[ $want != "$have" ]]; then
			echo "go.sh: meson's list of Go tests is not the package's:" >&2
			diff <(echo "$want") <(echo "$have") >&2 || true
			exit 1
		fi
	fi
	;;
test)
	name=${1:?usage: go.sh BUILD_DIR test TEST}
	out=$(mktemp)
	trap 'rm -f "$out"' EXIT
	status=0
	go test -count=1 -v -run "^$name\$" . 2>&1 | tee "$out" || status=1
	grep -q -- "^--- PASS: $name " "$out" || { echo "go.sh: $name did not pass" >&2; exit 1; }
	exit $status
	;;
go) go "$@" ;;
*)
	echo "go.sh: unknown mode $mode" >&2
	exit 2
	;;
esac
