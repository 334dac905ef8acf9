module banger.local/client

go 1.19

// Built from Debian's packages only: golang-github-varlink-go-dev and
// golang-golang-x-sys-dev install these sources; nothing is fetched.
require (
	github.com/varlink/go v0.4.0
	golang.org/x/sys v0.3.0
)

replace (
	github.com/varlink/go => /usr/share/gocode/src/github.com/varlink/go
	golang.org/x/sys => /usr/share/gocode/src/golang.org/x/sys
)
