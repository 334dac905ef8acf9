// Package iobangerhandles holds the typed bindings of io.banger.Handles.
// They are not kept in git: clients/go/go.sh generates them at build time
// from proto/io.banger.Handles.varlink with Debian's
// varlink-go-interface-generator and builds from a mirror of this module
// that holds them, so the source tree never holds a stale copy.
package iobangerhandles
